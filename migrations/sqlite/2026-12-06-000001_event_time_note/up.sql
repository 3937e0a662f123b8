-- Why an event is ordered at its time of receipt rather than at the time it names (a time too
-- far ahead of the receipt, or text that is not a time); NULL when it is ordered as it says.
ALTER TABLE events ADD COLUMN time_note TEXT;
