//! `PostgresStore`: the backend for several instances sharing one PostgreSQL database.
//!
//! Unlike SQLite there is no single writer to serialise on: many instances write at once,
//! each through its own pool. Every rule that must hold under concurrency is therefore one
//! conditional statement (PostgreSQL re-checks an UPDATE's WHERE clause against the newest
//! committed row after waiting for a row lock, so `attempts < max` or `used_at IS NULL`
//! cannot be passed twice), or a transaction that begins with such a statement, or, for the
//! outbox, a row lock taken with `SKIP LOCKED`. All statements run at the default READ
//! COMMITTED level, where each statement sees what committed before it started.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::hot::{BatchRead, Batched, HotConnections};
use super::{
    answers_by_number, lookup_column, lookup_index, shared, AuditEvent, AuditRecord, ImportUser,
    LiveCode, LiveResetToken, NewCode, NewOutbox, NewResetToken, NewSession, NewUser, OutboxItem,
    SessionRow, Store, StoreError, StoreResult, StoreStats, User, UserCodeRow, UserId,
    LOOKUP_COLUMNS,
};
use crate::config::DatabaseSettings;
use crate::domain::Identifier;

pub struct PostgresStore {
    pool: PgPool,
    hot: Arc<HotConnections<sqlx::Postgres>>,
    /// `find_user_with_live_code`, batched: one lane per lookup column.
    live_codes: [Arc<Batched<sqlx::Postgres, LiveCodeLookup>>; 3],
}

const USER_COLUMNS: &str = "id, username, email, phone, password_hash, created_at, disabled_at";
const SESSION_USER_COLUMNS: &str = "u.id, u.username, u.email, u.phone, u.password_hash, \
     u.created_at, u.disabled_at, s.id AS session_id, s.last_seen_at";
const USER_CODE_COLUMNS: &str = "u.id, u.username, u.email, u.phone, u.password_hash, \
     u.created_at, u.disabled_at, c.id AS code_id, c.code_hash, c.attempts AS code_attempts";

impl PostgresStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(&settings.database_url)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let options = super::quiet_statements(options);
        let hot = Arc::new(HotConnections::new(
            options.clone(),
            settings.database_read_connections,
            settings.database_timeout,
        ));
        let live_codes = LOOKUP_COLUMNS
            .map(|column| Batched::new(Arc::clone(&hot), LiveCodeLookup::new(column)));
        let pool = PgPoolOptions::new()
            // A pool of zero would make every request wait out the timeout.
            .max_connections(settings.database_max_connections.max(1))
            .acquire_timeout(settings.database_timeout)
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .connect_with(options)
            .await?;
        // sqlx takes an advisory lock around migrations, so instances starting together
        // apply each migration once.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PostgresStore {
            pool,
            hot,
            live_codes,
        })
    }

    /// The pool, for tools and tests that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The user and their newest live code for many identifiers of one kind, in one
/// statement: what /validate-otp reads, batched (see `hot::Batched`) because a flood of
/// wrong guesses is otherwise one PostgreSQL wake-up per guess (`bench/RESULTS.md`).
///
/// Each key is an identifier and the time its code must be live at; `WITH ORDINALITY`
/// numbers them, and each row carries its key's number, so an answer can only go to the
/// request that asked for it. The lateral subquery is `live_code`'s, with its plan (the
/// user's codes through otp_codes_user_id, newest first); LATERAL, not the correlated
/// `c.id = (SELECT id …)` that MariaDB needs, which costs PostgreSQL an extra subplan and
/// primary-key probe (pgbench: 19k against 25k single lookups per second).
struct LiveCodeLookup {
    sql: String,
}

impl LiveCodeLookup {
    fn new(column: &'static str) -> Self {
        LiveCodeLookup {
            sql: format!(
                "SELECT q.n, {USER_CODE_COLUMNS}
                 FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS q(identifier, now, n)
                 JOIN users u ON u.{column} = q.identifier
                 LEFT JOIN LATERAL (
                     SELECT id, code_hash, attempts FROM otp_codes
                     WHERE user_id = u.id AND used_at IS NULL AND expires_at > q.now
                     ORDER BY id DESC LIMIT 1) c ON TRUE"
            ),
        }
    }
}

impl BatchRead<sqlx::Postgres> for LiveCodeLookup {
    type Key = (String, i64);
    type Value = UserCodeRow;

    fn run<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        keys: &'c [(String, i64)],
    ) -> BoxFuture<'c, Result<Vec<Option<UserCodeRow>>, sqlx::Error>> {
        Box::pin(async move {
            let identifiers: Vec<&str> = keys.iter().map(|(id, _)| id.as_str()).collect();
            let nows: Vec<i64> = keys.iter().map(|&(_, now)| now).collect();
            let rows = sqlx::query_as(&self.sql)
                .bind(&identifiers)
                .bind(&nows)
                .fetch_all(conn)
                .await?;
            answers_by_number(rows, keys.len())
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn server_secret(&self, candidate: &str) -> StoreResult<String> {
        // Two instances starting at once both insert; the primary key lets exactly one
        // through and the other's insert does nothing, so both then read the winner's.
        sqlx::query(
            "INSERT INTO server_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT secret FROM server_secret WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn create_user(&self, u: &NewUser<'_>) -> StoreResult<UserId> {
        let id = sqlx::query_scalar(
            "INSERT INTO users (username, username_norm, email, email_norm, phone, password_hash, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(u.username.as_str())
        .bind(u.username.key())
        .bind(u.email.as_str())
        .bind(u.email.key())
        .bind(u.phone.map(|p| p.as_str()))
        .bind(u.password_hash)
        .bind(u.now)
        .bind(u.now)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn find_user(&self, identifier: &Identifier) -> StoreResult<Option<User>> {
        let column = lookup_column(identifier);
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
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
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4",
        )
        .bind(new_hash)
        .bind(now)
        .bind(user_id)
        .bind(old_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_session(&self, s: &NewSession<'_>, e: &AuditEvent<'_>) -> StoreResult<()> {
        // One statement, so one round trip and one commit for both rows.
        sqlx::query(
            "WITH s AS (
                 INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at)
                 VALUES ($1, $2, $3, $3, $4))
             INSERT INTO audit_events (user_id, event, ip, user_agent, created_at)
             VALUES ($5, $6, $7, $8, $9)",
        )
        .bind(s.token_hash)
        .bind(s.user_id)
        .bind(s.now)
        .bind(s.expires_at)
        .bind(e.user_id)
        .bind(e.event)
        .bind(e.ip)
        .bind(e.user_agent)
        .bind(e.at)
        .execute(&self.pool)
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
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3
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
        // Writing on every request would take a row lock per request; the idle clock only
        // needs minute precision. The condition is repeated in the UPDATE so that requests
        // racing on one session write once, and never move the clock backwards.
        if row.last_seen_at < touch_before {
            sqlx::query(
                "UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $3",
            )
            .bind(now)
            .bind(row.session_id)
            .bind(touch_before)
            .execute(&self.pool)
            .await?;
        }
        Ok(Some(row.user))
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn issue_code(&self, code: &NewCode<'_>, message: &NewOutbox<'_>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Two issues for one user at once would each kill only the codes committed before
        // they started, leaving both new codes live. Locking the user row first serialises
        // them per user, as SQLite's single writer does. NO KEY UPDATE (not UPDATE) so
        // that logins inserting sessions for this user, which only take a key-share lock
        // through the foreign key, are not held up.
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(code.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE otp_codes SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind(code.now)
            .bind(code.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&SQL.insert_code)
            .bind(code.user_id)
            .bind(code.code_hash)
            .bind(code.now)
            .bind(code.expires_at)
            .bind(code.channel)
            .bind(code.device)
            .execute(&mut *tx)
            .await?;
        enqueue(&mut tx, message).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn live_code(&self, user_id: UserId, now: i64) -> StoreResult<Option<LiveCode>> {
        Ok(sqlx::query_as(
            "SELECT id, code_hash, attempts FROM otp_codes
             WHERE user_id = $1 AND used_at IS NULL AND expires_at > $2
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
        // One statement: concurrent callers queue on the row lock and each re-checks
        // `attempts < max` against the count the previous one committed.
        let done = sqlx::query(
            "UPDATE otp_codes SET attempts = attempts + 1
             WHERE id = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3",
        )
        .bind(code_id)
        .bind(now)
        .bind(i64::from(max_attempts))
        .execute(&self.pool)
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
        let done = sqlx::query(&SQL.claim_device_attempt)
            .bind(code_id)
            .bind(device)
            .bind(now)
            .bind(i64::from(max_attempts))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn queue_message(&self, message: &NewOutbox<'_>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        enqueue(&mut tx, message).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_code(&self, code_id: i64, token: &NewResetToken<'_>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // The conditional UPDATE is the gate: a second redeemer waits for the first's
        // commit, then finds used_at set and matches no row.
        let done = sqlx::query(
            "UPDATE otp_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $3",
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
        sqlx::query(&SQL.insert_token)
            .bind(token.user_id)
            .bind(token.token_hash)
            .bind(token.now)
            .bind(token.expires_at)
            .bind(code_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn live_reset_token(
        &self,
        user_id: UserId,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<LiveResetToken>> {
        let found: Option<Option<String>> = sqlx::query_scalar(&SQL.live_token)
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
        let mut tx = self.pool.begin().await?;
        // Consuming the token first, conditionally, makes it the gate: of two resets with
        // one token, the second waits on the row lock and then matches nothing.
        let consumed = sqlx::query(
            "UPDATE reset_tokens SET used_at = $1
             WHERE token_hash = $2 AND user_id = $3 AND used_at IS NULL AND expires_at > $4",
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
        // This takes the user row lock that issue_code also takes, so a code issued
        // concurrently either commits first (and is killed below, each statement seeing
        // what committed before it) or waits until the reset is done.
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(new_hash)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE reset_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE otp_codes SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if let Some(channel) = proven {
            sqlx::query(&SQL.forget_proof)
                .bind(user_id)
                .bind(channel)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&SQL.record_proof)
                .bind(channel)
                .bind(channel)
                .bind(now)
                .bind(user_id)
                .bind(channel)
                .execute(&mut *tx)
                .await?;
            if channel == "email" {
                sqlx::query(&SQL.drop_unproven_phone)
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
    }

    async fn proven_channels(&self, user_id: UserId) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(&SQL.proven)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn claim_outbox(&self, now: i64, locked_until: i64) -> StoreResult<Option<OutboxItem>> {
        // Every instance's worker polls the same table. FOR UPDATE locks the chosen row
        // until this statement commits, and SKIP LOCKED makes a concurrent claimer pass
        // over it to the next due row instead of waiting for it (and then, on the re-check,
        // finding it leased and getting nothing). A row another claimer committed after
        // this statement's snapshot is re-checked on its newest version, where the raised
        // locked_until excludes it. So no two callers ever get the same message, and
        // workers never queue behind each other.
        Ok(sqlx::query_as(
            "WITH next AS (
                 SELECT id FROM outbox
                 WHERE status = 'pending' AND next_attempt_at <= $2 AND locked_until <= $2
                 ORDER BY next_attempt_at, id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE outbox o SET locked_until = $1, attempts = o.attempts + 1
             FROM next WHERE o.id = next.id
             RETURNING o.id, o.channel, o.payload, o.attempts",
        )
        .bind(locked_until)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn outbox_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'sent', sent_at = $1, payload = '', locked_until = 0, last_error = NULL
             WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, locked_until = 0, last_error = $2 WHERE id = $3",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_failed(&self, id: i64, now: i64, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'failed', payload = '', locked_until = 0, last_error = $1, sent_at = $2
             WHERE id = $3",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64, sent_before: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for (sql, bound) in [
            ("DELETE FROM sessions WHERE expires_at <= $1", now),
            (
                "DELETE FROM otp_codes WHERE expires_at <= $1 OR used_at IS NOT NULL",
                now,
            ),
            (
                "DELETE FROM reset_tokens WHERE expires_at <= $1 OR used_at IS NOT NULL",
                now,
            ),
            (
                "DELETE FROM outbox WHERE status <> 'pending' AND sent_at <= $1",
                sent_before,
            ),
        ] {
            n += sqlx::query(sql)
                .bind(bound)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn list_users(&self, search: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        // The *_norm columns are lower case already, so a lower-cased pattern matches
        // case-insensitively. `%` and `_` in the search stay wildcards, as in SQLite;
        // ESCAPE '' turns off PostgreSQL's default backslash escape, which SQLite lacks.
        let pattern = format!("%{}%", search.unwrap_or("").to_lowercase());
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE username_norm LIKE $1 ESCAPE '' OR email_norm LIKE $1 ESCAPE ''
                OR COALESCE(phone, '') LIKE $1 ESCAPE ''
             ORDER BY id LIMIT $2"
        );
        Ok(sqlx::query_as(&sql)
            .bind(pattern)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn set_disabled(&self, user_id: UserId, disabled_at: Option<i64>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
            .bind(disabled_at)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if disabled_at.is_some() {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_sessions(&self, user_id: UserId) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn set_password_hash(&self, user_id: UserId, hash: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Updating the user row first takes the lock issue_code takes, so a code issued
        // concurrently either commits first (and is killed below) or waits for this.
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        for sql in [
            "UPDATE reset_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL",
            "UPDATE otp_codes SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL",
        ] {
            sqlx::query(sql)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_audit(&self, e: &AuditEvent<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_events (user_id, event, ip, user_agent, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(e.user_id)
        .bind(e.event)
        .bind(e.ip)
        .bind(e.user_agent)
        .bind(e.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_for_user(
        &self,
        user_id: UserId,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, event, ip, user_agent, created_at FROM audit_events
             WHERE user_id = $1 AND created_at >= $2 ORDER BY created_at, id LIMIT $3",
        )
        .bind(user_id)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn purge_audit(&self, before: i64) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM audit_events WHERE created_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn import_users(&self, users: &[ImportUser]) -> StoreResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO users (username, username_norm, email, email_norm, phone, password_hash, created_at, updated_at) ",
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
        // No conflict target: a row colliding on any unique index, with an existing row or
        // an earlier row of this batch, is skipped rather than failing the statement.
        qb.push(" ON CONFLICT DO NOTHING");
        Ok(qb.build().execute(&self.pool).await?.rows_affected())
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        let (pending, failed): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status = 'pending'), COUNT(*) FILTER (WHERE status = 'failed')
             FROM outbox",
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
        let done = sqlx::query("DELETE FROM server_secret WHERE id = 1 AND secret = $1")
            .bind(secret)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn users_after(&self, after_id: UserId, limit: u32) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(&SQL.rekey_email)
            .bind(new_norm)
            .bind(user_id)
            .bind(old_norm)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(&SQL.rekey_proof)
            .bind(new_norm)
            .bind(user_id)
            .bind(old_norm)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn enqueue(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    m: &NewOutbox<'_>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox (channel, payload, next_attempt_at, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(m.channel)
    .bind(m.payload)
    .bind(m.now)
    .bind(m.now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The shared statements (`super::shared`) with PostgreSQL's numbered placeholders, built
/// once.
struct Statements {
    insert_code: String,
    claim_device_attempt: String,
    insert_token: String,
    live_token: String,
    forget_proof: String,
    record_proof: String,
    drop_unproven_phone: String,
    proven: String,
    rekey_email: String,
    rekey_proof: String,
}

static SQL: std::sync::LazyLock<Statements> = std::sync::LazyLock::new(|| Statements {
    insert_code: shared::numbered(shared::INSERT_CODE),
    claim_device_attempt: shared::numbered(shared::CLAIM_DEVICE_ATTEMPT),
    insert_token: shared::numbered(shared::INSERT_TOKEN),
    live_token: shared::numbered(shared::LIVE_TOKEN),
    forget_proof: shared::numbered(shared::FORGET_PROOF),
    record_proof: shared::numbered(shared::RECORD_PROOF),
    drop_unproven_phone: shared::numbered(shared::DROP_UNPROVEN_PHONE),
    proven: shared::numbered(shared::PROVEN),
    rekey_email: shared::numbered(shared::REKEY_EMAIL),
    rekey_proof: shared::numbered(shared::REKEY_PROOF),
});
