ALTER TABLE events ADD COLUMN time_note text;
COMMENT ON COLUMN events.time_note IS
    'Why occurred_at is the time of receipt rather than the time the event names (a time too far ahead of the receipt, or text that is not a time); NULL when the event is ordered as it says.';
