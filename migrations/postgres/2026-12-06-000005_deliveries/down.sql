DROP TABLE hooksync_destinations;
DROP TABLE hooksync_delivery_attempts;
DROP TABLE hooksync_deliveries;
ALTER TABLE events DROP COLUMN headers;
