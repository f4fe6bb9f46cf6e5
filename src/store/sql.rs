//! `SqlStore`: the one implementation of `Store`, written once for every database.
//!
//! Each statement is written here, once, with `?` placeholders and a few `{markers}` for
//! the pieces a database spells its own way; the `Dialect` of each backend (`sqlite.rs`,
//! `postgres.rs`, `mysql.rs`) supplies those pieces, and only the procedures that really
//! differ (claiming an outbox message, importing users, forgetting the server secret).
//! A statement is expanded for a dialect once, on first use, and kept in a static beside
//! the code that runs it, so no request formats SQL.
//!
//! Every transaction here that changes a user's codes, tokens or sessions takes the user's
//! row lock first (`{lock}`): they run one at a time per user, in the same lock order, so
//! they cannot deadlock each other, and a code issued during a reset either commits first
//! (and is killed by it) or waits for it. On SQLite the single writer already serialises
//! them and the "lock" is a plain read. Every path that returns without committing rolls
//! back explicitly: sqlx rolls back a dropped transaction only later, from a task, and
//! until then its locks stay held (`mysql.rs` has the story).

use std::future::Future;
use std::sync::OnceLock;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};

use super::hot::HotConnections;
use super::sqlite_inline::{self, InlineReaders};
use super::{
    AccountChange, AuditEvent, AuditRecord, ImportUser, LiveCode, LiveResetToken, NewCode,
    NewOutbox, NewResetToken, NewSession, NewUser, OutboxItem, PasswordChange, SessionInfo,
    SessionRow, Store, StoreResult, StoreStats, User, UserCodeRow, UserId,
};
use crate::domain::Identifier;

/// What one database does its own way. The constants have the standard SQL (what SQLite
/// and PostgreSQL accept) as defaults; each backend file overrides what differs, saying why.
pub trait Dialect: Database + Sized {
    /// This dialect's slot in a statement's cache (`Sql`): 0, 1 or 2.
    const SLOT: usize;
    /// Placeholders are numbered (`$1`, `$2`, …) rather than `?`.
    const NUMBERED: bool = false;
    /// `{user}`: the `User` columns of `users u`.
    const USER_COLUMNS: &'static str = "u.id, u.username, u.email, u.phone, u.password_hash, \
        u.created_at, u.disabled_at, {verified}, {factors}";
    /// `{code_hash}`: the hash column of `otp_codes c`.
    const CODE_HASH: &'static str = "c.code_hash";
    /// `{audit}`: the text columns of `audit_events a`.
    const AUDIT_TEXT: &'static str = "a.event, a.ip, a.user_agent";
    /// `{lock}`: the clause that makes a `SELECT` take the row's write lock.
    const LOCK_ROW: &'static str;
    /// `{skip_duplicates}`: the tail of an INSERT that skips a row colliding on any
    /// unique index instead of failing.
    const SKIP_DUPLICATES: &'static str = "ON CONFLICT DO NOTHING";
    /// `{secret_matches}`: compares the stored server secret with a bound one, exactly.
    const SECRET_MATCHES: &'static str = "secret = ?";
    /// `{returning_id}`: the tail of an INSERT that returns the new id, when the
    /// database can (else `insert_id` reads it from the statement's result).
    const RETURNING_ID: &'static str = " RETURNING id";
    /// `{purge_audit}`: deletes at most `?2` audit rows older than `?1`, oldest first.
    const PURGE_AUDIT: &'static str = "DELETE FROM audit_events WHERE id IN (
        SELECT id FROM audit_events WHERE created_at < ? ORDER BY created_at, id LIMIT ?)";
    /// `{user_with_live_code}`: the user whose `{column}` is `?2`, with their newest code
    /// live at `?1`, if any: a
    /// correlated subquery walks otp_codes_user_id (user_id, id) backwards from the user's
    /// newest code, and the join reads the row it picks (neither SQLite nor MariaDB has a
    /// LATERAL join).
    const USER_WITH_LIVE_CODE: &'static str = "SELECT {user}, c.id AS code_id, {code_hash},
            c.attempts AS code_attempts, c.address AS code_address
        FROM users u LEFT JOIN otp_codes c ON c.id = (
            SELECT id FROM otp_codes
            WHERE user_id = u.id AND used_at IS NULL AND expires_at > ? AND purpose = ?
            ORDER BY id DESC LIMIT 1)
        WHERE u.{column} = ?";
    /// `{t}column{/t}`: a text column that may have a binary collation, read as text (the
    /// default: as it is).
    const TEXT_OPEN: &'static str = "";
    const TEXT_CLOSE: &'static str = "";
    /// How a write transaction begins, when not with a plain `BEGIN`.
    const BEGIN: Option<&'static str> = None;

    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// The id an INSERT generated, for a dialect without `{returning_id}`.
    fn insert_id(_done: &Self::QueryResult) -> Option<i64> {
        None
    }

    /// Whether a write that failed with `e` is run again from the start (see `retry`).
    fn retryable(_e: &sqlx::Error) -> bool {
        false
    }

    /// `Store::claim_outbox`: how a message is claimed so that no two callers get it
    /// depends on each database's locking.
    fn claim_outbox(
        pool: &Pool<Self>,
        now: i64,
        locked_until: i64,
    ) -> BoxFuture<'_, StoreResult<Option<OutboxItem>>>;

    /// `Store::import_users`.
    fn import_users<'a>(
        pool: &'a Pool<Self>,
        users: &'a [ImportUser],
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// `Store::forget_server_secret`.
    fn forget_server_secret<'a>(
        pool: &'a Pool<Self>,
        secret: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>>;
}

/// `{verified}`: whether the user's email and phone, as they are now, have been proven:
/// the proven address kept beside each (`prove`) equals it.
const VERIFIED: &str = "COALESCE(u.email_proof = u.email_norm, FALSE) AS email_verified,
    COALESCE(u.phone_proof = u.phone, FALSE) AS phone_verified";

/// `{factors}`: what the user's second factors are, kept on the user row
/// (`Store::change_factors`): read with the user at no cost.
const FACTORS: &str = "u.totp_enabled, u.passkey_count, u.recovery_codes_left";

/// A statement written once, and its expansion for each dialect, made on first use.
pub struct Sql {
    template: &'static str,
    /// What `{column}` stands for, in a statement made for each lookup column.
    column: &'static str,
    expanded: [OnceLock<String>; 3],
}

impl Sql {
    pub const fn new(template: &'static str) -> Self {
        Sql::by(template, "")
    }

    pub const fn by(template: &'static str, column: &'static str) -> Self {
        Sql {
            template,
            column,
            expanded: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
        }
    }

    pub fn get<DB: Dialect>(&'static self) -> &'static str {
        self.expanded[DB::SLOT]
            .get_or_init(|| expand::<DB>(self.template).replace("{column}", self.column))
    }
}

/// The statement `$text`, for the dialect `DB` in scope, kept in a static beside its use.
macro_rules! sql {
    ($text:expr) => {{
        static SQL: $crate::store::sql::Sql = $crate::store::sql::Sql::new($text);
        SQL.get::<DB>()
    }};
}

/// The statement `$text` for the column `$identifier` is looked up by (`{column}`), one
/// static per column.
macro_rules! sql_by {
    ($text:expr, $identifier:expr) => {{
        use $crate::store::{sql::Sql, LOOKUP_COLUMNS as C};
        static SQL: [Sql; 3] = [
            Sql::by($text, C[0]),
            Sql::by($text, C[1]),
            Sql::by($text, C[2]),
        ];
        SQL[$crate::store::column_slot($identifier)].get::<DB>()
    }};
}

/// `sqlx::$kind` (`query`, `query_as`, `query_scalar`) of the statement `$text` for the
/// dialect `DB` in scope, with the arguments after `;` bound in order.
macro_rules! bound {
    ($kind:ident, $text:expr $(; $($arg:expr),*)?) => {
        sqlx::$kind(sql!($text))$($(.bind($arg))*)?
    };
}

/// Runs the statement `$text` on `$on` with the arguments after `;` bound in order, and
/// evaluates to the number of rows it matched (`?` on an error).
macro_rules! exec {
    ($on:expr, $text:expr $(; $($arg:expr),*)?) => {
        DB::rows_affected(&bound!(query, $text $(; $($arg),*)?).execute($on).await?)
    };
}

mod factors;
pub use factors::FactorStore;

/// `template` with the dialect's pieces filled in and its placeholders numbered if need be.
pub fn expand<DB: Dialect>(template: &str) -> String {
    let mut sql = template.to_owned();
    for (marker, piece) in [
        ("{user_with_live_code}", DB::USER_WITH_LIVE_CODE),
        ("{user}", DB::USER_COLUMNS),
        ("{verified}", VERIFIED),
        ("{factors}", FACTORS),
        ("{code_hash}", DB::CODE_HASH),
        ("{audit}", DB::AUDIT_TEXT),
        ("{lock}", DB::LOCK_ROW),
        ("{skip_duplicates}", DB::SKIP_DUPLICATES),
        ("{secret_matches}", DB::SECRET_MATCHES),
        ("{returning_id}", DB::RETURNING_ID),
        ("{purge_audit}", DB::PURGE_AUDIT),
        ("{t}", DB::TEXT_OPEN),
        ("{/t}", DB::TEXT_CLOSE),
    ] {
        sql = sql.replace(marker, piece);
    }
    if !DB::NUMBERED {
        return sql;
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a write (one statement or a whole transaction), and runs it again, up to three
/// more times, when the dialect says the database rolled it back to break a deadlock.
pub async fn retry<DB, T, F, Fut>(mut run: F) -> StoreResult<T>
where
    DB: Dialect,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 1;
    loop {
        match run().await {
            Err(e) if tries < 4 && DB::retryable(&e) => tries += 1,
            done => return Ok(done?),
        }
    }
}

pub struct SqlStore<DB: Dialect> {
    /// Writes and transactions; on SQLite a pool of one connection, the single writer.
    write: Pool<DB>,
    /// Reads, when not on `write`: SQLite's read-only pool.
    read: Option<Pool<DB>>,
    point: PointReads<DB>,
}

/// Where the reads every request makes (the session check, the user by identifier) run.
/// Each path pays for itself under production load (`bench/RESULTS.md`, P1 against the
/// pool): see `sqlite_inline.rs` and `hot.rs`.
pub(crate) enum PointReads<DB: Database> {
    /// SQLite: rusqlite readers on the calling thread.
    Inline(InlineReaders),
    /// PostgreSQL, MySQL: a few connections kept out of the pool.
    Kept(HotConnections<DB>),
}

// The bounds below say that `DB` is a database sqlx can run our statements on and decode
// our rows from; Rust does not carry such bounds along with the `Dialect` trait, so each
// generic impl (this one and the `Store` impl) states them.
impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'r> &'r str: sqlx::ColumnIndex<DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    pub(crate) fn new(write: Pool<DB>, read: Option<Pool<DB>>, point: PointReads<DB>) -> Self {
        SqlStore { write, read, point }
    }

    fn read(&self) -> &Pool<DB> {
        self.read.as_ref().unwrap_or(&self.write)
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, DB>, sqlx::Error> {
        match DB::BEGIN {
            Some(statement) => self.write.begin_with(statement).await,
            None => self.write.begin().await,
        }
    }

    /// Runs one statement on the writer, retried as the dialect says; returns the number
    /// of rows it matched.
    async fn execute<'q, F>(&self, query: F) -> StoreResult<u64>
    where
        F: Fn() -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>,
    {
        let done = retry::<DB, _, _, _>(|| query().execute(&self.write)).await?;
        Ok(DB::rows_affected(&done))
    }

    /// Takes the user's row lock for the rest of the transaction (see the module doc);
    /// returns whether the user exists.
    async fn lock_user(tx: &mut DB::Connection, user_id: UserId) -> Result<bool, sqlx::Error> {
        let found: Option<i64> =
            bound!(query_scalar, "SELECT id FROM users WHERE id = ?{lock}"; user_id)
                .fetch_optional(tx)
                .await?;
        Ok(found.is_some())
    }

    /// Sets a user's password hash and revokes everything the old password let anyone
    /// hold: sessions, unused codes, unused reset tokens. Part of a caller's transaction.
    async fn set_hash_and_revoke(
        tx: &mut DB::Connection,
        user_id: UserId,
        hash: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        exec!(&mut *tx, "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?";
            hash, now, user_id);
        Self::kill_codes(tx, user_id, now, None).await?;
        exec!(&mut *tx, "DELETE FROM sessions WHERE user_id = ?"; user_id);
        Ok(())
    }

    /// Kills the user's unused reset tokens and unused codes: all of them, or those for
    /// `purposes` only. Part of a caller's transaction.
    async fn kill_codes(
        tx: &mut DB::Connection,
        user_id: UserId,
        now: i64,
        purposes: Option<[&str; 3]>,
    ) -> Result<(), sqlx::Error> {
        exec!(&mut *tx, "UPDATE reset_tokens SET used_at = ?
            WHERE user_id = ? AND used_at IS NULL"; now, user_id);
        match purposes {
            None => exec!(&mut *tx, "UPDATE otp_codes SET used_at = ?
                WHERE user_id = ? AND used_at IS NULL"; now, user_id),
            Some([a, b, c]) => exec!(&mut *tx, "UPDATE otp_codes SET used_at = ?
                WHERE user_id = ? AND used_at IS NULL AND purpose IN (?, ?, ?)";
                now, user_id, a, b, c),
        };
        Ok(())
    }

    /// Records that the user proved `channel` (`email` or `sms`) for the address they
    /// have on it now, replacing an earlier proof; false when they have none (no phone).
    /// Part of a caller's transaction.
    async fn prove(
        tx: &mut DB::Connection,
        user_id: UserId,
        channel: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        exec!(&mut *tx, "DELETE FROM proven_channels WHERE user_id = ? AND channel = ?";
            user_id, channel);
        let n = exec!(&mut *tx, "INSERT INTO proven_channels (user_id, channel, address, proven_at)
            SELECT id, ?, CASE WHEN ? = 'sms' THEN phone ELSE email_norm END, ? FROM users
            WHERE id = ? AND (? <> 'sms' OR phone IS NOT NULL)";
            channel, channel, now, user_id, channel);
        // The copy every read of the user compares (`{verified}`).
        exec!(&mut *tx, "UPDATE users
            SET email_proof = CASE WHEN ? = 'sms' THEN email_proof ELSE email_norm END,
                phone_proof = CASE WHEN ? = 'sms' THEN phone ELSE phone_proof END
            WHERE id = ?"; channel, channel, user_id);
        Ok(n == 1)
    }

    /// Queues `notices` and records `events`, inside the caller's transaction, and commits.
    async fn finish(
        mut tx: sqlx::Transaction<'static, DB>,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> Result<(), sqlx::Error> {
        for message in notices {
            Self::enqueue(&mut tx, message).await?;
        }
        Self::record(&mut tx, events, None).await?;
        tx.commit().await
    }

    async fn enqueue(tx: &mut DB::Connection, m: &NewOutbox<'_>) -> Result<(), sqlx::Error> {
        exec!(tx, "INSERT INTO outbox (channel, payload, user_id, next_attempt_at, created_at)
                   VALUES (?, ?, ?, ?, ?)"; m.channel, m.payload, m.user_id, m.now, m.now);
        Ok(())
    }

    /// Inserts one audit row, for `user_id` when given (the id of a user the transaction
    /// just created), else for the event's own.
    async fn insert_audit<'e, E>(
        on: E,
        e: &AuditEvent<'_>,
        user_id: Option<UserId>,
    ) -> Result<(), sqlx::Error>
    where
        E: Executor<'e, Database = DB>,
    {
        exec!(on, "INSERT INTO audit_events (user_id, event, ip, user_agent, created_at)
                   VALUES (?, ?, ?, ?, ?)";
            user_id.or(e.user_id), e.event, e.ip, e.user_agent, e.at);
        Ok(())
    }

    /// Records `events` inside the caller's transaction (see `insert_audit`).
    async fn record(
        tx: &mut DB::Connection,
        events: &[AuditEvent<'_>],
        user_id: Option<UserId>,
    ) -> Result<(), sqlx::Error> {
        for e in events {
            Self::insert_audit(&mut *tx, e, user_id).await?;
        }
        Ok(())
    }

    /// Records that the user proved `channel` (the one a reset token's code went out on),
    /// inside the reset's transaction.
    async fn record_proof(
        tx: &mut DB::Connection,
        user_id: UserId,
        channel: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        Self::prove(tx, user_id, channel, now).await?;
        if channel == "email" {
            // Whoever proved the email takes sole control: a phone number nobody proved
            // (an attacker's, registered beside the victim's email) is no longer a way in.
            exec!(&mut *tx, "UPDATE users SET phone = NULL, phone_proof = NULL
                WHERE id = ? AND phone IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM proven_channels p
                    WHERE p.user_id = users.id AND p.channel = 'sms' AND p.address = users.phone)";
                user_id);
        }
        Ok(())
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'r> &'r str: sqlx::ColumnIndex<DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    async fn server_secret(&self, candidate: &str) -> StoreResult<String> {
        // Two instances starting at once both insert; the primary key lets exactly one
        // through and the other's insert is skipped, so both then read the winner's.
        self.execute(|| {
            bound!(query, "INSERT INTO server_secret (id, secret) VALUES (1, ?) {skip_duplicates}";
                candidate)
        })
        .await?;
        Ok(bound!(
            query_scalar,
            "SELECT secret FROM server_secret WHERE id = 1"
        )
        .fetch_one(&self.write)
        .await?)
    }

    async fn create_user(&self, u: &NewUser<'_>, events: &[AuditEvent<'_>]) -> StoreResult<UserId> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            let insert = bound!(query, "INSERT INTO users (username, username_norm, email,
                    email_norm, phone, password_hash, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?){returning_id}";
                u.username.as_str(), u.username.key(), u.email.as_str(), u.email.key(),
                u.phone.map(|p| p.as_str()), u.password_hash, u.now, u.now);
            let id: UserId = if DB::RETURNING_ID.is_empty() {
                let done = insert.execute(&mut *tx).await?;
                DB::insert_id(&done)
                    .ok_or_else(|| sqlx::Error::Protocol("no id for the new user".into()))?
            } else {
                insert.fetch_one(&mut *tx).await?.try_get(0)?
            };
            Self::record(&mut tx, events, Some(id)).await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    async fn find_user(&self, identifier: &Identifier) -> StoreResult<Option<User>> {
        let sql = sql_by!(
            "SELECT {user} FROM users u WHERE u.{column} = ?",
            identifier
        );
        match &self.point {
            PointReads::Inline(inline) => inline.row(sql, [identifier.key()], sqlite_inline::user),
            PointReads::Kept(kept) => {
                let query = sqlx::query_as(sql).bind(identifier.key());
                kept.fetch_optional(query).await
            }
        }
    }

    async fn replace_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> StoreResult<bool> {
        // password_hash is compared exactly on every backend (binary collation on MySQL).
        let n = self
            .execute(|| {
                bound!(query, "UPDATE users SET password_hash = ?, updated_at = ?
                    WHERE id = ? AND password_hash = ?"; new_hash, now, user_id, old_hash)
            })
            .await?;
        Ok(n == 1)
    }

    async fn create_session(&self, s: &NewSession<'_>, e: &AuditEvent<'_>) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            if let Some(id) = s.challenge {
                if exec!(&mut *tx, "DELETE FROM challenges WHERE id = ?"; id) != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            exec!(&mut *tx, "INSERT INTO sessions (token_hash, public_id, user_id, ip, user_agent,
                    created_at, last_seen_at, expires_at, aal, proved_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
                s.token_hash, s.public_id, s.user_id, s.ip, s.user_agent, s.now, s.now,
                s.expires_at, i64::from(s.aal), s.now);
            Self::insert_audit(&mut *tx, e, None).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn session_user(
        &self,
        token_hash: &str,
        now: i64,
        idle_cutoff: i64,
        touch_before: i64,
    ) -> StoreResult<Option<SessionRow>> {
        let sql = sql!(
            "SELECT {user}, s.id AS session_id, s.last_seen_at, s.aal, s.proved_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ? AND s.expires_at > ? AND s.last_seen_at > ?
               AND u.disabled_at IS NULL"
        );
        let row = match &self.point {
            PointReads::Inline(inline) => {
                let params = (token_hash, now, idle_cutoff);
                inline.row(sql, params, sqlite_inline::session)?
            }
            PointReads::Kept(kept) => {
                let query = sqlx::query_as::<_, SessionRow>(sql);
                kept.fetch_optional(query.bind(token_hash).bind(now).bind(idle_cutoff))
                    .await?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        // A write (a row lock, a log record, on SQLite the one writer) on every request
        // would be wasted: the idle clock only needs minute precision. The condition is
        // repeated in the UPDATE so that requests racing on one session write once, and
        // never move the clock backwards.
        if row.last_seen_at < touch_before {
            self.execute(|| {
                bound!(query, "UPDATE sessions SET last_seen_at = ?
                    WHERE id = ? AND last_seen_at < ?"; now, row.session_id, touch_before)
            })
            .await?;
        }
        Ok(Some(row))
    }

    async fn delete_session(&self, token_hash: &str, events: &[AuditEvent<'_>]) -> StoreResult<()> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            if exec!(&mut *tx, "DELETE FROM sessions WHERE token_hash = ?"; token_hash) == 1 {
                Self::record(&mut tx, events, None).await?;
            }
            tx.commit().await
        })
        .await
    }

    async fn prove_session(&self, token_hash: &str, aal: i32, now: i64) -> StoreResult<bool> {
        let aal = i64::from(aal);
        let n = self
            .execute(|| {
                bound!(query, "UPDATE sessions
                    SET aal = CASE WHEN aal > ? THEN aal ELSE ? END, proved_at = ?
                    WHERE token_hash = ?"; aal, aal, now, token_hash)
            })
            .await?;
        Ok(n == 1)
    }

    async fn issue_code(
        &self,
        code: &NewCode<'_>,
        message: &NewOutbox<'_>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<()> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            // Two issues for one user at once would each kill only the codes committed
            // before they started, leaving both new codes live: the user's lock queues them.
            Self::lock_user(&mut tx, code.user_id).await?;
            exec!(&mut *tx, "UPDATE otp_codes SET used_at = ?
                WHERE user_id = ? AND used_at IS NULL AND purpose = ?";
                code.now, code.user_id, code.purpose);
            exec!(&mut *tx, "INSERT INTO otp_codes (user_id, code_hash, created_at, expires_at,
                    channel, device, purpose, address) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
                code.user_id, code.code_hash, code.now, code.expires_at, code.channel, code.device,
                code.purpose, code.address);
            Self::enqueue(&mut tx, message).await?;
            Self::record(&mut tx, events, None).await?;
            tx.commit().await
        })
        .await
    }

    async fn live_code(
        &self,
        user_id: UserId,
        purpose: &str,
        now: i64,
    ) -> StoreResult<Option<LiveCode>> {
        Ok(
            bound!(query_as, "SELECT c.id, {code_hash}, c.attempts, c.address FROM otp_codes c
             WHERE c.user_id = ? AND c.used_at IS NULL AND c.expires_at > ? AND c.purpose = ?
             ORDER BY c.id DESC LIMIT 1"; user_id, now, purpose)
            .fetch_optional(self.read())
            .await?,
        )
    }

    async fn find_user_with_live_code(
        &self,
        identifier: &Identifier,
        purpose: &str,
        now: i64,
    ) -> StoreResult<Option<(User, Option<LiveCode>)>> {
        let sql = sql_by!("{user_with_live_code}", identifier);
        let row = match &self.point {
            PointReads::Inline(inline) => {
                let params = (now, purpose, identifier.key());
                inline.row(sql, params, sqlite_inline::user_code)?
            }
            PointReads::Kept(kept) => {
                let query = sqlx::query_as::<_, UserCodeRow>(sql);
                kept.fetch_optional(query.bind(now).bind(purpose).bind(identifier.key()))
                    .await?
            }
        };
        Ok(row.map(UserCodeRow::split))
    }

    async fn claim_attempt(&self, code_id: i64, now: i64, max_attempts: u32) -> StoreResult<bool> {
        // One statement: concurrent callers queue on the row lock and each re-checks
        // `attempts < max` against the count the previous one committed.
        let n = self
            .execute(|| {
                bound!(query, "UPDATE otp_codes SET attempts = attempts + 1
                    WHERE id = ? AND used_at IS NULL AND expires_at > ? AND attempts < ?";
                    code_id, now, i64::from(max_attempts))
            })
            .await?;
        Ok(n == 1)
    }

    async fn claim_device_attempt(
        &self,
        code_id: i64,
        device: &str,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        // The device's own tries, on a code bound to that device only.
        let n = self
            .execute(|| {
                bound!(query, "UPDATE otp_codes SET device_attempts = device_attempts + 1
                    WHERE id = ? AND device = ? AND used_at IS NULL AND expires_at > ?
                      AND device_attempts < ?"; code_id, device, now, i64::from(max_attempts))
            })
            .await?;
        Ok(n == 1)
    }

    async fn queue_message(&self, message: &NewOutbox<'_>) -> StoreResult<()> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            Self::enqueue(&mut tx, message).await?;
            tx.commit().await
        })
        .await
    }

    async fn redeem_code(
        &self,
        code_id: i64,
        token: &NewResetToken<'_>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            Self::lock_user(&mut tx, token.user_id).await?;
            // The conditional UPDATE is the gate: a second redeemer finds used_at set and
            // matches no row.
            let used = exec!(&mut *tx, "UPDATE otp_codes SET used_at = ?
                WHERE id = ? AND used_at IS NULL AND expires_at > ?";
                token.now, code_id, token.now);
            if used != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            // The token inherits the channel of the code it was redeemed with.
            exec!(&mut *tx, "INSERT INTO reset_tokens (user_id, token_hash, created_at,
                    expires_at, channel)
                SELECT ?, ?, ?, ?, channel FROM otp_codes WHERE id = ?";
                token.user_id, token.token_hash, token.now, token.expires_at, code_id);
            Self::record(&mut tx, events, None).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn live_reset_token(
        &self,
        user_id: UserId,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<LiveResetToken>> {
        let found: Option<Option<String>> = bound!(query_scalar, "SELECT channel FROM reset_tokens
            WHERE token_hash = ? AND user_id = ? AND used_at IS NULL AND expires_at > ?";
            token_hash, user_id, now)
        .fetch_optional(self.read())
        .await?;
        Ok(found.map(|channel| LiveResetToken { channel }))
    }

    async fn reset_password(
        &self,
        user_id: UserId,
        token_hash: &str,
        new_hash: &str,
        now: i64,
        proven: Option<&str>,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            Self::lock_user(&mut tx, user_id).await?;
            // Consuming the token first, conditionally, makes it the gate: of two resets
            // with one token, the second matches nothing and writes nothing.
            let consumed = exec!(&mut *tx, "UPDATE reset_tokens SET used_at = ?
                WHERE token_hash = ? AND user_id = ? AND used_at IS NULL AND expires_at > ?";
                now, token_hash, user_id, now);
            if consumed != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            Self::set_hash_and_revoke(&mut tx, user_id, new_hash, now).await?;
            if let Some(channel) = proven {
                Self::record_proof(&mut tx, user_id, channel, now).await?;
            }
            for message in notices {
                Self::enqueue(&mut tx, message).await?;
            }
            Self::record(&mut tx, events, None).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn proven_channels(&self, user_id: UserId) -> StoreResult<Vec<String>> {
        // Proofs of an address the user no longer has do not count.
        Ok(
            bound!(query_scalar, "SELECT p.channel FROM proven_channels p
            JOIN users u ON u.id = p.user_id
            WHERE p.user_id = ?
              AND p.address = CASE WHEN p.channel = 'sms' THEN u.phone ELSE u.email_norm END
            ORDER BY p.channel"; user_id)
            .fetch_all(self.read())
            .await?,
        )
    }

    async fn claim_outbox(&self, now: i64, locked_until: i64) -> StoreResult<Option<OutboxItem>> {
        DB::claim_outbox(&self.write, now, locked_until).await
    }

    async fn outbox_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        self.execute(|| {
            bound!(query, "UPDATE outbox SET status = 'sent', sent_at = ?, payload = '',
                locked_until = 0, last_error = NULL WHERE id = ?"; now, id)
        })
        .await?;
        Ok(())
    }

    async fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> StoreResult<()> {
        self.execute(|| {
            bound!(query, "UPDATE outbox SET next_attempt_at = ?, locked_until = 0, last_error = ?
                WHERE id = ?"; next_attempt_at, error, id)
        })
        .await?;
        Ok(())
    }

    async fn outbox_failed(&self, id: i64, now: i64, error: &str) -> StoreResult<()> {
        self.execute(|| {
            bound!(query, "UPDATE outbox SET status = 'failed', payload = '', locked_until = 0,
                last_error = ?, sent_at = ? WHERE id = ?"; error, now, id)
        })
        .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64, sent_before: i64) -> StoreResult<u64> {
        // Each DELETE commits on its own: nothing needs the four to be atomic, and one
        // transaction would hold the locks of all four tables (blocking new sessions and
        // codes meanwhile) and could deadlock with a reset that takes them in another order.
        let mut n = 0;
        for (statement, bound) in [
            (sql!("DELETE FROM sessions WHERE expires_at <= ?"), now),
            (sql!("DELETE FROM challenges WHERE expires_at <= ?"), now),
            (
                sql!("DELETE FROM otp_codes WHERE expires_at <= ? OR used_at IS NOT NULL"),
                now,
            ),
            (
                sql!("DELETE FROM reset_tokens WHERE expires_at <= ? OR used_at IS NOT NULL"),
                now,
            ),
            (
                sql!("DELETE FROM outbox WHERE status <> 'pending' AND sent_at <= ?"),
                sent_before,
            ),
        ] {
            n += self.execute(|| sqlx::query(statement).bind(bound)).await?;
        }
        Ok(n)
    }

    async fn list_users(&self, search: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        // The *_norm columns are lower case already, so a lower-cased pattern matches
        // case-insensitively. `%` and `_` in the search stay wildcards and every other
        // character is literal: the escape is an explicit `!` (doubled in the pattern to
        // stand for itself), since the default escape differs (PostgreSQL's and MySQL's is
        // `\`, SQLite has none) and MariaDB keeps `\` even under ESCAPE ''.
        let search = search.unwrap_or("").to_lowercase().replace('!', "!!");
        let pattern = format!("%{search}%");
        Ok(bound!(query_as, "SELECT {user} FROM users u
             WHERE u.username_norm LIKE ? ESCAPE '!' OR u.email_norm LIKE ? ESCAPE '!'
                OR COALESCE(u.phone, '') LIKE ? ESCAPE '!'
             ORDER BY u.id LIMIT ?"; &pattern, &pattern, &pattern, i64::from(limit))
        .fetch_all(self.read())
        .await?)
    }

    async fn set_disabled(
        &self,
        user_id: UserId,
        disabled_at: Option<i64>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            // Existence comes from the lock, not from the UPDATE's row count, so the answer
            // does not hinge on whether the server counts matched or changed rows.
            if !Self::lock_user(&mut tx, user_id).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            exec!(&mut *tx, "UPDATE users SET disabled_at = ? WHERE id = ?"; disabled_at, user_id);
            if disabled_at.is_some() {
                exec!(&mut *tx, "DELETE FROM sessions WHERE user_id = ?"; user_id);
                // A login waiting for its second factor, or a ceremony, dies with them.
                exec!(&mut *tx, "DELETE FROM challenges WHERE user_id = ?"; user_id);
            }
            Self::record(&mut tx, events, None).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn revoke_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<u64> {
        retry::<DB, _, _, _>(|| async move {
            let tx = self.begin().await?;
            let mut tx = tx;
            // No token hash is empty: without `keep` every session goes.
            let n = exec!(&mut *tx, "DELETE FROM sessions WHERE user_id = ? AND token_hash <> ?";
                user_id, keep.unwrap_or(""));
            Self::finish(tx, &[], events).await?;
            Ok(n)
        })
        .await
    }

    async fn list_sessions(
        &self,
        user_id: UserId,
        current_hash: &str,
        now: i64,
        idle_cutoff: i64,
    ) -> StoreResult<Vec<SessionInfo>> {
        // From the writer: a session opened or revoked a moment ago is listed as it is.
        Ok(
            bound!(query_as, "SELECT s.public_id, s.created_at, s.last_seen_at, s.expires_at,
                s.ip, s.user_agent, s.token_hash = ? AS current, s.aal, s.proved_at
            FROM sessions s
            WHERE s.user_id = ? AND s.expires_at > ? AND s.last_seen_at > ?
            ORDER BY s.created_at DESC, s.id DESC";
            current_hash, user_id, now, idle_cutoff)
            .fetch_all(&self.write)
            .await?,
        )
    }

    async fn revoke_session(
        &self,
        user_id: UserId,
        public_id: &str,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            let n = exec!(&mut *tx, "DELETE FROM sessions WHERE user_id = ? AND public_id = ?";
                user_id, public_id);
            if n != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            Self::finish(tx, &[], events).await?;
            Ok(true)
        })
        .await
    }

    async fn change_password(
        &self,
        c: &PasswordChange<'_>,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            Self::lock_user(&mut tx, c.user_id).await?;
            // Conditional on the hash the password was checked against, and on the asking
            // session still being there: a reset or a revocation meanwhile wins.
            let set = exec!(&mut *tx, "UPDATE users SET password_hash = ?, updated_at = ?
                WHERE id = ? AND password_hash = ?"; c.new_hash, c.now, c.user_id, c.old_hash);
            let moved = exec!(&mut *tx, "UPDATE sessions SET token_hash = ?
                WHERE token_hash = ? AND user_id = ?";
                c.new_token_hash, c.old_token_hash, c.user_id);
            if set != 1 || moved != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            Self::kill_codes(&mut tx, c.user_id, c.now, None).await?;
            if c.sign_out_others {
                exec!(&mut *tx, "DELETE FROM sessions WHERE user_id = ? AND token_hash <> ?";
                    c.user_id, c.new_token_hash);
            }
            Self::finish(tx, notices, events).await?;
            Ok(true)
        })
        .await
    }

    async fn apply_change(
        &self,
        user_id: UserId,
        code_id: Option<i64>,
        change: &AccountChange<'_>,
        now: i64,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            let mut done = Self::lock_user(&mut tx, user_id).await?;
            if let (true, Some(code_id)) = (done, code_id) {
                // The code's use is the gate: of two uses of one code, one matches nothing.
                done = exec!(&mut *tx, "UPDATE otp_codes SET used_at = ?
                    WHERE id = ? AND user_id = ? AND used_at IS NULL AND expires_at > ?";
                    now, code_id, user_id, now)
                    == 1;
            }
            if done {
                done = match *change {
                    AccountChange::Prove { channel } => {
                        Self::prove(&mut tx, user_id, channel, now).await?
                    }
                    AccountChange::Email { email, key } => {
                        exec!(&mut *tx, "UPDATE users SET email = ?, email_norm = ?,
                            email_proof = NULL, updated_at = ? WHERE id = ?";
                            email, key, now, user_id);
                        Self::kill_codes(
                            &mut tx,
                            user_id,
                            now,
                            Some(["reset", "verify_email", "login_email"]),
                        )
                        .await?;
                        Self::prove(&mut tx, user_id, "email", now).await?
                    }
                    AccountChange::Phone { phone } => {
                        exec!(&mut *tx, "UPDATE users SET phone = ?, phone_proof = NULL,
                            updated_at = ? WHERE id = ?"; phone, now, user_id);
                        Self::kill_codes(
                            &mut tx,
                            user_id,
                            now,
                            Some(["reset", "verify_phone", "login_sms"]),
                        )
                        .await?;
                        match phone {
                            Some(_) => Self::prove(&mut tx, user_id, "sms", now).await?,
                            None => {
                                exec!(&mut *tx, "DELETE FROM proven_channels
                                    WHERE user_id = ? AND channel = 'sms'"; user_id);
                                true
                            }
                        }
                    }
                };
            }
            if !done {
                tx.rollback().await?;
                return Ok(false);
            }
            Self::finish(tx, notices, events).await?;
            Ok(true)
        })
        .await
    }

    async fn delete_user(
        &self,
        user_id: UserId,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            if !Self::lock_user(&mut tx, user_id).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            // The trail keeps the user id (what happened to account 42) but not where from.
            exec!(&mut *tx, "UPDATE audit_events SET ip = NULL, user_agent = NULL
                WHERE user_id = ?"; user_id);
            exec!(&mut *tx, "DELETE FROM outbox WHERE user_id = ? AND status = 'pending'";
                user_id);
            for statement in [
                sql!("DELETE FROM sessions WHERE user_id = ?"),
                sql!("DELETE FROM otp_codes WHERE user_id = ?"),
                sql!("DELETE FROM reset_tokens WHERE user_id = ?"),
                sql!("DELETE FROM proven_channels WHERE user_id = ?"),
                sql!("DELETE FROM totp_secrets WHERE user_id = ?"),
                sql!("DELETE FROM recovery_codes WHERE user_id = ?"),
                sql!("DELETE FROM passkeys WHERE user_id = ?"),
                sql!("DELETE FROM challenges WHERE user_id = ?"),
                sql!("DELETE FROM users WHERE id = ?"),
            ] {
                sqlx::query(statement)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Self::finish(tx, notices, events).await?;
            Ok(true)
        })
        .await
    }

    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &str,
        now: i64,
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            if !Self::lock_user(&mut tx, user_id).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            Self::set_hash_and_revoke(&mut tx, user_id, hash, now).await?;
            Self::record(&mut tx, events, None).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn record_audit(&self, e: &AuditEvent<'_>) -> StoreResult<()> {
        retry::<DB, _, _, _>(|| Self::insert_audit(&self.write, e, None)).await
    }

    async fn audit_for_user(
        &self,
        user_id: UserId,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        Ok(
            bound!(query_as, "SELECT a.id, a.user_id, {audit}, a.created_at FROM audit_events a
             WHERE a.user_id = ? AND a.created_at >= ? ORDER BY a.created_at, a.id LIMIT ?";
            user_id, since, i64::from(limit))
            .fetch_all(self.read())
            .await?,
        )
    }

    async fn purge_audit(&self, before: i64) -> StoreResult<u64> {
        // In batches, each committing on its own: one DELETE of a long backlog would hold
        // the writer (SQLite) or its locks (up to the end of the index, when every row is
        // old, on MySQL) for the whole run, and so block every audit insert meanwhile.
        const BATCH: u64 = 10_000;
        let mut n = 0;
        loop {
            let done = self
                .execute(|| bound!(query, "{purge_audit}"; before, BATCH as i64))
                .await?;
            n += done;
            if done < BATCH {
                return Ok(n);
            }
        }
    }

    async fn import_users(&self, users: &[ImportUser]) -> StoreResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        DB::import_users(&self.write, users).await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        // Two index range counts on outbox_due (status, next_attempt_at).
        let (pending, failed): (i64, i64) = bound!(
            query_as,
            "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending'),
                    (SELECT COUNT(*) FROM outbox WHERE status = 'failed')"
        )
        .fetch_one(self.read())
        .await?;
        let (mut pool_idle, mut pool_in_use) = super::pool_usage(&self.write);
        if let Some(read) = &self.read {
            let (idle, in_use) = super::pool_usage(read);
            pool_idle += idle;
            pool_in_use += in_use;
        }
        Ok(StoreStats {
            outbox_pending: pending,
            outbox_failed: failed,
            pool_idle,
            pool_in_use,
        })
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        Ok(bound!(
            query_scalar,
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success"
        )
        .fetch_one(self.read())
        .await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        // Through a write transaction: on SQLite readers keep working while something
        // else holds the write lock, so readiness checks that this instance can write.
        let mut tx = self.begin().await?;
        sqlx::query("SELECT 1").execute(&mut *tx).await?;
        tx.rollback().await?;
        Ok(())
    }

    async fn stored_server_secret(&self) -> StoreResult<Option<String>> {
        Ok(bound!(
            query_scalar,
            "SELECT secret FROM server_secret WHERE id = 1"
        )
        .fetch_optional(&self.write)
        .await?)
    }

    async fn forget_server_secret(&self, secret: &str) -> StoreResult<bool> {
        DB::forget_server_secret(&self.write, secret).await
    }

    async fn users_after(&self, after_id: UserId, limit: u32) -> StoreResult<Vec<User>> {
        Ok(
            bound!(query_as, "SELECT {user} FROM users u WHERE u.id > ? ORDER BY u.id LIMIT ?";
            after_id, i64::from(limit))
            .fetch_all(self.read())
            .await?,
        )
    }

    async fn rekey_email(
        &self,
        user_id: UserId,
        old_norm: &str,
        new_norm: &str,
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            // Only while the row still has the old key.
            let done = exec!(&mut *tx, "UPDATE users SET email_norm = ?
                WHERE id = ? AND email_norm = ?";
                new_norm, user_id, old_norm);
            if done != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            // A proof of the email moves with its key: it was made for the same mailbox,
            // only spelled by the old rule (see `record_proof`).
            exec!(&mut *tx, "UPDATE proven_channels SET address = ?
                WHERE user_id = ? AND channel <> 'sms' AND address = ?";
                new_norm, user_id, old_norm);
            exec!(&mut *tx, "UPDATE users SET email_proof = ? WHERE id = ? AND email_proof = ?";
                new_norm, user_id, old_norm);
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}

/// The INSERT of a batch of imported users, without its tail.
pub fn insert_users<'a, DB: Dialect>(users: &'a [ImportUser]) -> QueryBuilder<'a, DB>
where
    for<'q> &'q String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "INSERT INTO users (username, username_norm, email, email_norm, phone, password_hash, \
         created_at, updated_at) ",
    );
    qb.push_values(users, |mut row, u| {
        row.push_bind(&u.username)
            .push_bind(&u.username_norm)
            .push_bind(&u.email)
            .push_bind(&u.email_norm)
            .push_bind(&u.phone)
            .push_bind(&u.password_hash)
            .push_bind(u.created_at)
            .push_bind(u.created_at);
    });
    qb.push(" ");
    qb.push(DB::SKIP_DUPLICATES);
    qb
}

/// Deletes the stored server secret if it is `secret`; true when it was deleted.
pub async fn delete_secret<'e, DB, E>(executor: E, secret: &str) -> StoreResult<bool>
where
    DB: Dialect,
    E: Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    Ok(exec!(executor, "DELETE FROM server_secret WHERE id = 1 AND {secret_matches}"; secret) == 1)
}
