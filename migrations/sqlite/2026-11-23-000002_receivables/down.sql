DROP TABLE records;
DROP TABLE vendors;
DROP TABLE bills;
DROP TABLE customers;
DROP TABLE invoices;
