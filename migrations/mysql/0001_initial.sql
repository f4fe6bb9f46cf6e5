-- Gatehouse schema, MySQL 8 / MariaDB 10.6+. Times are Unix seconds (BIGINT) in every
-- backend so the Rust side compares them the same way everywhere.
--
-- InnoDB for transactions, row locks and foreign keys; ROW_FORMAT=DYNAMIC spelled out so
-- that the 3072-byte index key limit holds even where the server default differs (the
-- largest key here, email_norm, is 254 characters * 4 bytes = 1016 bytes).
--
-- Tables use the server's default utf8mb4 collation for display text. Every column that a
-- unique index or an equality lookup relies on (the *_norm columns, phone, the hashes) is
-- utf8mb4_bin instead: uniqueness is already decided in Rust by NFKC + lower case, and a
-- case- or accent-insensitive collation would add its own folding on top ('é' = 'e').
-- utf8mb4_bin is a PAD SPACE collation (trailing spaces do not count), and MySQL and
-- MariaDB share no NO PAD binary one; that is harmless because none of these values can
-- end in a space (the domain types trim and refuse whitespace; hashes are hex or PHC).
--
-- Foreign keys are table-level clauses: MySQL 8.0 parses and silently ignores inline
-- column REFERENCES. The user_id indexes are declared in the table so that InnoDB uses
-- them for the foreign key instead of adding an index of its own.

-- Uniqueness is decided on the *_norm columns (NFKC + lower case) by unique indexes, so
-- concurrent registrations of one name cannot both succeed. The display columns keep what
-- the user typed. phone is already canonical (+digits); NULLs do not collide.
-- Lengths are characters: usernames are at most 50, emails at most 254 bytes (so at most
-- 254 characters, and lower-casing cannot make the key longer than the address has
-- bytes), phones '+' and at most 15 digits.
CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT,
    username      VARCHAR(50)  NOT NULL,
    username_norm VARCHAR(50)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    email         VARCHAR(254) NOT NULL,
    email_norm    VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    phone         VARCHAR(16)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    password_hash TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at    BIGINT       NOT NULL,
    updated_at    BIGINT       NOT NULL,
    disabled_at   BIGINT,
    PRIMARY KEY (id),
    UNIQUE KEY users_username_norm (username_norm),
    UNIQUE KEY users_email_norm (email_norm),
    UNIQUE KEY users_phone (phone)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- Sessions are server-side so they can be revoked (logout, password reset); only the
-- SHA-256 of the bearer token is stored, so a database leak yields no usable session.
CREATE TABLE sessions (
    id           BIGINT       NOT NULL AUTO_INCREMENT,
    token_hash   VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    user_id      BIGINT       NOT NULL,
    created_at   BIGINT       NOT NULL,
    last_seen_at BIGINT       NOT NULL,
    expires_at   BIGINT       NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY sessions_token_hash (token_hash),
    KEY sessions_user_id (user_id),
    KEY sessions_expires_at (expires_at),
    CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- One-time codes, stored as HMAC-SHA256 under the server secret. attempts is raised by a
-- conditional UPDATE before a guess is compared, so parallel guesses cannot exceed the cap.
-- attempts is INT because the Rust side reads it as i32.
CREATE TABLE otp_codes (
    id         BIGINT NOT NULL AUTO_INCREMENT,
    user_id    BIGINT NOT NULL,
    code_hash  TEXT   CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    attempts   INT    NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (id),
    KEY otp_codes_user_id (user_id, id),
    KEY otp_codes_expires_at (expires_at),
    CONSTRAINT otp_codes_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- Reset tokens: what /validate-otp hands out and /reset-password consumes, once.
CREATE TABLE reset_tokens (
    id         BIGINT       NOT NULL AUTO_INCREMENT,
    user_id    BIGINT       NOT NULL,
    token_hash VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at BIGINT       NOT NULL,
    expires_at BIGINT       NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (id),
    UNIQUE KEY reset_tokens_token_hash (token_hash),
    KEY reset_tokens_user_id (user_id),
    KEY reset_tokens_expires_at (expires_at),
    CONSTRAINT reset_tokens_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- The outbox: messages written in the same transaction as the code they carry, delivered
-- by a background worker. The payload is encrypted under the server secret (it holds a
-- code) and blanked once sent. locked_until is the claim lease of the worker sending it.
-- payload and last_error are MEDIUMTEXT so that a long message or a verbose provider
-- error cannot hit TEXT's 64 KiB limit (an error in strict mode, a cut elsewhere).
CREATE TABLE outbox (
    id              BIGINT      NOT NULL AUTO_INCREMENT,
    channel         VARCHAR(32) NOT NULL,
    payload         MEDIUMTEXT  NOT NULL,
    status          VARCHAR(16) NOT NULL DEFAULT 'pending',
    attempts        INT         NOT NULL DEFAULT 0,
    next_attempt_at BIGINT      NOT NULL,
    locked_until    BIGINT      NOT NULL DEFAULT 0,
    last_error      MEDIUMTEXT,
    created_at      BIGINT      NOT NULL,
    sent_at         BIGINT,
    PRIMARY KEY (id),
    KEY outbox_due (status, next_attempt_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- The server secret, when SECRET_KEY is not configured: generated by the first instance
-- and shared by all that use this database. One row at most (the CHECK is enforced by
-- MariaDB 10.2+ and MySQL 8.0.16+).
CREATE TABLE server_secret (
    id     INT  NOT NULL,
    secret TEXT NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT server_secret_single_row CHECK (id = 1)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;
