-- The event log and queue. `seq` is arrival order; (source, event_id) is the dedup key.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    event_type   TEXT,
    occurred_at  TEXT    NOT NULL,
    rank         INTEGER NOT NULL DEFAULT 1,
    received_at  TEXT    NOT NULL,
    tenant       TEXT,
    payload      TEXT,
    raw_body     BLOB,
    status       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    applied_at   TEXT,
    UNIQUE (source, event_id)
);
-- The projector's work list, in the order events happened.
CREATE INDEX events_queued ON events (occurred_at, rank, seq) WHERE status = 'queued';

-- Common to every domain table: (source, key), the merged provider object in `data`, the
-- per-field positions that make the projection order-independent in `versions`, and the
-- event that last wrote the row.
CREATE TABLE debts (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    company_id    TEXT,
    firstname     TEXT,
    lastname      TEXT,
    email         TEXT,
    phone         TEXT,
    amount        TEXT,
    currency      TEXT,
    status        TEXT,
    internal_id   TEXT,
    due_date      TEXT,
    invoice_date  TEXT,
    created_at    TEXT,
    metadata      TEXT,
    data          TEXT NOT NULL,
    versions      TEXT NOT NULL,
    last_event_id TEXT,
    last_event_at TEXT,
    deleted_at    TEXT,
    synced_at     TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE followups (
    source               TEXT NOT NULL,
    id                   TEXT NOT NULL,
    debt_id              TEXT,
    type                 TEXT,
    status               TEXT,
    summary              TEXT,
    failure_reason       TEXT,
    call_date            TEXT,
    scheduled_at         TEXT,
    processed_at         TEXT,
    duration_ms          INTEGER,
    call_provider        TEXT,
    audio_url            TEXT,
    pdf_url              TEXT,
    media_urls_expire_at TEXT,
    audio_path           TEXT,
    pdf_path             TEXT,
    data                 TEXT NOT NULL,
    versions             TEXT NOT NULL,
    last_event_id        TEXT,
    last_event_at        TEXT,
    deleted_at           TEXT,
    synced_at            TEXT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX followups_debt ON followups (source, debt_id);

CREATE TABLE payments (
    source         TEXT NOT NULL,
    id             TEXT NOT NULL,
    debt_id        TEXT,
    invoice_id     TEXT,
    customer_id    TEXT,
    amount         TEXT,
    currency       TEXT,
    payment_date   TEXT,
    status         TEXT,
    paid_at        TEXT,
    failure_reason TEXT,
    method         TEXT,
    reference      TEXT,
    plan           INTEGER NOT NULL DEFAULT 0,
    data           TEXT NOT NULL,
    versions       TEXT NOT NULL,
    last_event_id  TEXT,
    last_event_at  TEXT,
    deleted_at     TEXT,
    synced_at      TEXT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX payments_debt ON payments (source, debt_id);

CREATE TABLE payment_plans (
    source               TEXT NOT NULL,
    debt_id              TEXT NOT NULL,
    plan_months          INTEGER,
    plan_start_date      TEXT,
    first_payment_amount TEXT,
    status               TEXT,
    completed_at         TEXT,
    data                 TEXT NOT NULL,
    versions             TEXT NOT NULL,
    last_event_id        TEXT,
    last_event_at        TEXT,
    deleted_at           TEXT,
    synced_at            TEXT NOT NULL,
    PRIMARY KEY (source, debt_id)
);

CREATE TABLE notices (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    type          TEXT NOT NULL,
    company_id    TEXT,
    occurred_at   TEXT NOT NULL,
    data          TEXT NOT NULL,
    last_event_id TEXT,
    last_event_at TEXT,
    deleted_at    TEXT,
    synced_at     TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

-- Written by /readyz to prove the database takes writes.
CREATE TABLE hooksync_health (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL
);
