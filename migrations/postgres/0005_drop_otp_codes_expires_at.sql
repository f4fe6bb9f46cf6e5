-- No statement reads otp_codes by expiry alone: the purge's `expires_at <= ? OR used_at IS
-- NOT NULL` cannot use this index, and the lookup of a user's live code goes through
-- otp_codes_user_id (user_id, id). On PostgreSQL it did harm: while the table's
-- statistics were stale (a burst of new codes before autovacuum analysed it) the planner
-- combined the two indexes in a BitmapAnd that read every live code's entry to find one
-- user's: 10,600 rows read per wrong guess in the production-load benchmark (10,000 live
-- codes), 7 without this index.
DROP INDEX IF EXISTS otp_codes_expires_at;
