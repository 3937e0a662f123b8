DROP TABLE hooksync_health, media, records, vendors, bills, customers, invoices, notices,
    payment_plans, payments, followups, debts, events;
