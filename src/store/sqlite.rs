//! `SqliteStore`: the default, single-machine backend on one SQLite file.
//!
//! SQLite allows one writer at a time, and a transaction that starts reading and then
//! writes can fail with SQLITE_BUSY instead of waiting. So writes and transactions go
//! through a pool of exactly one connection (they queue in Rust, fairly, instead of
//! spinning on the file lock), while reads use a separate pool and, in WAL mode, never
//! wait for the writer. The hottest point lookups skip the pool altogether and read inline
//! (`sqlite_inline.rs`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

use super::sqlite_inline::InlineReaders;
use super::{
    shared, AuditEvent, AuditRecord, ImportUser, LiveCode, LiveResetToken, NewCode, NewOutbox,
    NewResetToken, NewSession, NewUser, OutboxItem, Store, StoreError, StoreResult, StoreStats,
    User, UserId,
};
use crate::config::DatabaseSettings;
use crate::domain::Identifier;
use crate::private_file;

pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    /// The hot point lookups (session check, user by identifier) read here, inline.
    inline: InlineReaders,
}

const USER_COLUMNS: &str = "id, username, email, phone, password_hash, created_at, disabled_at";

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(&settings.database_url)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        if let Some(path) = on_disk(&options) {
            // Created private before SQLite creates it with the umask's mode; the -wal and
            // -shm files SQLite adds later take the database file's mode.
            private_file::create_if_missing(&path)?;
            for file in database_files(&path) {
                private_file::check(&file)?;
            }
        }
        let options = super::quiet_statements(options)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a process crash (kill -9) without loss; only an
            // OS crash or power cut can drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Another process holding the write lock (a backup, a stuck tool) must turn
            // into a prompt 503, not a request that hangs: wait at most half the budget.
            .busy_timeout(settings.database_timeout / 2);
        // An in-process connection cannot go stale: no ping before handing one out.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(settings.database_timeout)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(settings.database_max_connections.max(1))
            .test_before_acquire(false)
            .acquire_timeout(settings.database_timeout)
            .connect_with(options.clone().read_only(true))
            .await?;
        let inline = InlineReaders::open(options.get_filename())?;
        Ok(SqliteStore {
            write,
            read,
            inline,
        })
    }

    /// The writer pool, for tools and tests that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.write
    }
}

/// The database file a `sqlite:` URL names, or `None` for an in-memory database (or a URL
/// that does not parse, which `connect` reports).
pub fn database_path(url: &str) -> Option<PathBuf> {
    on_disk(&SqliteConnectOptions::from_str(url).ok()?)
}

fn on_disk(options: &SqliteConnectOptions) -> Option<PathBuf> {
    let in_memory = options
        .to_url_lossy()
        .query_pairs()
        .any(|(key, value)| key == "mode" && value == "memory");
    (!in_memory).then(|| options.get_filename().to_owned())
}

/// The database file and the two SQLite keeps beside it in WAL mode; each holds rows.
pub fn database_files(path: &Path) -> [PathBuf; 3] {
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_owned(), with_suffix("-wal"), with_suffix("-shm")]
}

#[async_trait]
impl Store for SqliteStore {
    async fn server_secret(&self, candidate: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO server_secret (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .execute(&self.write)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT secret FROM server_secret WHERE id = 1")
                .fetch_one(&self.write)
                .await?,
        )
    }

    async fn create_user(&self, u: &NewUser<'_>) -> StoreResult<UserId> {
        let id = sqlx::query_scalar(
            "INSERT INTO users (username, username_norm, email, email_norm, phone, password_hash, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(u.username.as_str())
        .bind(u.username.key())
        .bind(u.email.as_str())
        .bind(u.email.key())
        .bind(u.phone.map(|p| p.as_str()))
        .bind(u.password_hash)
        .bind(u.now)
        .bind(u.now)
        .fetch_one(&self.write)
        .await?;
        Ok(id)
    }

    async fn find_user(&self, identifier: &Identifier) -> StoreResult<Option<User>> {
        self.inline.find_user(identifier)
    }

    async fn replace_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ? AND password_hash = ?",
        )
        .bind(new_hash)
        .bind(now)
        .bind(user_id)
        .bind(old_hash)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_session(&self, s: &NewSession<'_>, e: &AuditEvent<'_>) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
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
        tx.commit().await?;
        Ok(())
    }

    async fn session_user(
        &self,
        token_hash: &str,
        now: i64,
        idle_cutoff: i64,
        touch_before: i64,
    ) -> StoreResult<Option<User>> {
        let Some(row) = self.inline.session_user(token_hash, now, idle_cutoff)? else {
            return Ok(None);
        };
        // Writing on every request would serialise all session checks behind the one
        // writer; the idle clock only needs minute precision.
        if row.last_seen_at < touch_before {
            sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id = ?")
                .bind(now)
                .bind(row.session_id)
                .execute(&self.write)
                .await?;
        }
        Ok(Some(row.user))
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn issue_code(&self, code: &NewCode<'_>, message: &NewOutbox<'_>) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
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
        tx.commit().await?;
        Ok(())
    }

    async fn live_code(&self, user_id: UserId, now: i64) -> StoreResult<Option<LiveCode>> {
        Ok(sqlx::query_as(
            "SELECT id, code_hash, attempts FROM otp_codes
             WHERE user_id = ? AND used_at IS NULL AND expires_at > ?
             ORDER BY id DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(now)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn find_user_with_live_code(
        &self,
        identifier: &Identifier,
        now: i64,
    ) -> StoreResult<Option<(User, Option<LiveCode>)>> {
        self.inline.find_user_with_live_code(identifier, now)
    }

    async fn claim_attempt(&self, code_id: i64, now: i64, max_attempts: u32) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE otp_codes SET attempts = attempts + 1
             WHERE id = ? AND used_at IS NULL AND expires_at > ? AND attempts < ?",
        )
        .bind(code_id)
        .bind(now)
        .bind(i64::from(max_attempts))
        .execute(&self.write)
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
        let done = sqlx::query(shared::CLAIM_DEVICE_ATTEMPT)
            .bind(code_id)
            .bind(device)
            .bind(now)
            .bind(i64::from(max_attempts))
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn queue_message(&self, message: &NewOutbox<'_>) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        enqueue(&mut tx, message).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_code(&self, code_id: i64, token: &NewResetToken<'_>) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE otp_codes SET used_at = ? WHERE id = ? AND used_at IS NULL AND expires_at > ?",
        )
        .bind(token.now)
        .bind(code_id)
        .bind(token.now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
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
            .fetch_optional(&self.read)
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
        let mut tx = self.write.begin().await?;
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
        set_hash_and_revoke(&mut tx, user_id, new_hash, now).await?;
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
    }

    async fn proven_channels(&self, user_id: UserId) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(shared::PROVEN)
            .bind(user_id)
            .fetch_all(&self.read)
            .await?)
    }

    async fn claim_outbox(&self, now: i64, locked_until: i64) -> StoreResult<Option<OutboxItem>> {
        // One statement on the single writer connection: the claim is atomic.
        Ok(sqlx::query_as(
            "UPDATE outbox SET locked_until = ?, attempts = attempts + 1
             WHERE id = (SELECT id FROM outbox
                         WHERE status = 'pending' AND next_attempt_at <= ? AND locked_until <= ?
                         ORDER BY next_attempt_at, id LIMIT 1)
             RETURNING id, channel, payload, attempts",
        )
        .bind(locked_until)
        .bind(now)
        .bind(now)
        .fetch_optional(&self.write)
        .await?)
    }

    async fn outbox_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'sent', sent_at = ?, payload = '', locked_until = 0, last_error = NULL
             WHERE id = ?",
        )
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = ?, locked_until = 0, last_error = ? WHERE id = ?",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn outbox_failed(&self, id: i64, now: i64, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'failed', payload = '', locked_until = 0, last_error = ?, sent_at = ?
             WHERE id = ?",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64, sent_before: i64) -> StoreResult<u64> {
        let mut tx = self.write.begin().await?;
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
        let pattern = format!("%{}%", search.unwrap_or("").to_lowercase());
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE username_norm LIKE ?1 OR email_norm LIKE ?1 OR COALESCE(phone, '') LIKE ?1
             ORDER BY id LIMIT ?2"
        );
        Ok(sqlx::query_as(&sql)
            .bind(pattern)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?)
    }

    async fn set_disabled(&self, user_id: UserId, disabled_at: Option<i64>) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled_at = ? WHERE id = ?")
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
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_sessions(&self, user_id: UserId) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(&self.write)
            .await?
            .rows_affected())
    }

    async fn set_password_hash(&self, user_id: UserId, hash: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let found = set_hash_and_revoke(&mut tx, user_id, hash, now).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn record_audit(&self, e: &AuditEvent<'_>) -> StoreResult<()> {
        insert_audit(&self.write, e).await?;
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
             WHERE user_id = ? AND created_at >= ? ORDER BY created_at, id LIMIT ?",
        )
        .bind(user_id)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?)
    }

    async fn purge_audit(&self, before: i64) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM audit_events WHERE created_at < ?")
            .bind(before)
            .execute(&self.write)
            .await?
            .rows_affected())
    }

    async fn import_users(&self, users: &[ImportUser]) -> StoreResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
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
        // Any unique index: a duplicate is skipped, not an error.
        qb.push(" ON CONFLICT DO NOTHING");
        Ok(qb.build().execute(&self.write).await?.rows_affected())
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        let (pending, failed): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'failed'), 0) FROM outbox",
        )
        .fetch_one(&self.read)
        .await?;
        let (read_idle, read_in_use) = super::pool_usage(&self.read);
        let (write_idle, write_in_use) = super::pool_usage(&self.write);
        Ok(StoreStats {
            outbox_pending: pending,
            outbox_failed: failed,
            pool_idle: read_idle + write_idle,
            pool_in_use: read_in_use + write_in_use,
        })
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.read)
        .await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        // Readers keep working while something else holds the write lock, so readiness
        // checks that this instance can actually write: take the lock and let it go.
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("SELECT 1").execute(&mut *tx).await?;
        tx.rollback().await?;
        Ok(())
    }

    async fn stored_server_secret(&self) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT secret FROM server_secret WHERE id = 1")
                .fetch_optional(&self.write)
                .await?,
        )
    }

    async fn forget_server_secret(&self, secret: &str) -> StoreResult<bool> {
        let mut conn = self.write.acquire().await?;
        // secure_delete zeroes the row's bytes on its page instead of only unlinking it,
        // and the TRUNCATE checkpoint writes that page over the database file's copy and
        // empties the WAL, so the secret is left in neither file.
        let before: i64 = sqlx::query_scalar("PRAGMA secure_delete")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *conn)
            .await?;
        let deleted = sqlx::query("DELETE FROM server_secret WHERE id = 1 AND secret = ?")
            .bind(secret)
            .execute(&mut *conn)
            .await;
        sqlx::query(&format!("PRAGMA secure_delete = {before}"))
            .execute(&mut *conn)
            .await?;
        let deleted = deleted?.rows_affected() == 1;
        if deleted {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await?;
        }
        Ok(deleted)
    }

    async fn users_after(&self, after_id: UserId, limit: u32) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > ? ORDER BY id LIMIT ?");
        Ok(sqlx::query_as(&sql)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?)
    }

    async fn rekey_email(
        &self,
        user_id: UserId,
        old_norm: &str,
        new_norm: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(shared::REKEY_EMAIL)
            .bind(new_norm)
            .bind(user_id)
            .bind(old_norm)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
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
    }
}

/// Sets a user's password hash and revokes everything the old password let anyone hold:
/// sessions, unused codes, unused reset tokens. Part of a caller's transaction; returns
/// whether the user exists.
async fn set_hash_and_revoke(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    user_id: UserId,
    hash: &str,
    now: i64,
) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
        .bind(hash)
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for sql in [
        "UPDATE reset_tokens SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
        "UPDATE otp_codes SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
    ] {
        sqlx::query(sql)
            .bind(now)
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM sessions WHERE user_id = ?")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn enqueue(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    m: &NewOutbox<'_>,
) -> StoreResult<()> {
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

/// Writes one audit row, on the writer or inside one of its transactions.
async fn insert_audit<'e, E>(executor: E, e: &AuditEvent<'_>) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO audit_events (user_id, event, ip, user_agent, created_at) VALUES (?, ?, ?, ?, ?)",
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
