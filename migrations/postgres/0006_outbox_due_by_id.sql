-- The outbox claim takes the oldest due message: ORDER BY next_attempt_at, id LIMIT 1.
-- next_attempt_at is in whole seconds, so a burst puts thousands of messages on one value,
-- and with (status, next_attempt_at) alone PostgreSQL read every one of them to sort by id
-- before taking the first: about 800 rows per claim in the production-load benchmark's
-- /forgot-password phase. With id in the key the index gives the full order and the claim
-- reads the row it takes (plus any it skips as locked). MySQL's and SQLite's indexes
-- already end with the primary key, so only PostgreSQL needs this.
DROP INDEX IF EXISTS outbox_due;
CREATE INDEX outbox_due ON outbox (status, next_attempt_at, id);
