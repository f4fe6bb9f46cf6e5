-- Second factors (issue 17): TOTP with recovery codes, passkeys, step-up, sign-in by code.
--
-- What a login and a session check need to know about a user's factors, kept on the user
-- row (written in the transaction that adds or removes a factor), so neither pays a probe:
-- whether TOTP is on, how many passkeys, how many recovery codes are left.
ALTER TABLE users ADD COLUMN totp_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN passkey_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN recovery_codes_left INTEGER NOT NULL DEFAULT 0;

-- A session's assurance level (1: a password or a code; 2: with a second factor, or a
-- passkey that verified its user) and when its user last proved themselves (the login, or
-- POST /reauthenticate). Sessions from before were opened by a password when created.
ALTER TABLE sessions ADD COLUMN aal INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN proved_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET proved_at = created_at;

-- A user's TOTP secret, sealed under the server secret. `confirmed_at` is NULL while the
-- enrolment waits for its first code; `last_step` is the newest time step accepted, raised
-- by a conditional UPDATE, so a step is accepted at most once, on every instance.
CREATE TABLE totp_secrets (
    user_id      INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret       TEXT    NOT NULL,
    confirmed_at INTEGER,
    last_step    INTEGER  NOT NULL DEFAULT 0,
    created_at   INTEGER  NOT NULL
);

-- Recovery codes, as HMAC-SHA256 under the server secret; each used once (a conditional
-- UPDATE of used_at).
CREATE TABLE recovery_codes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT   NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE UNIQUE INDEX recovery_codes_user_hash ON recovery_codes (user_id, code_hash);

-- Passkeys (WebAuthn credentials). `credential_key` is the SHA-256 of the credential id
-- (unique: one credential, one account); `credential` is webauthn-rs' record of it, which
-- holds a public key and a signature counter, nothing secret.
CREATE TABLE passkeys (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id      TEXT   NOT NULL,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_key TEXT   NOT NULL,
    credential     TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER
);
CREATE UNIQUE INDEX passkeys_public_id ON passkeys (public_id);
CREATE UNIQUE INDEX passkeys_credential_key ON passkeys (credential_key);
CREATE INDEX passkeys_user_id ON passkeys (user_id);

-- Short-lived, single-use server-side state: the `mfa_token` between a password and its
-- second factor, and the state of a WebAuthn ceremony between its two halves (which may
-- reach different instances). Looked up by the SHA-256 of the handle the client holds;
-- `binding` ties an mfa_token to the proof that earned it; `attempts` is raised by a
-- conditional UPDATE before a guess is compared.
CREATE TABLE challenges (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    user_id    INTEGER  REFERENCES users (id) ON DELETE CASCADE,
    binding    TEXT,
    state      TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER  NOT NULL,
    expires_at INTEGER  NOT NULL
);
CREATE UNIQUE INDEX challenges_token_hash ON challenges (token_hash);
CREATE INDEX challenges_expires_at ON challenges (expires_at);
CREATE INDEX challenges_user_id ON challenges (user_id);
