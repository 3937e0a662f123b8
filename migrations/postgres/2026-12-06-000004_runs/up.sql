-- When each hooksync process served: `hooksync status` reports the gaps between them.
CREATE TABLE hooksync_runs (
    id         text        COLLATE "C" PRIMARY KEY,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    stopped_at timestamptz
);
CREATE INDEX hooksync_runs_started ON hooksync_runs (started_at);
COMMENT ON TABLE hooksync_runs IS 'Internal: one row per hooksync process, to report when none was serving.';
COMMENT ON COLUMN hooksync_runs.id IS 'A random id the process chose at start.';
COMMENT ON COLUMN hooksync_runs.started_at IS 'When the process started serving.';
COMMENT ON COLUMN hooksync_runs.seen_at IS 'The last time the process said it was alive (every 5 s); after a kill -9 or a power cut, when it stopped.';
COMMENT ON COLUMN hooksync_runs.stopped_at IS 'When it stopped cleanly; empty while it serves or when it was killed.';
