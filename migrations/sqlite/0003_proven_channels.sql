-- Which of a user's addresses have been proven, and how: a password reset through a code
-- sent to the email proves the email, one sent by SMS proves the phone. The proof is bound
-- to the address it was made for (`address`: email_norm or phone as they were then), so a
-- proof never carries over to a different address. A channel that was never proven is
-- never a way into an account that another channel has proven (see src/auth/ownership).
CREATE TABLE proven_channels (
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel   TEXT    NOT NULL,
    address   TEXT    NOT NULL,
    proven_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel)
);

-- The channel a code went out on, and that its reset token inherits. NULL for codes and
-- tokens from before this migration: they prove nothing.
ALTER TABLE otp_codes ADD COLUMN channel TEXT;
ALTER TABLE reset_tokens ADD COLUMN channel TEXT;
