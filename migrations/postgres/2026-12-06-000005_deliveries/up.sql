-- Forwarding to the CRM: the headers a passthrough destination needs beside the raw body, one
-- row per delivery of an event (or of a row) to a destination, the attempts of each, and the
-- destinations' paused state.
ALTER TABLE events ADD COLUMN headers text;
COMMENT ON COLUMN events.raw_body IS 'The exact bytes received, kept when they could not be read as an event (status invalid) and for an endpoint a passthrough destination takes.';
COMMENT ON COLUMN events.headers IS 'For an endpoint a passthrough destination takes: the content type and signature headers as received (JSON object); NULL otherwise.';

CREATE TABLE hooksync_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination      text        COLLATE "C" NOT NULL,
    source           text        COLLATE "C" NOT NULL,
    event_id         text        COLLATE "C" NOT NULL,
    event_seq        bigint      NOT NULL,
    event_type       text,
    object           text        COLLATE "C" NOT NULL,
    row_ref          text,
    status           text        NOT NULL,
    attempts         bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    last_status      bigint,
    last_error       text,
    claimed_by       text,
    claimed_until    timestamptz,
    UNIQUE (destination, source, event_id, object)
);
CREATE INDEX hooksync_deliveries_due ON hooksync_deliveries (destination, id)
    WHERE status IN ('pending', 'failed');
CREATE INDEX hooksync_deliveries_object ON hooksync_deliveries (destination, object, id)
    WHERE status IN ('pending', 'failed');
CREATE INDEX hooksync_deliveries_created ON hooksync_deliveries (destination, created_at);
COMMENT ON TABLE hooksync_deliveries IS 'One delivery of an event (or, for a rows destination, of a row it changed) to a [[forward]] destination.';
COMMENT ON COLUMN hooksync_deliveries.id IS 'Creation order: the order the projector finished the events; per object, the delivery order.';
COMMENT ON COLUMN hooksync_deliveries.destination IS 'The destination''s name in [[forward]].';
COMMENT ON COLUMN hooksync_deliveries.source IS 'The event''s source (events.source).';
COMMENT ON COLUMN hooksync_deliveries.event_id IS 'The event''s id (events.event_id).';
COMMENT ON COLUMN hooksync_deliveries.event_seq IS 'The event''s events.seq.';
COMMENT ON COLUMN hooksync_deliveries.event_type IS 'The event''s type.';
COMMENT ON COLUMN hooksync_deliveries.object IS 'The object the delivery is about (table and key): one delivery per object is in flight, in id order.';
COMMENT ON COLUMN hooksync_deliveries.row_ref IS 'For a rows destination, the row delivered (table and key as JSON); NULL otherwise.';
COMMENT ON COLUMN hooksync_deliveries.status IS 'pending (not tried yet), failed (tried, to be tried again at next_attempt_at), delivered (the destination answered 2xx) or dead (given up after give_up_after).';
COMMENT ON COLUMN hooksync_deliveries.attempts IS 'Requests made so far.';
COMMENT ON COLUMN hooksync_deliveries.created_at IS 'When the projector finished the event.';
COMMENT ON COLUMN hooksync_deliveries.next_attempt_at IS 'When it may be tried (again).';
COMMENT ON COLUMN hooksync_deliveries.first_attempt_at IS 'When it was first tried; give_up_after counts from here.';
COMMENT ON COLUMN hooksync_deliveries.last_attempt_at IS 'When it was last tried.';
COMMENT ON COLUMN hooksync_deliveries.delivered_at IS 'When the destination answered 2xx.';
COMMENT ON COLUMN hooksync_deliveries.last_status IS 'The HTTP status of the last answer; NULL with no answer.';
COMMENT ON COLUMN hooksync_deliveries.last_error IS 'Why the last attempt failed.';
COMMENT ON COLUMN hooksync_deliveries.claimed_by IS 'The hooksync process sending it now (hooksync_runs.id).';
COMMENT ON COLUMN hooksync_deliveries.claimed_until IS 'Until when that claim holds: past it, another process may send it.';

CREATE TABLE hooksync_delivery_attempts (
    delivery_id bigint      NOT NULL REFERENCES hooksync_deliveries (id) ON DELETE CASCADE,
    attempt     bigint      NOT NULL,
    at          timestamptz NOT NULL,
    duration_ms bigint      NOT NULL,
    http_status bigint,
    error       text,
    response    text,
    PRIMARY KEY (delivery_id, attempt)
);
COMMENT ON TABLE hooksync_delivery_attempts IS 'Each request made for a delivery, and how it went.';
COMMENT ON COLUMN hooksync_delivery_attempts.delivery_id IS 'The delivery (hooksync_deliveries.id).';
COMMENT ON COLUMN hooksync_delivery_attempts.attempt IS '1 for the first request, and so on.';
COMMENT ON COLUMN hooksync_delivery_attempts.at IS 'When the request was made.';
COMMENT ON COLUMN hooksync_delivery_attempts.duration_ms IS 'From the request to the end of the answer (or the error).';
COMMENT ON COLUMN hooksync_delivery_attempts.http_status IS 'The answer''s HTTP status; NULL with no answer.';
COMMENT ON COLUMN hooksync_delivery_attempts.error IS 'What went wrong: a refused connection, a timeout, a status that is not 2xx.';
COMMENT ON COLUMN hooksync_delivery_attempts.response IS 'The first 1 KiB of the answer''s body (of at most 64 KiB read), as text.';

CREATE TABLE hooksync_destinations (
    name       text COLLATE "C" PRIMARY KEY,
    paused_at  timestamptz,
    paused_why text
);
COMMENT ON TABLE hooksync_destinations IS 'A destination''s state that outlives a restart: paused after a 410 until hooksync forward resume.';
COMMENT ON COLUMN hooksync_destinations.name IS 'The destination''s name in [[forward]].';
COMMENT ON COLUMN hooksync_destinations.paused_at IS 'When it was paused; NULL while it is delivering.';
COMMENT ON COLUMN hooksync_destinations.paused_why IS 'Why it was paused.';
