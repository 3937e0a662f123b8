-- Keys compare byte by byte (collation "C"), as SQLite's BINARY does, whatever the database's
-- default collation is. Ids are opaque: a linguistic collation (en_US.UTF-8, the usual default
-- of a Debian cluster) gives them no better meaning, and every comparison in these indexes
-- would go through strcoll(). On an en_US.UTF-8 database that cost ingest ~18% (README,
-- "PostgreSQL and several instances"). Equality is unchanged (deterministic collations compare
-- equal only byte-equal text), so no key that was unique stops being unique; only the indexes
-- are rebuilt, not the tables.
ALTER TABLE events
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE debts
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE followups
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN debt_id TYPE text COLLATE "C";
ALTER TABLE payments
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN debt_id TYPE text COLLATE "C";
ALTER TABLE payment_plans
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN debt_id TYPE text COLLATE "C";
ALTER TABLE notices
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE invoices
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE customers
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE bills
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE vendors
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE records
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE media
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN followup_id TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C";
