DROP TABLE hooksync_health;
DROP TABLE notices;
DROP TABLE payment_plans;
DROP TABLE payments;
DROP TABLE followups;
DROP TABLE debts;
DROP TABLE events;
