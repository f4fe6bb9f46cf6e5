//! `SqliteStore`: the default, single-machine backend on one SQLite file.
//!
//! SQLite allows one writer at a time, and a transaction that starts reading and then
//! writes can fail with SQLITE_BUSY instead of waiting. So writes and transactions go
//! through a pool of exactly one connection (they queue in Rust, fairly, instead of
//! spinning on the file lock), while reads use a separate pool and, in WAL mode, never
//! wait for the writer. The hottest point lookups skip the pool altogether and read inline
//! (`sqlite_inline.rs`). This file holds only what SQLite does its own way; the statements
//! are in `sql.rs`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Sqlite, SqlitePool};

use super::sql::{self, Dialect, PointReads, SqlStore};
use super::sqlite_inline::InlineReaders;
use super::{ImportUser, OutboxItem, StoreError, StoreResult};
use crate::config::DatabaseSettings;
use crate::private_file;

pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const SLOT: usize = 0;
    /// None needed: every write goes through the single writer connection, inside a
    /// transaction that holds SQLite's write lock from its start (`BEGIN`, below).
    const LOCK_ROW: &'static str = "";
    /// IMMEDIATE takes the write lock at BEGIN: a deferred transaction that reads first
    /// could find another process (a backup, a tool) writing when it upgrades, and fail
    /// with SQLITE_BUSY instead of waiting for the busy timeout.
    const BEGIN: Option<&'static str> = Some("BEGIN IMMEDIATE");
    /// The default's shape, with the code's row reached through otp_codes_user_id by name
    /// (`INDEXED BY`), so that no statistics can turn the lookup into a scan. Statistics
    /// taken while otp_codes held one row (an ANALYZE after the first registration: the
    /// production benchmark seeds accounts and then analyses) made the planner scan every
    /// code and run the correlated subquery for each: 12 ms per /validate-otp at 10,000
    /// accounts instead of 25 µs, which took P3 from 2,385 to 144 requests a second.
    const USER_WITH_LIVE_CODE: &'static str = "SELECT {user}, c.id AS code_id, {code_hash},
            c.attempts AS code_attempts, c.address AS code_address
        FROM users u LEFT JOIN otp_codes c INDEXED BY otp_codes_user_id
            ON c.user_id = u.id AND c.id = (
                SELECT id FROM otp_codes
                WHERE user_id = u.id AND used_at IS NULL AND expires_at > ? AND purpose = ?
                ORDER BY id DESC LIMIT 1)
        WHERE u.{column} = ?";

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn claim_outbox(
        pool: &SqlitePool,
        now: i64,
        locked_until: i64,
    ) -> BoxFuture<'_, StoreResult<Option<OutboxItem>>> {
        // One statement on the single writer connection: the claim is atomic.
        Box::pin(async move {
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
            .fetch_optional(pool)
            .await?)
        })
    }

    fn import_users<'a>(
        pool: &'a SqlitePool,
        users: &'a [ImportUser],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        // Any unique index: a duplicate is skipped, not an error, and not counted.
        Box::pin(async move {
            let done = sql::insert_users::<Sqlite>(users)
                .build()
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn forget_server_secret<'a>(
        pool: &'a SqlitePool,
        secret: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        // secure_delete zeroes the row's bytes on its page instead of only unlinking it,
        // and the TRUNCATE checkpoint writes that page over the database file's copy and
        // empties the WAL, so the secret is left in neither file.
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            let before: i64 = sqlx::query_scalar("PRAGMA secure_delete")
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(&mut *conn)
                .await?;
            let deleted = sql::delete_secret(&mut *conn, secret).await;
            sqlx::query(&format!("PRAGMA secure_delete = {before}"))
                .execute(&mut *conn)
                .await?;
            if deleted? {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await?;
                return Ok(true);
            }
            Ok(false)
        })
    }
}

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
        // The hot point lookups (session check, user by identifier) read inline.
        let inline = InlineReaders::open(options.get_filename())?;
        Ok(SqlStore::new(write, Some(read), PointReads::Inline(inline)))
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
