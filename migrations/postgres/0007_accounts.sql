-- Accounts people manage themselves (issue 16).
--
-- A code's purpose: `reset` (the seed's recovery codes, and every code before this
-- migration), `verify_email`, `verify_phone`, `change_email`, `change_phone`. Every lookup
-- of a live code names the purpose it wants, so a code sent for one thing never does
-- another: a verification code cannot reset a password, a reset code verifies nothing.
-- `address` is the new email or phone of a change, which the code was sent to and proves.
-- (A verification code proves the address the account has when it is used: changing an
-- address kills the codes sent to the old one, so that is the address it was sent to.)
ALTER TABLE otp_codes ADD COLUMN purpose TEXT NOT NULL DEFAULT 'reset';
ALTER TABLE otp_codes ADD COLUMN address TEXT;

-- A session's public handle (what GET /sessions shows and DELETE /sessions/{id} takes:
-- never the token or its hash), and where it was opened from. Sessions from before this
-- migration get a random handle and no origin.
ALTER TABLE sessions ADD COLUMN public_id TEXT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
UPDATE sessions SET public_id = md5(random()::text || id::text) WHERE public_id IS NULL;
CREATE UNIQUE INDEX sessions_public_id ON sessions (public_id);

-- Whose message an outbox row carries, so that deleting an account also deletes what is
-- still waiting to be sent to it. NULL for rows from before, and for a goodbye notice.
ALTER TABLE outbox ADD COLUMN user_id BIGINT;
CREATE INDEX outbox_user_id ON outbox (user_id);

-- The proven addresses, beside the addresses themselves: `email_verified` is
-- `email_proof = email_norm` and `phone_verified` is `phone_proof = phone`, read with the
-- user on every session check at no cost, where a probe of proven_channels per flag cost
-- PostgreSQL 21 % of its session checks. proven_channels stays the record of each proof
-- (when, for which address); the store writes both in the same transaction. An address
-- changed by any means no longer equals its proof, so a proof never carries over.
ALTER TABLE users ADD COLUMN email_proof TEXT;
ALTER TABLE users ADD COLUMN phone_proof TEXT;
UPDATE users SET
    email_proof = (SELECT p.address FROM proven_channels p
                   WHERE p.user_id = users.id AND p.channel = 'email'),
    phone_proof = (SELECT p.address FROM proven_channels p
                   WHERE p.user_id = users.id AND p.channel = 'sms');
