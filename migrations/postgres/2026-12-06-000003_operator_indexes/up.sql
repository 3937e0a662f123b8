-- What `hooksync status`, `events` and `retry` read, and what a CRM polls by. Text columns
-- compare byte by byte (collation "C"), as every other index here does.
CREATE INDEX events_by_source ON events (source, status COLLATE "C", received_at);
CREATE INDEX debts_synced ON debts (synced_at);
CREATE INDEX followups_synced ON followups (synced_at);
CREATE INDEX payments_synced ON payments (synced_at);
CREATE INDEX payment_plans_synced ON payment_plans (synced_at);
CREATE INDEX notices_synced ON notices (synced_at);
CREATE INDEX invoices_synced ON invoices (synced_at);
CREATE INDEX customers_synced ON customers (synced_at);
CREATE INDEX bills_synced ON bills (synced_at);
CREATE INDEX vendors_synced ON vendors (synced_at);
CREATE INDEX records_synced ON records (synced_at);
CREATE INDEX debts_status ON debts (source, status COLLATE "C");
CREATE INDEX debts_company ON debts (source, company_id COLLATE "C");
CREATE INDEX invoices_customer ON invoices (source, customer_id COLLATE "C");
CREATE INDEX payments_customer ON payments (source, customer_id COLLATE "C");
