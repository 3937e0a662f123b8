-- Receivables and payables (BigLedger, BILL), and `records` for any other object kind.
CREATE TABLE invoices (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    number        TEXT,
    customer_id   TEXT,
    customer_name TEXT,
    status        TEXT,
    currency      TEXT,
    total         TEXT,
    amount_due    TEXT,
    amount_paid   TEXT,
    invoice_date  TEXT,
    due_date      TEXT,
    paid_at       TEXT,
    archived      INTEGER,
    data          TEXT NOT NULL,
    versions      TEXT NOT NULL,
    last_event_id TEXT,
    last_event_at TEXT,
    deleted_at    TEXT,
    synced_at     TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE customers (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT,
    email         TEXT,
    phone         TEXT,
    status        TEXT,
    currency      TEXT,
    archived      INTEGER,
    data          TEXT NOT NULL,
    versions      TEXT NOT NULL,
    last_event_id TEXT,
    last_event_at TEXT,
    deleted_at    TEXT,
    synced_at     TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE bills (
    source         TEXT NOT NULL,
    id             TEXT NOT NULL,
    vendor_id      TEXT,
    invoice_number TEXT,
    invoice_date   TEXT,
    due_date       TEXT,
    amount         TEXT,
    payment_status TEXT,
    archived       INTEGER,
    data           TEXT NOT NULL,
    versions       TEXT NOT NULL,
    last_event_id  TEXT,
    last_event_at  TEXT,
    deleted_at     TEXT,
    synced_at      TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE vendors (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT,
    email         TEXT,
    phone         TEXT,
    archived      INTEGER,
    data          TEXT NOT NULL,
    versions      TEXT NOT NULL,
    last_event_id TEXT,
    last_event_at TEXT,
    deleted_at    TEXT,
    synced_at     TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE records (
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    id            TEXT NOT NULL,
    data          TEXT NOT NULL,
    versions      TEXT NOT NULL,
    last_event_id TEXT,
    last_event_at TEXT,
    deleted_at    TEXT,
    synced_at     TEXT NOT NULL,
    PRIMARY KEY (source, kind, id)
);
