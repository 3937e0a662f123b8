-- The same tables, names and meanings as migrations/sqlite, in PostgreSQL's own types: money is
-- NUMERIC, instants are timestamptz, provider objects are jsonb (other applications can query
-- into them), flags are boolean.

-- The event log and queue. `seq` is arrival order; (source, event_id) is the dedup key.
CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text        NOT NULL,
    provider     text        NOT NULL,
    event_id     text        NOT NULL,
    event_type   text,
    occurred_at  timestamptz NOT NULL,
    rank         bigint      NOT NULL DEFAULT 1,
    received_at  timestamptz NOT NULL,
    tenant       text,
    payload      jsonb,
    raw_body     bytea,
    status       text        NOT NULL,
    attempts     bigint      NOT NULL DEFAULT 0,
    last_error   text,
    applied_at   timestamptz,
    UNIQUE (source, event_id)
);
-- The projectors' work list, in the order events happened.
CREATE INDEX events_queued ON events (occurred_at, rank, seq) WHERE status = 'queued';

-- Common to every domain table: (source, key), the merged provider object in `data`, the
-- per-field positions that make the projection order-independent in `versions`, and the
-- event that last wrote the row.
CREATE TABLE debts (
    source        text NOT NULL,
    id            text NOT NULL,
    company_id    text,
    firstname     text,
    lastname      text,
    email         text,
    phone         text,
    amount        numeric,
    currency      text,
    status        text,
    internal_id   text,
    due_date      text,
    invoice_date  text,
    created_at    timestamptz,
    metadata      jsonb,
    data          jsonb NOT NULL,
    versions      jsonb NOT NULL,
    last_event_id text,
    last_event_at timestamptz,
    deleted_at    timestamptz,
    synced_at     timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE followups (
    source               text NOT NULL,
    id                   text NOT NULL,
    debt_id              text,
    type                 text,
    status               text,
    summary              text,
    failure_reason       text,
    call_date            timestamptz,
    scheduled_at         timestamptz,
    processed_at         timestamptz,
    duration_ms          bigint,
    call_provider        text,
    audio_url            text,
    pdf_url              text,
    media_urls_expire_at timestamptz,
    audio_path           text,
    pdf_path             text,
    data                 jsonb NOT NULL,
    versions             jsonb NOT NULL,
    last_event_id        text,
    last_event_at        timestamptz,
    deleted_at           timestamptz,
    synced_at            timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX followups_debt ON followups (source, debt_id);

CREATE TABLE payments (
    source         text NOT NULL,
    id             text NOT NULL,
    debt_id        text,
    invoice_id     text,
    customer_id    text,
    amount         numeric,
    currency       text,
    payment_date   text,
    status         text,
    paid_at        timestamptz,
    failure_reason text,
    method         text,
    reference      text,
    plan           boolean NOT NULL DEFAULT false,
    data           jsonb NOT NULL,
    versions       jsonb NOT NULL,
    last_event_id  text,
    last_event_at  timestamptz,
    deleted_at     timestamptz,
    synced_at      timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX payments_debt ON payments (source, debt_id);

CREATE TABLE payment_plans (
    source               text NOT NULL,
    debt_id              text NOT NULL,
    plan_months          bigint,
    plan_start_date      text,
    first_payment_amount numeric,
    status               text,
    completed_at         timestamptz,
    data                 jsonb NOT NULL,
    versions             jsonb NOT NULL,
    last_event_id        text,
    last_event_at        timestamptz,
    deleted_at           timestamptz,
    synced_at            timestamptz NOT NULL,
    PRIMARY KEY (source, debt_id)
);

CREATE TABLE notices (
    source        text        NOT NULL,
    id            text        NOT NULL,
    type          text        NOT NULL,
    company_id    text,
    occurred_at   timestamptz NOT NULL,
    data          jsonb       NOT NULL,
    last_event_id text,
    last_event_at timestamptz,
    deleted_at    timestamptz,
    synced_at     timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);

-- Receivables and payables (BigLedger, BILL), and `records` for any other object kind.
CREATE TABLE invoices (
    source        text NOT NULL,
    id            text NOT NULL,
    number        text,
    customer_id   text,
    customer_name text,
    status        text,
    currency      text,
    total         numeric,
    amount_due    numeric,
    amount_paid   numeric,
    invoice_date  text,
    due_date      text,
    paid_at       timestamptz,
    archived      boolean,
    data          jsonb NOT NULL,
    versions      jsonb NOT NULL,
    last_event_id text,
    last_event_at timestamptz,
    deleted_at    timestamptz,
    synced_at     timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE customers (
    source        text NOT NULL,
    id            text NOT NULL,
    name          text,
    email         text,
    phone         text,
    status        text,
    currency      text,
    archived      boolean,
    data          jsonb NOT NULL,
    versions      jsonb NOT NULL,
    last_event_id text,
    last_event_at timestamptz,
    deleted_at    timestamptz,
    synced_at     timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE bills (
    source         text NOT NULL,
    id             text NOT NULL,
    vendor_id      text,
    invoice_number text,
    invoice_date   timestamptz,
    due_date       text,
    amount         numeric,
    payment_status text,
    archived       boolean,
    data           jsonb NOT NULL,
    versions       jsonb NOT NULL,
    last_event_id  text,
    last_event_at  timestamptz,
    deleted_at     timestamptz,
    synced_at      timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE vendors (
    source        text NOT NULL,
    id            text NOT NULL,
    name          text,
    email         text,
    phone         text,
    archived      boolean,
    data          jsonb NOT NULL,
    versions      jsonb NOT NULL,
    last_event_id text,
    last_event_at timestamptz,
    deleted_at    timestamptz,
    synced_at     timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE records (
    source        text NOT NULL,
    kind          text NOT NULL,
    id            text NOT NULL,
    data          jsonb NOT NULL,
    versions      jsonb NOT NULL,
    last_event_id text,
    last_event_at timestamptz,
    deleted_at    timestamptz,
    synced_at     timestamptz NOT NULL,
    PRIMARY KEY (source, kind, id)
);

-- One row per media URL seen: the recording or letter of a followup, and how fetching it went.
-- The URL itself is never stored here (its query string is a credential): the fetcher reads
-- it from `followups`; `url_digest` tells whether it changed.
CREATE TABLE media (
    source          text        NOT NULL,
    followup_id     text        NOT NULL,
    kind            text        NOT NULL,
    url_host        text,
    url_path        text,
    url_digest      text        NOT NULL,
    expires_at      timestamptz,
    status          text        NOT NULL,
    path            text,
    sha256          text,
    bytes           bigint,
    content_type    text,
    attempts        bigint      NOT NULL DEFAULT 0,
    last_error      text,
    fetched_at      timestamptz,
    next_attempt_at timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (source, followup_id, kind)
);
CREATE INDEX media_due ON media (next_attempt_at) WHERE status = 'pending';

-- Written by /readyz to prove the database takes writes.
CREATE TABLE hooksync_health (
    id bigint PRIMARY KEY,
    at timestamptz NOT NULL
);
