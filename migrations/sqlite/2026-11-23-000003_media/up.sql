-- One row per media URL seen: the recording or letter of a followup, and how fetching it went.
-- The URL itself is never stored here (its query string is a credential): the fetcher reads
-- it from `followups`; `url_digest` tells whether it changed.
CREATE TABLE media (
    source          TEXT    NOT NULL,
    followup_id     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    url_host        TEXT,
    url_path        TEXT,
    url_digest      TEXT    NOT NULL,
    expires_at      TEXT,
    status          TEXT    NOT NULL,
    path            TEXT,
    sha256          TEXT,
    bytes           INTEGER,
    content_type    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    fetched_at      TEXT,
    next_attempt_at TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (source, followup_id, kind)
);
CREATE INDEX media_due ON media (next_attempt_at) WHERE status = 'pending';
