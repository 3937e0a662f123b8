-- Forwarding to the CRM: the headers a passthrough destination needs beside the raw body, one
-- row per delivery of an event (or of a row) to a destination, the attempts of each, and the
-- destinations' paused state.
ALTER TABLE events ADD COLUMN headers TEXT;

CREATE TABLE hooksync_deliveries (
    id               INTEGER PRIMARY KEY,
    destination      TEXT    NOT NULL,
    source           TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    event_seq        INTEGER NOT NULL,
    event_type       TEXT,
    object           TEXT    NOT NULL,
    row_ref          TEXT,
    status           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT    NOT NULL,
    next_attempt_at  TEXT    NOT NULL,
    first_attempt_at TEXT,
    last_attempt_at  TEXT,
    delivered_at     TEXT,
    last_status      INTEGER,
    last_error       TEXT,
    claimed_by       TEXT,
    claimed_until    TEXT,
    UNIQUE (destination, source, event_id, object)
);
CREATE INDEX hooksync_deliveries_due ON hooksync_deliveries (destination, id)
    WHERE status IN ('pending', 'failed');
CREATE INDEX hooksync_deliveries_object ON hooksync_deliveries (destination, object, id)
    WHERE status IN ('pending', 'failed');
CREATE INDEX hooksync_deliveries_created ON hooksync_deliveries (destination, created_at);

CREATE TABLE hooksync_delivery_attempts (
    delivery_id INTEGER NOT NULL REFERENCES hooksync_deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL,
    http_status INTEGER,
    error       TEXT,
    response    TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE hooksync_destinations (
    name        TEXT PRIMARY KEY,
    paused_at   TEXT,
    paused_why  TEXT
);
