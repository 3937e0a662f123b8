ALTER TABLE events ADD COLUMN time_note text;
