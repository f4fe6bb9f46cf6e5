-- No statement reads otp_codes by expiry alone: the purge's `expires_at <= ? OR used_at IS
-- NOT NULL` cannot use this index, and the lookup of a user's live code goes through
-- otp_codes_user_id (user_id, id). On PostgreSQL it misled the planner into reading every
-- live code's entry per lookup while statistics were stale; it is dropped on every
-- backend so that the schemas stay alike.
ALTER TABLE otp_codes DROP INDEX otp_codes_expires_at;
