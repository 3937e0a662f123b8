-- Back to the database's default collation.
ALTER TABLE events
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN event_id TYPE text COLLATE "default";
ALTER TABLE debts
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE followups
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default",
    ALTER COLUMN debt_id TYPE text COLLATE "default";
ALTER TABLE payments
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default",
    ALTER COLUMN debt_id TYPE text COLLATE "default";
ALTER TABLE payment_plans
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN debt_id TYPE text COLLATE "default";
ALTER TABLE notices
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE invoices
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE customers
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE bills
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE vendors
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE records
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN kind TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE media
    ALTER COLUMN source TYPE text COLLATE "default",
    ALTER COLUMN followup_id TYPE text COLLATE "default",
    ALTER COLUMN kind TYPE text COLLATE "default";
