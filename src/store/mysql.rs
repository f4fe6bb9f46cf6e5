//! `MySqlStore`: the MySQL 8 / MariaDB 10.6+ backend, for several instances sharing one
//! server.
//!
//! Three quirks of the server shape this file:
//!
//! * There is no `RETURNING` (MariaDB has it for INSERT only, MySQL not at all), so new ids
//!   come from `last_insert_id()` and the outbox claim is a locking `SELECT … FOR UPDATE
//!   SKIP LOCKED`, an `UPDATE` and a read-back in one transaction.
//! * By default the server reports *changed* rows as affected, so an `UPDATE` that matches
//!   a row but writes the values it already has would report 0. sqlx always connects with
//!   the `CLIENT_FOUND_ROWS` capability, which makes the server report *matched* rows
//!   instead — the same meaning `rows_affected` has on SQLite and PostgreSQL, and the one
//!   the conditional updates below rely on. (Each of them also changes a value whenever
//!   it matches, so they stay correct even without that flag.)
//! * sqlx refuses to decode a column with a binary collation (`utf8mb4_bin`, which the
//!   unique and looked-up columns use) into a `String`: the server marks it BINARY and
//!   sqlx takes it for VARBINARY (sqlx issue #3387). Such columns are read through
//!   `CONVERT(… USING utf8mb4)`, which yields the same text under a non-binary collation.
//!
//! Row and gap locks can make concurrent requests deadlock; `lock_user` and
//! `retry_on_deadlock` below deal with that.
//!
//! And one quirk of sqlx: a transaction dropped without commit is rolled back later, by a task
//! that sqlx spawns when the connection goes back to the pool, and keeps its row and gap
//! locks until then (a claim straight after would skip rows that are in fact free). Every
//! path that returns without committing therefore rolls back explicitly; only after an
//! error is the rollback left to sqlx.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySql, MySqlConnection, MySqlPool, QueryBuilder, Transaction};

use super::hot::{BatchRead, Batched, HotConnections};
use super::{
    answers_by_number, lookup_column, lookup_index, shared, AuditEvent, AuditRecord, ImportUser,
    LiveCode, LiveResetToken, NewCode, NewOutbox, NewResetToken, NewSession, NewUser, OutboxItem,
    SessionRow, Store, StoreError, StoreResult, StoreStats, User, UserCodeRow, UserId,
    LOOKUP_COLUMNS,
};
use crate::config::DatabaseSettings;
use crate::domain::Identifier;

pub struct MySqlStore {
    pool: MySqlPool,
    /// Single-SELECT reads only (autocommit), so the pool's session settings
    /// (`after_connect`) do not matter on them.
    hot: Arc<HotConnections<sqlx::MySql>>,
    /// `find_user_with_live_code`, batched: one lane per lookup column.
    live_codes: [Arc<Batched<sqlx::MySql, LiveCodeLookup>>; 3],
}

/// The `User` columns; phone and password_hash are binary-collated (see the module doc).
const USER_COLUMNS: &str = "id, username, email, CONVERT(phone USING utf8mb4) AS phone, \
     CONVERT(password_hash USING utf8mb4) AS password_hash, created_at, disabled_at";
const SESSION_USER_COLUMNS: &str = "u.id, u.username, u.email, \
     CONVERT(u.phone USING utf8mb4) AS phone, \
     CONVERT(u.password_hash USING utf8mb4) AS password_hash, u.created_at, u.disabled_at, \
     s.id AS session_id, s.last_seen_at";
/// The `User` columns of `u` and the live code columns of `c`, aliased as `UserCodeRow`
/// reads them; the binary-collated ones converted as above.
const USER_CODE_COLUMNS: &str = "u.id, u.username, u.email, \
     CONVERT(u.phone USING utf8mb4) AS phone, \
     CONVERT(u.password_hash USING utf8mb4) AS password_hash, u.created_at, u.disabled_at, \
     c.id AS code_id, CONVERT(c.code_hash USING utf8mb4) AS code_hash, \
     c.attempts AS code_attempts";

impl MySqlStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        // The scheme is not checked by sqlx, so `mariadb://` parses like `mysql://`.
        let options = MySqlConnectOptions::from_str(&settings.database_url)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let options = super::quiet_statements(options);
        let hot = Arc::new(HotConnections::new(
            options.clone(),
            settings.database_read_connections,
            settings.database_timeout,
        ));
        let live_codes = LOOKUP_COLUMNS
            .map(|column| Batched::new(Arc::clone(&hot), LiveCodeLookup::new(column)));
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.database_max_connections.max(1))
            .acquire_timeout(settings.database_timeout)
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Without strict mode the server cuts an over-long value to fit and
                    // only warns; a cut key or hash would silently break lookups and
                    // uniqueness. Strict mode turns that into an error. (sqlx has already
                    // appended its own modes, so @@sql_mode is never empty here.)
                    conn.execute(
                        "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')",
                    )
                    .await?;
                    // READ COMMITTED takes no gap locks: under REPEATABLE READ, killing one
                    // user's old codes locks index gaps that other users' new codes insert
                    // into, and concurrent /forgot-password requests deadlock. Every rule we
                    // rely on is a row lock or a conditional UPDATE, which READ COMMITTED
                    // keeps; import_users asks for REPEATABLE READ explicitly.
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        // sqlx takes a named lock (GET_LOCK) around migrations, so instances starting
        // together do not both apply one.
        sqlx::migrate!("migrations/mysql").run(&pool).await?;
        Ok(MySqlStore {
            pool,
            hot,
            live_codes,
        })
    }

    /// The pool, for tools and tests that need raw SQL.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }
}

/// The user and their newest live code for many identifiers of one kind, in one
/// statement: what /validate-otp reads, batched (see `hot::Batched`) because a flood of
/// wrong guesses is otherwise one round trip per guess.
///
/// The keys go in as one JSON array of `[identifier, now]` pairs, which `JSON_TABLE`
/// (MySQL 8, MariaDB 10.6+) turns into rows numbered `FOR ORDINALITY`; each result row
/// carries its key's number, so an answer can only go to the request that asked for it.
/// The identifier column is declared utf8mb4_bin, the collation of the lookup columns, so
/// the join is an exact comparison through their unique index (`eq_ref`), read after the
/// keys. The code comes from a correlated subquery, `live_code`'s, run once per user on
/// otp_codes_user_id backwards without a filesort: MariaDB has no LATERAL join.
struct LiveCodeLookup {
    sql: String,
}

impl LiveCodeLookup {
    fn new(column: &'static str) -> Self {
        LiveCodeLookup {
            sql: format!(
                "SELECT CAST(q.n AS SIGNED) AS n, {USER_CODE_COLUMNS}
                 FROM JSON_TABLE(?, '$[*]' COLUMNS (
                     n FOR ORDINALITY,
                     identifier VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                         PATH '$[0]' ERROR ON EMPTY ERROR ON ERROR,
                     at_time BIGINT PATH '$[1]' ERROR ON EMPTY ERROR ON ERROR)) q
                 JOIN users u ON u.{column} = q.identifier
                 LEFT JOIN otp_codes c ON c.id = (
                     SELECT id FROM otp_codes
                     WHERE user_id = u.id AND used_at IS NULL AND expires_at > q.at_time
                     ORDER BY id DESC LIMIT 1)"
            ),
        }
    }
}

impl BatchRead<MySql> for LiveCodeLookup {
    type Key = (String, i64);
    type Value = UserCodeRow;

    fn run<'c>(
        &'c self,
        conn: &'c mut MySqlConnection,
        keys: &'c [(String, i64)],
    ) -> BoxFuture<'c, Result<Vec<Option<UserCodeRow>>, sqlx::Error>> {
        Box::pin(async move {
            let keys_json =
                serde_json::to_string(keys).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let rows = sqlx::query_as(&self.sql)
                .bind(keys_json)
                .fetch_all(conn)
                .await?;
            answers_by_number(rows, keys.len())
        })
    }
}

#[async_trait]
impl Store for MySqlStore {
    async fn server_secret(&self, candidate: &str) -> StoreResult<String> {
        // Not INSERT IGNORE: that would also turn any other error (a failed CHECK, a value
        // cut to fit) into a warning. The no-op update skips only the duplicate key.
        retry_on_deadlock(move || {
            sqlx::query(
                "INSERT INTO server_secret (id, secret) VALUES (1, ?)
                 ON DUPLICATE KEY UPDATE id = id",
            )
            .bind(candidate)
            .execute(&self.pool)
        })
        .await?;
        Ok(
            sqlx::query_scalar("SELECT secret FROM server_secret WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn create_user(&self, u: &NewUser<'_>) -> StoreResult<UserId> {
        let done = retry_on_deadlock(move || {
            sqlx::query(
                "INSERT INTO users (username, username_norm, email, email_norm, phone,
                                    password_hash, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(u.username.as_str())
            .bind(u.username.key())
            .bind(u.email.as_str())
            .bind(u.email.key())
            .bind(u.phone.map(|p| p.as_str()))
            .bind(u.password_hash)
            .bind(u.now)
            .bind(u.now)
            .execute(&self.pool)
        })
        .await?;
        // The id generated by this statement on this connection, from the OK packet:
        // no second query, and no race with other connections' inserts.
        i64::try_from(done.last_insert_id())
            .map_err(|_| sqlx::Error::Protocol("user id out of range".into()).into())
    }

    async fn find_user(&self, identifier: &Identifier) -> StoreResult<Option<User>> {
        let column = lookup_column(identifier);
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = ?");
        let query = sqlx::query_as(&sql).bind(identifier.key());
        self.hot.fetch_optional(query).await
    }

    async fn replace_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> StoreResult<bool> {
        // password_hash is utf8mb4_bin, so the comparison is exact.
        let done = retry_on_deadlock(move || {
            sqlx::query(
                "UPDATE users SET password_hash = ?, updated_at = ?
                 WHERE id = ? AND password_hash = ?",
            )
            .bind(new_hash)
            .bind(now)
            .bind(user_id)
            .bind(old_hash)
            .execute(&self.pool)
        })
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_session(&self, s: &NewSession<'_>, e: &AuditEvent<'_>) -> StoreResult<()> {
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(s.token_hash)
            .bind(s.user_id)
            .bind(s.now)
            .bind(s.now)
            .bind(s.expires_at)
            .execute(&mut *tx)
            .await?;
            insert_audit(&mut *tx, e).await?;
            tx.commit().await
        })
        .await?;
        Ok(())
    }

    async fn session_user(
        &self,
        token_hash: &str,
        now: i64,
        idle_cutoff: i64,
        touch_before: i64,
    ) -> StoreResult<Option<User>> {
        let sql = format!(
            "SELECT {SESSION_USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ? AND s.expires_at > ? AND s.last_seen_at > ?
               AND u.disabled_at IS NULL"
        );
        let query = sqlx::query_as(&sql)
            .bind(token_hash)
            .bind(now)
            .bind(idle_cutoff);
        let row: Option<SessionRow> = self.hot.fetch_optional(query).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        // A write (and its row lock and redo log) on every request would be wasted: the
        // idle clock only needs minute precision.
        if row.last_seen_at < touch_before {
            retry_on_deadlock(move || {
                sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(row.session_id)
                    .execute(&self.pool)
            })
            .await?;
        }
        Ok(Some(row.user))
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        retry_on_deadlock(move || {
            sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
                .bind(token_hash)
                .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn issue_code(&self, code: &NewCode<'_>, message: &NewOutbox<'_>) -> StoreResult<()> {
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            lock_user(&mut tx, code.user_id).await?;
            sqlx::query("UPDATE otp_codes SET used_at = ? WHERE user_id = ? AND used_at IS NULL")
                .bind(code.now)
                .bind(code.user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(shared::INSERT_CODE)
                .bind(code.user_id)
                .bind(code.code_hash)
                .bind(code.now)
                .bind(code.expires_at)
                .bind(code.channel)
                .bind(code.device)
                .execute(&mut *tx)
                .await?;
            enqueue(&mut tx, message).await?;
            tx.commit().await
        })
        .await
    }

    async fn live_code(&self, user_id: UserId, now: i64) -> StoreResult<Option<LiveCode>> {
        Ok(sqlx::query_as(
            "SELECT id, CONVERT(code_hash USING utf8mb4) AS code_hash, attempts FROM otp_codes
             WHERE user_id = ? AND used_at IS NULL AND expires_at > ?
             ORDER BY id DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn find_user_with_live_code(
        &self,
        identifier: &Identifier,
        now: i64,
    ) -> StoreResult<Option<(User, Option<LiveCode>)>> {
        let lane = &self.live_codes[lookup_index(identifier)];
        let row = lane.fetch((identifier.key().to_owned(), now)).await?;
        Ok(row.map(UserCodeRow::split))
    }

    async fn claim_attempt(&self, code_id: i64, now: i64, max_attempts: u32) -> StoreResult<bool> {
        // One statement: InnoDB locks the row, re-checks the condition on the latest
        // version and increments, so parallel guesses serialise on the row lock and at
        // most max_attempts of them see a matched row.
        let done = retry_on_deadlock(move || {
            sqlx::query(
                "UPDATE otp_codes SET attempts = attempts + 1
                 WHERE id = ? AND used_at IS NULL AND expires_at > ? AND attempts < ?",
            )
            .bind(code_id)
            .bind(now)
            .bind(i64::from(max_attempts))
            .execute(&self.pool)
        })
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_device_attempt(
        &self,
        code_id: i64,
        device: &str,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        let done = retry_on_deadlock(move || {
            sqlx::query(shared::CLAIM_DEVICE_ATTEMPT)
                .bind(code_id)
                .bind(device)
                .bind(now)
                .bind(i64::from(max_attempts))
                .execute(&self.pool)
        })
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn queue_message(&self, message: &NewOutbox<'_>) -> StoreResult<()> {
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            enqueue(&mut tx, message).await?;
            tx.commit().await
        })
        .await
    }

    async fn redeem_code(&self, code_id: i64, token: &NewResetToken<'_>) -> StoreResult<bool> {
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            lock_user(&mut tx, token.user_id).await?;
            let done = sqlx::query(
                "UPDATE otp_codes SET used_at = ?
                 WHERE id = ? AND used_at IS NULL AND expires_at > ?",
            )
            .bind(token.now)
            .bind(code_id)
            .bind(token.now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(shared::INSERT_TOKEN)
                .bind(token.user_id)
                .bind(token.token_hash)
                .bind(token.now)
                .bind(token.expires_at)
                .bind(code_id)
                .execute(&mut *tx)
                .await?;
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
        let found: Option<Option<String>> = sqlx::query_scalar(shared::LIVE_TOKEN)
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .fetch_optional(&self.pool)
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
    ) -> StoreResult<bool> {
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            // A second reset with the same token waits here for the first to commit, then
            // matches nothing below and writes nothing.
            lock_user(&mut tx, user_id).await?;
            let consumed = sqlx::query(
                "UPDATE reset_tokens SET used_at = ?
                 WHERE token_hash = ? AND user_id = ? AND used_at IS NULL AND expires_at > ?",
            )
            .bind(now)
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if consumed.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
                .bind(new_hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE reset_tokens SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
            )
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE otp_codes SET used_at = ? WHERE user_id = ? AND used_at IS NULL")
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            if let Some(channel) = proven {
                sqlx::query(shared::FORGET_PROOF)
                    .bind(user_id)
                    .bind(channel)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(shared::RECORD_PROOF)
                    .bind(channel)
                    .bind(channel)
                    .bind(now)
                    .bind(user_id)
                    .bind(channel)
                    .execute(&mut *tx)
                    .await?;
                if channel == "email" {
                    sqlx::query(shared::DROP_UNPROVEN_PHONE)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for message in notices {
                enqueue(&mut tx, message).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn proven_channels(&self, user_id: UserId) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(shared::PROVEN)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn claim_outbox(&self, now: i64, locked_until: i64) -> StoreResult<Option<OutboxItem>> {
        // Several instances poll the same table. FOR UPDATE locks the chosen row until
        // commit, and SKIP LOCKED makes a concurrent claimer pass over it (and over rows
        // another claimer holds) instead of waiting and then taking the same message.
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM outbox
                 WHERE status = 'pending' AND next_attempt_at <= ? AND locked_until <= ?
                 ORDER BY next_attempt_at, id LIMIT 1
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = id else {
                // The scan locked the rows it passed over (repeatable read keeps locks on
                // rows that did not match); free them now, not when sqlx gets round to it.
                tx.rollback().await?;
                return Ok(None);
            };
            sqlx::query("UPDATE outbox SET locked_until = ?, attempts = attempts + 1 WHERE id = ?")
                .bind(locked_until)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let item =
                sqlx::query_as("SELECT id, channel, payload, attempts FROM outbox WHERE id = ?")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok(Some(item))
        })
        .await
    }

    async fn outbox_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        retry_on_deadlock(move || {
            sqlx::query(
                "UPDATE outbox SET status = 'sent', sent_at = ?, payload = '', locked_until = 0,
                                   last_error = NULL
                 WHERE id = ?",
            )
            .bind(now)
            .bind(id)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> StoreResult<()> {
        retry_on_deadlock(move || {
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = ?, locked_until = 0, last_error = ?
                 WHERE id = ?",
            )
            .bind(next_attempt_at)
            .bind(error)
            .bind(id)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn outbox_failed(&self, id: i64, now: i64, error: &str) -> StoreResult<()> {
        retry_on_deadlock(move || {
            sqlx::query(
                "UPDATE outbox SET status = 'failed', payload = '', locked_until = 0,
                                   last_error = ?, sent_at = ?
                 WHERE id = ?",
            )
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64, sent_before: i64) -> StoreResult<u64> {
        // Each DELETE commits on its own: nothing needs the four to be atomic, and one
        // transaction would hold the row and gap locks of all four tables (blocking new
        // sessions and codes meanwhile) and could deadlock with a password reset that
        // locks the same tables in another order.
        let mut n = 0;
        for (sql, bound) in [
            ("DELETE FROM sessions WHERE expires_at <= ?", now),
            (
                "DELETE FROM otp_codes WHERE expires_at <= ? OR used_at IS NOT NULL",
                now,
            ),
            (
                "DELETE FROM reset_tokens WHERE expires_at <= ? OR used_at IS NOT NULL",
                now,
            ),
            (
                "DELETE FROM outbox WHERE status <> 'pending' AND sent_at <= ?",
                sent_before,
            ),
        ] {
            n += retry_on_deadlock(move || async move {
                sqlx::query(sql).bind(bound).execute(&self.pool).await
            })
            .await?
            .rows_affected();
        }
        Ok(n)
    }

    async fn list_users(&self, search: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        // The other backends match `%` and `_` as wildcards and every other character
        // literally (SQLite has no LIKE escape, PostgreSQL is given ESCAPE ''). MySQL's LIKE
        // treats `\` as an escape by default, and MariaDB keeps doing so under ESCAPE '', so
        // the escape is an explicit `!`, doubled in the pattern to stand for itself. The
        // *_norm columns and phone are utf8mb4_bin, so the match is exact on the lower-cased
        // pattern, as on the other backends (the stored keys are lower case already).
        let search = search.unwrap_or("").to_lowercase().replace('!', "!!");
        let pattern = format!("%{search}%");
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE username_norm LIKE ? ESCAPE '!' OR email_norm LIKE ? ESCAPE '!'
                OR COALESCE(phone, '') LIKE ? ESCAPE '!'
             ORDER BY id LIMIT ?"
        );
        Ok(sqlx::query_as(&sql)
            .bind(&pattern)
            .bind(&pattern)
            .bind(&pattern)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn set_disabled(&self, user_id: UserId, disabled_at: Option<i64>) -> StoreResult<bool> {
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            // Existence comes from the lock, not from the UPDATE's row count, so the answer
            // does not hinge on CLIENT_FOUND_ROWS (enabling an enabled user changes nothing).
            if !lock_user(&mut tx, user_id).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("UPDATE users SET disabled_at = ? WHERE id = ?")
                .bind(disabled_at)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            if disabled_at.is_some() {
                sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn revoke_sessions(&self, user_id: UserId) -> StoreResult<u64> {
        // One statement, no transaction: it takes only locks on the user's sessions, in
        // index order, as the DELETEs of the locking transactions do.
        Ok(retry_on_deadlock(move || {
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id)
                .execute(&self.pool)
        })
        .await?
        .rows_affected())
    }

    async fn set_password_hash(&self, user_id: UserId, hash: &str, now: i64) -> StoreResult<bool> {
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            // As in reset_password: a code issued or redeemed concurrently either commits
            // first (and is killed below) or waits for this to commit.
            if !lock_user(&mut tx, user_id).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
                .bind(hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            for sql in [
                "UPDATE reset_tokens SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
                "UPDATE otp_codes SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
            ] {
                sqlx::query(sql)
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn record_audit(&self, e: &AuditEvent<'_>) -> StoreResult<()> {
        retry_on_deadlock(move || insert_audit(&self.pool, e)).await?;
        Ok(())
    }

    async fn audit_for_user(
        &self,
        user_id: UserId,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        // The text columns have the table's default collation, but a server whose default
        // utf8mb4 collation is binary would make sqlx take them for VARBINARY (see the
        // module doc); CONVERT makes them decode as String either way.
        Ok(sqlx::query_as(
            "SELECT id, user_id, CONVERT(event USING utf8mb4) AS event,
                    CONVERT(ip USING utf8mb4) AS ip,
                    CONVERT(user_agent USING utf8mb4) AS user_agent, created_at
             FROM audit_events
             WHERE user_id = ? AND created_at >= ? ORDER BY created_at, id LIMIT ?",
        )
        .bind(user_id)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn purge_audit(&self, before: i64) -> StoreResult<u64> {
        // In batches, each committing on its own: one DELETE of a long backlog would hold
        // its next-key locks (up to the supremum, when every row is old) for the whole
        // run, and so block every audit insert meanwhile. ORDER BY on the index's full key
        // (created_at, then the primary key it carries) keeps each batch deterministic.
        let mut n = 0;
        loop {
            let done = retry_on_deadlock(move || {
                sqlx::query(
                    "DELETE FROM audit_events WHERE created_at < ?
                     ORDER BY created_at, id LIMIT ?",
                )
                .bind(before)
                .bind(PURGE_BATCH)
                .execute(&self.pool)
            })
            .await?
            .rows_affected();
            n += done;
            if done < PURGE_BATCH {
                return Ok(n);
            }
        }
    }

    async fn import_users(&self, users: &[ImportUser]) -> StoreResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        // Duplicates are skipped with `ON DUPLICATE KEY UPDATE id = id`, not INSERT IGNORE:
        // IGNORE would also turn strict mode's errors (a value too long, cut to fit) into
        // warnings and store the damaged row. The no-op update skips only duplicate keys,
        // on any unique index, against existing rows and earlier rows of the batch alike.
        //
        // The statement's row count cannot say how many rows went in: sqlx connects with
        // CLIENT_FOUND_ROWS, under which a skipped duplicate counts 1 (matched), just like
        // an inserted row. So the rows of the batch are counted before and after the insert
        // (by username_norm, which is unique, and which every inserted row carries), both
        // times with a locking read: under REPEATABLE READ the first one takes record and
        // gap locks on every one of those names, so until commit no other transaction can
        // add, remove or rename a row with one of them, and the difference is exactly what
        // this transaction inserted. The isolation level is set for the transaction, since
        // READ COMMITTED (a common server setting) takes no gap locks.
        //
        // The batch is sent in chunks so that no statement exceeds the protocol's 65,535
        // placeholders; all chunks share the one transaction.
        retry_on_deadlock(move || async move {
            let mut conn = self.pool.acquire().await?;
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await?;
            let mut tx = conn.begin().await?;
            let mut inserted = 0;
            for chunk in users.chunks(IMPORT_CHUNK) {
                let before = count_names(&mut tx, chunk).await?;
                let mut qb = QueryBuilder::<MySql>::new(
                    "INSERT INTO users (username, username_norm, email, email_norm, phone,
                                        password_hash, created_at, updated_at) ",
                );
                qb.push_values(chunk, |mut row, u| {
                    row.push_bind(&u.username)
                        .push_bind(&u.username_norm)
                        .push_bind(&u.email)
                        .push_bind(&u.email_norm)
                        .push_bind(&u.phone)
                        .push_bind(&u.password_hash)
                        .push_bind(u.created_at)
                        .push_bind(u.created_at);
                });
                qb.push(" ON DUPLICATE KEY UPDATE id = id");
                qb.build().execute(&mut *tx).await?;
                let after = count_names(&mut tx, chunk).await?;
                inserted += after.saturating_sub(before);
            }
            tx.commit().await?;
            Ok(inserted)
        })
        .await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        // Two index range counts on outbox_due (status, next_attempt_at).
        let (pending, failed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending'),
                    (SELECT COUNT(*) FROM outbox WHERE status = 'failed')",
        )
        .fetch_one(&self.pool)
        .await?;
        let (pool_idle, pool_in_use) = super::pool_usage(&self.pool);
        Ok(StoreStats {
            outbox_pending: pending,
            outbox_failed: failed,
            pool_idle,
            pool_in_use,
        })
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn stored_server_secret(&self) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT secret FROM server_secret WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn forget_server_secret(&self, secret: &str) -> StoreResult<bool> {
        // Compared as bytes: the column's collation ignores case and trailing spaces.
        let done = sqlx::query(
            "DELETE FROM server_secret WHERE id = 1 AND CAST(secret AS BINARY) = CAST(? AS BINARY)",
        )
        .bind(secret)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn users_after(&self, after_id: UserId, limit: u32) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > ? ORDER BY id LIMIT ?");
        Ok(sqlx::query_as(&sql)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn rekey_email(
        &self,
        user_id: UserId,
        old_norm: &str,
        new_norm: &str,
    ) -> StoreResult<bool> {
        // email_norm and address are utf8mb4_bin, so the comparisons are exact.
        retry_on_deadlock(move || async move {
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(shared::REKEY_EMAIL)
                .bind(new_norm)
                .bind(user_id)
                .bind(old_norm)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(shared::REKEY_PROOF)
                .bind(new_norm)
                .bind(user_id)
                .bind(old_norm)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}

/// Takes the user's row lock for the rest of the transaction: the transactions that
/// change a user's codes, tokens and sessions run one at a time per user.
///
/// Without it, two code issues for a user who has no unused code deadlock: both take the
/// same gap lock in their `UPDATE … WHERE user_id = ?` (gap locks do not conflict with each
/// other), then each waits for the other's to `INSERT` into that gap, and InnoDB fails one.
/// With it they queue. Every such transaction must take it first: a redemption holding its
/// code's row would otherwise wait for the user's row (its insert's foreign key check)
/// while an issue holding the user's row waits for the code's.
///
/// Returns whether the user exists.
async fn lock_user(tx: &mut Transaction<'_, MySql>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = ? FOR UPDATE")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(found.is_some())
}

/// How many audit rows one DELETE of `purge_audit` removes at most.
const PURGE_BATCH: u64 = 10_000;

/// How many users one INSERT of `import_users` carries: 8 placeholders each, well below the
/// 65,535 a prepared statement may have.
const IMPORT_CHUNK: usize = 1_000;

/// How many users have one of the chunk's usernames, with a shared lock on each of those
/// names (on the row, or on the gap where it would go); see `import_users`.
async fn count_names(
    tx: &mut Transaction<'_, MySql>,
    chunk: &[ImportUser],
) -> Result<u64, sqlx::Error> {
    let mut qb = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM users WHERE username_norm IN (");
    let mut names = qb.separated(", ");
    for u in chunk {
        names.push_bind(&u.username_norm);
    }
    qb.push(") LOCK IN SHARE MODE");
    let n: i64 = qb.build_query_scalar().fetch_one(&mut **tx).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// How many times a transaction is run in all when InnoDB keeps picking it as the victim
/// of a deadlock.
const DEADLOCK_TRIES: u32 = 4;

/// MySQL/MariaDB error 1213, ER_LOCK_DEADLOCK.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// Runs a write (one statement or a whole transaction), and runs it again when InnoDB
/// rolled it back to break a deadlock. `lock_user` rules out the deadlocks we know of;
/// under load others still occur now and then (the purge or a guess against a reset, say),
/// and the server's advice for them is to retry. A deadlock rolls back the whole
/// transaction (a lock wait timeout, by contrast, only the statement, and is not retried),
/// so running it again from the start is safe.
async fn retry_on_deadlock<T, F, Fut>(mut run: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 1;
    loop {
        match run().await {
            Err(e) if tries < DEADLOCK_TRIES && is_deadlock(&e) => tries += 1,
            done => return Ok(done?),
        }
    }
}

fn is_deadlock(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| e.number() == ER_LOCK_DEADLOCK),
        _ => false,
    }
}

async fn enqueue(tx: &mut Transaction<'_, MySql>, m: &NewOutbox<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (channel, payload, next_attempt_at, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(m.channel)
    .bind(m.payload)
    .bind(m.now)
    .bind(m.now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes one audit row, on the pool or inside a transaction.
async fn insert_audit<'e, E>(executor: E, e: &AuditEvent<'_>) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = MySql>,
{
    sqlx::query(
        "INSERT INTO audit_events (user_id, event, ip, user_agent, created_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(e.user_id)
    .bind(e.event)
    .bind(e.ip)
    .bind(e.user_agent)
    .bind(e.at)
    .execute(executor)
    .await?;
    Ok(())
}
