-- Which of a user's addresses have been proven, and how: a password reset through a code
-- sent to the email proves the email, one sent by SMS proves the phone. The proof is bound
-- to the address it was made for (`address`: email_norm or phone as they were then, so
-- utf8mb4_bin like those columns), so a proof never carries over to a different address.
-- A channel that was never proven is never a way into an account that another channel has
-- proven (see src/auth/ownership).
CREATE TABLE proven_channels (
    user_id   BIGINT       NOT NULL,
    channel   VARCHAR(8)   NOT NULL,
    address   VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    proven_at BIGINT       NOT NULL,
    PRIMARY KEY (user_id, channel),
    CONSTRAINT proven_channels_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- The channel a code went out on, and that its reset token inherits. NULL for codes and
-- tokens from before this migration: they prove nothing.
ALTER TABLE otp_codes ADD COLUMN channel VARCHAR(8);
ALTER TABLE reset_tokens ADD COLUMN channel VARCHAR(8);
