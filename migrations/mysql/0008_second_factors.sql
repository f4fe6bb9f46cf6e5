-- Second factors (issue 17): TOTP with recovery codes, passkeys, step-up, sign-in by code.
--
-- What a login and a session check need to know about a user's factors, kept on the user
-- row (written in the transaction that adds or removes a factor), so neither pays a probe:
-- whether TOTP is on, how many passkeys, how many recovery codes are left.
ALTER TABLE users ADD COLUMN totp_enabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN passkey_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN recovery_codes_left INTEGER NOT NULL DEFAULT 0;

-- A session's assurance level (1: a password or a code; 2: with a second factor, or a
-- passkey that verified its user) and when its user last proved themselves (the login, or
-- POST /reauthenticate). Sessions from before were opened by a password when created.
ALTER TABLE sessions ADD COLUMN aal INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN proved_at BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET proved_at = created_at;

-- A user's TOTP secret, sealed under the server secret. `confirmed_at` is NULL while the
-- enrolment waits for its first code; `last_step` is the newest time step accepted, raised
-- by a conditional UPDATE, so a step is accepted at most once, on every instance.
CREATE TABLE totp_secrets (
    user_id      BIGINT NOT NULL,
    secret       TEXT   CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    confirmed_at BIGINT,
    last_step    BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id),
    CONSTRAINT totp_secrets_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- Recovery codes, as HMAC-SHA256 under the server secret; each used once (a conditional
-- UPDATE of used_at).
CREATE TABLE recovery_codes (
    id         BIGINT      NOT NULL AUTO_INCREMENT,
    user_id    BIGINT      NOT NULL,
    code_hash  VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at BIGINT      NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (id),
    UNIQUE KEY recovery_codes_user_hash (user_id, code_hash),
    CONSTRAINT recovery_codes_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- Passkeys (WebAuthn credentials). `credential_key` is the SHA-256 of the credential id
-- (unique: one credential, one account); `credential` is webauthn-rs' record of it, which
-- holds a public key and a signature counter, nothing secret.
CREATE TABLE passkeys (
    id             BIGINT       NOT NULL AUTO_INCREMENT,
    public_id      VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    user_id        BIGINT       NOT NULL,
    credential_key VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    credential     TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    name           VARCHAR(256) NOT NULL,
    created_at     BIGINT       NOT NULL,
    last_used_at   BIGINT,
    PRIMARY KEY (id),
    UNIQUE KEY passkeys_public_id (public_id),
    UNIQUE KEY passkeys_credential_key (credential_key),
    KEY passkeys_user_id (user_id),
    CONSTRAINT passkeys_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;

-- Short-lived, single-use server-side state: the `mfa_token` between a password and its
-- second factor, and the state of a WebAuthn ceremony between its two halves (which may
-- reach different instances). Looked up by the SHA-256 of the handle the client holds;
-- `binding` ties an mfa_token to the proof that earned it; `attempts` is raised by a
-- conditional UPDATE before a guess is compared.
CREATE TABLE challenges (
    id         BIGINT      NOT NULL AUTO_INCREMENT,
    token_hash VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    kind       VARCHAR(32) NOT NULL,
    user_id    BIGINT,
    binding    VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    state      MEDIUMTEXT  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    attempts   INT         NOT NULL DEFAULT 0,
    created_at BIGINT      NOT NULL,
    expires_at BIGINT      NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY challenges_token_hash (token_hash),
    KEY challenges_expires_at (expires_at),
    KEY challenges_user_id (user_id),
    CONSTRAINT challenges_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;
