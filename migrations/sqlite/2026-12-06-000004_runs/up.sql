-- When each hooksync process served: `hooksync status` reports the gaps between them.
CREATE TABLE hooksync_runs (
    id         TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    seen_at    TEXT NOT NULL,
    stopped_at TEXT
);
CREATE INDEX hooksync_runs_started ON hooksync_runs (started_at);
