//! The `Store` trait: everything Gatehouse persists, behind one interface with an
//! implementation per database. Rules that must hold under concurrency (unique names,
//! attempt limits, single use) are enforced by the database itself — unique indexes and
//! conditional updates — never by check-then-act in Rust.
//!
//! Times are Unix seconds (`i64`) everywhere, so every backend stores and compares them
//! the same way.

mod hot;
pub mod mysql;
pub mod postgres;
mod sql;
pub mod sqlite;
mod sqlite_inline;

pub use sql::{Dialect, FactorStore, SqlStore};

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Email, Identifier, Phone, Username};

pub type UserId = i64;
pub type StoreResult<T> = Result<T, StoreError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write (the user already exists).
    #[error("unique constraint violated")]
    Conflict,
    /// The database cannot be reached or did not answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else the database reported.
    #[error("database error: {0}")]
    Database(#[source] BoxError),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported DATABASE_URL: {0}")]
    Config(String),
    /// A database file is missing its private mode, or could not be created with it.
    #[error(transparent)]
    File(#[from] crate::private_file::FileError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.into()),
            // Outages that the drivers report as database errors; to a client they are
            // a 503, not a bug.
            sqlx::Error::Database(db) if is_outage(db.as_ref()) => {
                StoreError::Unavailable(e.into())
            }
            _ => StoreError::Database(e.into()),
        }
    }
}

/// `before_acquire` for the networked pools: a connection that sat idle for a second or
/// more is pinged before it is handed out, so dead sockets left by a server restart or a
/// failover are replaced instead of failing a request. A busy connection is not: sqlx's
/// own `test_before_acquire` pings every time, a whole extra round trip per query.
pub(crate) fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for >= std::time::Duration::from_secs(1) {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// The pool options PostgreSQL and MySQL share: `DATABASE_MAX_CONNECTIONS` (a pool of
/// zero would make every request wait out the timeout), `DATABASE_TIMEOUT` to get one, and
/// a ping only for a connection that sat idle (`ping_if_idle`).
pub(crate) fn server_pool<DB: sqlx::Database>(
    settings: &crate::config::DatabaseSettings,
) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(settings.database_max_connections.max(1))
        .acquire_timeout(settings.database_timeout)
        .test_before_acquire(false)
        .before_acquire(ping_if_idle)
}

/// A pool's idle and in-use connections. The pool reads its two counters one after the other
/// while connections come and go, so idle is clamped to the size read with it.
pub(crate) fn pool_usage<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> (u32, u32) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
    (idle, size - idle)
}

/// Statement logging on every backend's connect options. sqlx logs each statement at
/// DEBUG and, by default, one that takes over a second at WARN — with its SQL text, so a
/// slow database filled warn-level logs with every query the server runs (issue 14). Both
/// go to DEBUG: at the levels a deployment logs (INFO, WARN) no statement text appears;
/// `RUST_LOG=sqlx::query=debug` shows them, the slow ones marked "slow statement".
pub(crate) fn quiet_statements<O: sqlx::ConnectOptions>(options: O) -> O {
    options
        .log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Debug, std::time::Duration::from_secs(1))
}

/// Database errors that mean "unavailable for now" rather than "wrong".
fn is_outage(db: &dyn sqlx::error::DatabaseError) -> bool {
    // MySQL/MariaDB are told apart by error number (their SQLSTATE is mostly HY000):
    // lock wait timeout, deadlock (after its retries), read-only after a failover, too
    // many connections, shutting down, connection killed.
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(my.number(), 1205 | 1213 | 1290 | 1836 | 1040 | 1053 | 1927);
    }
    matches!(
        db.code().as_deref(),
        // SQLite: busy, locked, read-only, I/O, full, can't open.
        Some("5" | "6" | "8" | "10" | "13" | "14" | "261" | "517")
        // PostgreSQL: too many connections, shutting down, read-only, and a
        // serialisation failure or deadlock.
        | Some("53300" | "57P01" | "57P02" | "57P03" | "25006" | "40001" | "40P01")
    )
}

/// A user as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub phone: Option<String>,
    pub password_hash: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    /// The email has been proven, as it is now (`proven_channels`).
    pub email_verified: bool,
    /// The phone has been proven, as it is now.
    pub phone_verified: bool,
    /// A confirmed TOTP authenticator.
    pub totp_enabled: bool,
    /// How many passkeys the user has registered.
    pub passkey_count: i32,
    /// How many unused recovery codes the user has.
    pub recovery_codes_left: i32,
}

impl User {
    /// Whether a password (or a code) alone is not enough to sign in: the account has a
    /// TOTP authenticator or a passkey.
    pub fn has_second_factor(&self) -> bool {
        self.totp_enabled || self.passkey_count > 0
    }
}

/// One security event for the audit trail. A store method that makes a change takes the
/// events that record it and commits them with the change, or not at all.
#[derive(Clone, Copy)]
pub struct AuditEvent<'a> {
    pub user_id: Option<UserId>,
    /// registered, login_succeeded, login_failed, logged_out, code_requested,
    /// code_validated, code_failed, password_reset, sessions_revoked,
    /// unproven_phone_removed, account_disabled, account_enabled, password_set,
    /// verification_requested, email_verified, phone_verified, password_changed,
    /// email_change_requested, email_changed, phone_change_requested, phone_changed,
    /// phone_removed, session_revoked, account_deleted.
    pub event: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub at: i64,
}

/// An audit row as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub user_id: Option<i64>,
    pub event: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
}

/// A user brought in by `import-seed`, already parsed and normalised.
#[derive(Debug, Clone)]
pub struct ImportUser {
    pub username: String,
    pub username_norm: String,
    pub email: String,
    pub email_norm: String,
    pub phone: Option<String>,
    pub password_hash: String,
    pub created_at: i64,
}

/// Figures for /metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub outbox_pending: i64,
    pub outbox_failed: i64,
    pub pool_idle: u32,
    pub pool_in_use: u32,
}

/// A live session's user, with what the idle clock needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    #[sqlx(flatten)]
    pub user: User,
    pub session_id: i64,
    pub last_seen_at: i64,
    /// The session's assurance level: 1 (a password or a code), 2 (with a second factor).
    pub aal: i32,
    /// When the user last proved themselves on this session (its login, or a
    /// re-authentication).
    pub proved_at: i64,
}

pub struct NewUser<'a> {
    pub username: &'a Username,
    pub email: &'a Email,
    pub phone: Option<&'a Phone>,
    pub password_hash: &'a str,
    pub now: i64,
}

pub struct NewSession<'a> {
    pub user_id: UserId,
    pub token_hash: &'a str,
    /// The handle `GET /sessions` shows: never the token or its hash.
    pub public_id: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// The assurance level of the login that opens it (1 or 2).
    pub aal: i32,
    /// The challenge the login used up (an `mfa_token`, a passkey ceremony), deleted in
    /// the same transaction: if it is already gone, no session opens.
    pub challenge: Option<i64>,
    pub now: i64,
    pub expires_at: i64,
}

/// One of a user's live sessions, as `GET /sessions` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionInfo {
    pub public_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session the listing was asked with.
    pub current: bool,
    pub aal: i32,
    pub proved_at: i64,
}

/// A message for the outbox, its payload already encrypted.
pub struct NewOutbox<'a> {
    pub channel: &'a str,
    pub payload: &'a str,
    /// Whose message it is: deleting the account deletes it while still undelivered.
    pub user_id: Option<UserId>,
    pub now: i64,
}

/// A change to an account that a code (or, for some, a password) authorises:
/// `Store::apply_change`.
#[derive(Debug, Clone, Copy)]
pub enum AccountChange<'a> {
    /// Records the proof of the address the user has now on `channel` (`email`, `sms`).
    /// A verification code cannot outlive the address it was sent to: changing an
    /// address kills that address's codes.
    Prove { channel: &'a str },
    /// A new email, proven by the code sent to it.
    Email { email: &'a str, key: &'a str },
    /// A new phone, proven by the code sent to it; `None` removes the phone.
    Phone { phone: Option<&'a str> },
}

/// A password change by its user: `Store::change_password`.
pub struct PasswordChange<'a> {
    pub user_id: UserId,
    /// The hash the password was checked against: a reset that happened meanwhile wins.
    pub old_hash: &'a str,
    pub new_hash: &'a str,
    /// The session that asked, and the token hash it goes on under.
    pub old_token_hash: &'a str,
    pub new_token_hash: &'a str,
    pub sign_out_others: bool,
    pub now: i64,
}

/// A change to a user's second factors: `Store::change_factors`. Each keeps the counts
/// on the user row (`totp_enabled`, `passkey_count`, `recovery_codes_left`) true in the
/// same transaction.
#[derive(Debug, Clone, Copy)]
pub enum FactorChange<'a> {
    /// Stores a new TOTP secret (sealed), waiting for its first code; replaces an earlier
    /// enrolment not yet confirmed. False when the user has a confirmed one.
    TotpBegin { secret: &'a str },
    /// Confirms the waiting enrolment with the code of time step `step` (taken, so it
    /// cannot be used again) and replaces the recovery codes with `recovery`.
    TotpConfirm { step: i64, recovery: &'a [String] },
    /// Removes TOTP (and the recovery codes, if no factor is left).
    TotpRemove,
    /// Replaces the recovery codes with these hashes.
    RecoveryReplace { recovery: &'a [String] },
    /// Uses the unused recovery code with this hash; false when there is none such.
    RecoveryUse { hash: &'a str },
    /// Adds a passkey.
    PasskeyAdd { passkey: &'a NewPasskey<'a> },
    /// Removes the user's passkey with this public id (and the recovery codes, if no
    /// factor is left); false when they have none such.
    PasskeyRemove { public_id: &'a str },
    /// An operator's reset (`gatehouse user reset-mfa`): removes every factor and
    /// recovery code and ends every session.
    ResetAll,
}

/// A passkey to store.
#[derive(Debug, Clone, Copy)]
pub struct NewPasskey<'a> {
    pub public_id: &'a str,
    pub credential_key: &'a str,
    pub credential: &'a str,
    pub name: &'a str,
}

/// A passkey as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasskeyRecord {
    pub public_id: String,
    pub user_id: UserId,
    pub credential: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A user's TOTP secret as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpRecord {
    /// Sealed under the server secret.
    pub secret: String,
    pub confirmed_at: Option<i64>,
}

/// Short-lived server-side state the client holds a handle to: `Store::create_challenge`.
pub struct NewChallenge<'a> {
    pub token_hash: &'a str,
    /// `mfa` (between a first factor and the second), `passkey_register`, `passkey_login`.
    pub kind: &'a str,
    pub user_id: Option<UserId>,
    /// What the challenge is bound to (an `mfa_token`: the proof that earned it).
    pub binding: Option<&'a str>,
    /// A ceremony's state (sealed).
    pub state: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

/// A live challenge as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Challenge {
    pub id: i64,
    pub user_id: Option<UserId>,
    pub binding: Option<String>,
    pub state: Option<String>,
    pub attempts: i32,
}

/// A claimed outbox message: this instance owns it until `locked_until`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxItem {
    pub id: i64,
    pub channel: String,
    pub payload: String,
    pub attempts: i32,
}

/// The newest unused, unexpired code of a user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveCode {
    pub id: i64,
    pub code_hash: String,
    /// Tries taken so far: a code already out of tries is refused without a write.
    pub attempts: i32,
    /// The new email or phone a change code was sent to (`NewCode::address`).
    pub address: Option<String>,
}

/// A user with the columns of their newest live code, all NULL when there is none: the
/// row `find_user_with_live_code` reads on every backend. The code columns are aliased
/// (`code_id`, `code_hash`, `code_attempts`) so they cannot clash with the user's.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct UserCodeRow {
    #[sqlx(flatten)]
    pub(crate) user: User,
    pub(crate) code_id: Option<i64>,
    pub(crate) code_hash: Option<String>,
    pub(crate) code_attempts: Option<i32>,
    pub(crate) code_address: Option<String>,
}

impl UserCodeRow {
    pub(crate) fn split(self) -> (User, Option<LiveCode>) {
        let code = match (self.code_id, self.code_hash, self.code_attempts) {
            (Some(id), Some(code_hash), Some(attempts)) => Some(LiveCode {
                id,
                code_hash,
                attempts,
                address: self.code_address,
            }),
            _ => None,
        };
        (self.user, code)
    }
}

/// The `users` columns an identifier is looked up by, each with a unique index: by email,
/// by phone, by username.
pub(crate) const LOOKUP_COLUMNS: [&str; 3] = ["email_norm", "phone", "username_norm"];

/// Which of `LOOKUP_COLUMNS` an identifier is looked up by.
pub(crate) fn column_slot(identifier: &Identifier) -> usize {
    match identifier {
        Identifier::Email(_) => 0,
        Identifier::Phone(_) => 1,
        Identifier::Username(_) => 2,
    }
}

pub struct NewCode<'a> {
    pub user_id: UserId,
    pub code_hash: &'a str,
    /// What the code is for (`reset`, `verify_email`, `verify_phone`, `change_email`,
    /// `change_phone`): a code is only ever looked up for its own purpose, and a new code
    /// kills the user's older ones of the same purpose.
    pub purpose: &'a str,
    /// The new email or phone of a change, which the code proves when used.
    pub address: Option<&'a str>,
    /// The channel the code goes out on (`email` or `sms`): a reset through it proves
    /// that address.
    pub channel: &'a str,
    /// The device (`auth::device`) that asked for it, whose guesses get tries of their own.
    pub device: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

/// A live reset token, as `/reset-password` checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveResetToken {
    /// The channel its code went out on; `None` for tokens from before channels were kept.
    pub channel: Option<String>,
}

pub struct NewResetToken<'a> {
    pub user_id: UserId,
    pub token_hash: &'a str,
    pub now: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait Store: FactorStore + Send + Sync + 'static {
    /// Stores `candidate` as the server secret unless one is stored already, and returns
    /// the stored one: every instance on a database ends up with the same secret.
    async fn server_secret(&self, candidate: &str) -> StoreResult<String>;

    /// Inserts a user and records `events` for them, in one transaction; `Conflict` when
    /// the username, email or phone is taken.
    async fn create_user(
        &self,
        user: &NewUser<'_>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<UserId>;

    async fn find_user(&self, identifier: &Identifier) -> StoreResult<Option<User>>;

    /// Replaces the hash only if it is still `old_hash` (a rehash on login must never
    /// overwrite a password reset that happened meanwhile).
    async fn replace_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> StoreResult<bool>;

    /// Opens a session and records `event` (the login that opened it) in one commit: a
    /// session never exists without its audit record, and a login costs one flush. Uses up
    /// `session.challenge` in the same commit; false (and nothing written) when it was
    /// used already.
    async fn create_session(
        &self,
        session: &NewSession<'_>,
        event: &AuditEvent<'_>,
    ) -> StoreResult<bool>;

    /// Records that the session's user proved themselves at `now`, at level `aal` (a
    /// session's level never goes down); false when the session is gone.
    async fn prove_session(&self, token_hash: &str, aal: i32, now: i64) -> StoreResult<bool>;

    /// The user behind a live session (not past `expires_at`, used since `idle_cutoff`,
    /// user not disabled). Records the use when the last one is older than `touch_before`.
    async fn session_user(
        &self,
        token_hash: &str,
        now: i64,
        idle_cutoff: i64,
        touch_before: i64,
    ) -> StoreResult<Option<SessionRow>>;

    /// Ends a session, recording `events` if it existed, in one transaction.
    async fn delete_session(&self, token_hash: &str, events: &[AuditEvent<'_>]) -> StoreResult<()>;

    /// In one transaction: kills the user's older unused codes of the same purpose, stores
    /// the new code's hash, queues the message that carries it and records `events`.
    async fn issue_code(
        &self,
        code: &NewCode<'_>,
        message: &NewOutbox<'_>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<()>;

    /// The user's newest unused code for `purpose`, unexpired at `now`.
    async fn live_code(
        &self,
        user_id: UserId,
        purpose: &str,
        now: i64,
    ) -> StoreResult<Option<LiveCode>>;

    /// `find_user` and `live_code` in one statement, so one round trip: the user (disabled
    /// or not) with their newest unused code for `purpose` unexpired at `now`, if any. What
    /// /validate-otp reads before deciding whether a guess may cost a write.
    async fn find_user_with_live_code(
        &self,
        identifier: &Identifier,
        purpose: &str,
        now: i64,
    ) -> StoreResult<Option<(User, Option<LiveCode>)>>;

    /// Atomically takes one of the code's `max_attempts` tries; false when none is left
    /// (or the code was used or expired meanwhile). A guess is only compared after this.
    async fn claim_attempt(&self, code_id: i64, now: i64, max_attempts: u32) -> StoreResult<bool>;

    /// Takes one of the tries a code keeps for the device it was sent to; false when the
    /// code is not bound to `device`, has none left, or was used or expired meanwhile.
    async fn claim_device_attempt(
        &self,
        code_id: i64,
        device: &str,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<bool>;

    /// Queues one message on its own (a notice that no other change carries).
    async fn queue_message(&self, message: &NewOutbox<'_>) -> StoreResult<()>;

    /// Marks the code used, stores a reset token and records `events`, in one
    /// transaction; false (and nothing written) when the code was already used, so a right
    /// code is redeemed exactly once.
    async fn redeem_code(
        &self,
        code_id: i64,
        token: &NewResetToken<'_>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// The user's unused, unexpired reset token with this hash, if any (a cheap read, so
    /// that a bad token is refused before any password is hashed), with the channel its
    /// code went out on.
    async fn live_reset_token(
        &self,
        user_id: UserId,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<LiveResetToken>>;

    /// In one transaction: consumes the user's reset token, sets the new hash, kills every
    /// other code and reset token of the user, revokes all their sessions, records the
    /// proof of `proven` (the channel the token's code went out on; an email proof also
    /// drops a phone that was never proven), queues the notices and records `events`.
    /// False (and nothing written) when the token is not live or not theirs.
    #[allow(clippy::too_many_arguments)]
    async fn reset_password(
        &self,
        user_id: UserId,
        token_hash: &str,
        new_hash: &str,
        now: i64,
        proven: Option<&str>,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// The channels (`email`, `sms`) the user has proven for the address they have now.
    async fn proven_channels(&self, user_id: UserId) -> StoreResult<Vec<String>>;

    /// Claims the oldest due message until `locked_until`; no two callers get the same.
    async fn claim_outbox(&self, now: i64, locked_until: i64) -> StoreResult<Option<OutboxItem>>;

    /// Marks a message delivered and drops its payload.
    async fn outbox_sent(&self, id: i64, now: i64) -> StoreResult<()>;

    /// Puts a message back for another try at `next_attempt_at`.
    async fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> StoreResult<()>;

    /// Gives up on a message after its last try.
    async fn outbox_failed(&self, id: i64, now: i64, error: &str) -> StoreResult<()>;

    /// Deletes expired sessions, codes and tokens, and delivered messages older than
    /// `sent_before`. Returns how many rows went.
    async fn purge_expired(&self, now: i64, sent_before: i64) -> StoreResult<u64>;

    /// Users whose username, email or phone contains `search` (case-insensitive), or all,
    /// oldest first, at most `limit`.
    async fn list_users(&self, search: Option<&str>, limit: u32) -> StoreResult<Vec<User>>;

    /// Disables (`Some(now)`) or enables (`None`) a user; disabling also revokes all their
    /// sessions and pending challenges (an `mfa_token`), in the same transaction, which records `events`. False (and nothing
    /// written) when there is no such user.
    async fn set_disabled(
        &self,
        user_id: UserId,
        disabled_at: Option<i64>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// Deletes all of a user's sessions but the one stored under `keep`, and records
    /// `events`, in one transaction; returns how many sessions went.
    async fn revoke_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<u64>;

    /// The user's live sessions (as `session_user` judges them), newest first, the one
    /// stored under `current_hash` marked.
    async fn list_sessions(
        &self,
        user_id: UserId,
        current_hash: &str,
        now: i64,
        idle_cutoff: i64,
    ) -> StoreResult<Vec<SessionInfo>>;

    /// Ends the user's session with this public id and records `events`, in one
    /// transaction; false (and nothing written) when the user has no such session.
    async fn revoke_session(
        &self,
        user_id: UserId,
        public_id: &str,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// A user's own password change, in one transaction: sets the new hash only if the
    /// stored one is still `old_hash`, kills every unused code and reset token, moves the
    /// asking session to its new token, ends the other sessions when asked, queues the
    /// notices and records `events`. False (and nothing written) when the hash changed
    /// meanwhile or the asking session is gone.
    async fn change_password(
        &self,
        change: &PasswordChange<'_>,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// Applies `change` to the user, in one transaction with the use of the code that
    /// authorises it (`code_id`, if any: it must still be live), the notices and
    /// `events`. A new email or phone is recorded as proven, and kills the user's unused
    /// reset codes and tokens (sent to the old one). False (and nothing written) when the
    /// user or the code is gone, or a proof is for an address the user no longer has;
    /// `Conflict` when another account holds the new email or phone.
    #[allow(clippy::too_many_arguments)]
    async fn apply_change(
        &self,
        user_id: UserId,
        code_id: Option<i64>,
        change: &AccountChange<'_>,
        now: i64,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// Deletes the user with their sessions, codes, tokens, proofs and undelivered
    /// messages, strips the client's address and agent from their audit events (which
    /// keep the user id), queues `notices` and records `events`, in one transaction. False
    /// when there is no such user.
    async fn delete_user(
        &self,
        user_id: UserId,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// An administrator's password change: in one transaction sets the hash, revokes all
    /// sessions, kills outstanding codes and reset tokens and records `events`. False (and
    /// nothing written) when there is no such user.
    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &str,
        now: i64,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// Records an attempt that changed nothing (a failed login, a wrong code): the only
    /// audit row written on its own.
    async fn record_audit(&self, event: &AuditEvent<'_>) -> StoreResult<()>;

    /// A user's audit events since `since`, oldest first, at most `limit`.
    async fn audit_for_user(
        &self,
        user_id: UserId,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;

    /// Deletes audit events older than `before`; returns how many.
    async fn purge_audit(&self, before: i64) -> StoreResult<u64>;

    /// Inserts the users that collide with no existing username, email or phone, in one
    /// transaction; returns how many were inserted (the rest are duplicates).
    async fn import_users(&self, users: &[ImportUser]) -> StoreResult<u64>;

    async fn stats(&self) -> StoreResult<StoreStats>;

    /// The newest applied migration.
    async fn schema_version(&self) -> StoreResult<i64>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;

    /// The secret `server_secret` stored, if any, without storing one: what start-up
    /// moves out of the database into the key file.
    async fn stored_server_secret(&self) -> StoreResult<Option<String>>;

    /// Deletes the stored server secret if it is `secret` (so a secret written somewhere
    /// else first is the one that goes); true when it was deleted. On SQLite the bytes are
    /// overwritten, not just unlinked.
    async fn forget_server_secret(&self, secret: &str) -> StoreResult<bool>;

    /// Users with an id above `after_id`, in id order, at most `limit`: a pass over every
    /// user a page at a time that neither skips nor repeats a row as others come and go.
    async fn users_after(&self, after_id: UserId, limit: u32) -> StoreResult<Vec<User>>;

    /// Replaces a user's `email_norm` with `new_norm` only if it is still `old_norm`, and
    /// moves a proof of the email with it, in one transaction. False when the row is gone
    /// or holds another key; `Conflict` when another account holds `new_norm`.
    async fn rekey_email(
        &self,
        user_id: UserId,
        old_norm: &str,
        new_norm: &str,
    ) -> StoreResult<bool>;
}

/// Connects to the database named by the URL's scheme and applies pending migrations.
pub async fn connect(settings: &crate::config::DatabaseSettings) -> StoreResult<Arc<dyn Store>> {
    let url = settings.database_url.as_str();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(settings).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PostgresStore::connect(settings).await?))
    } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
        Ok(Arc::new(mysql::MySqlStore::connect(settings).await?))
    } else {
        Err(StoreError::Config(format!(
            "`{}` — expected sqlite://…, postgres://… or mysql://…",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

/// The newest migration this binary carries for the backend of `url`: `/readyz` reports
/// the database as behind when its schema is older.
pub fn expected_schema_version(url: &str) -> i64 {
    let migrator = if url.starts_with("postgres") {
        sqlx::migrate!("migrations/postgres")
    } else if url.starts_with("mysql") || url.starts_with("mariadb") {
        sqlx::migrate!("migrations/mysql")
    } else {
        sqlx::migrate!("migrations/sqlite")
    };
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Opens one connection and pings it, without migrating anything: what
/// `check-config` uses to say whether the database answers.
pub async fn check_reachable(settings: &crate::config::DatabaseSettings) -> Result<String, String> {
    use sqlx::Connection;
    let url = settings.database_url.as_str();
    let scheme = url.split(':').next().unwrap_or_default();
    let check = async {
        match scheme {
            "sqlite" => {
                if let Some(path) = sqlite::database_path(url) {
                    for file in sqlite::database_files(&path) {
                        crate::private_file::check(&file)
                            .map_err(|e| sqlx::Error::Configuration(e.into()))?;
                    }
                }
                let opts =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)?
                        .create_if_missing(false);
                match sqlx::SqliteConnection::connect_with(&opts).await {
                    Ok(mut c) => c.ping().await.map(|()| "answers"),
                    // A missing file is created at start.
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("14") => {
                        Ok("file does not exist yet; it will be created at start")
                    }
                    Err(e) => Err(e),
                }
            }
            "postgres" | "postgresql" => {
                let mut c = sqlx::PgConnection::connect(url).await?;
                c.ping().await.map(|()| "answers")
            }
            "mysql" | "mariadb" => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let mut c = sqlx::MySqlConnection::connect(&url).await?;
                c.ping().await.map(|()| "answers")
            }
            other => Err(sqlx::Error::Configuration(
                format!("unsupported DATABASE_URL scheme `{other}`").into(),
            )),
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), check).await {
        Ok(Ok(detail)) => Ok(format!("{scheme}: {detail}")),
        Ok(Err(e)) => Err(format!("{scheme}: {e}")),
        Err(_) => Err(format!("{scheme}: timed out")),
    }
}
