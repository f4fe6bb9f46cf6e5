//! The SQLite store's hot point reads — the session check and the user (with their live
//! code) by identifier — run inline on the calling async worker through a few read-only
//! rusqlite connections, with the statements `sql.rs` writes for every database.
//!
//! Through sqlx every query is a round trip to the connection's own thread, plus a wake-up
//! of that thread when the pooled connection is handed back: at 64 concurrent session
//! checks over half the server's CPU went to waking threads. These reads are one indexed
//! lookup of a few pages in the page cache (tens of microseconds, and WAL readers never
//! wait for the writer), so running them where the request already is costs less than
//! handing them over. Under production load (`bench/RESULTS.md`, P1) this doubles the
//! session checks a core answers: 60k against 30k per second on two cores, p99 2.9 against
//! 4.5 ms. Everything else — writes, transactions, scans — stays on sqlx.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Params, Row};

use super::{SessionRow, StoreError, StoreResult, User, UserCodeRow};

/// A read that finds the database locked gives up quickly: it is holding an async worker.
const BUSY_TIMEOUT: Duration = Duration::from_millis(200);

pub struct InlineReaders {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl InlineReaders {
    /// One connection per async worker thread: that many lookups can run at once.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get());
        let conns = (0..count)
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(Mutex::new(conn))
            })
            .collect::<StoreResult<_>>()?;
        Ok(InlineReaders {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, else waits for one (each is held for one
    /// lookup).
    fn conn(&self) -> MutexGuard<'_, Connection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(conn) = self.conns[(start + i) % n].try_lock() {
                return conn;
            }
        }
        // A connection is only poisoned if a lookup panicked; the connection itself is fine.
        self.conns[start % n]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first row `sql` (a statement of `sql.rs`, expanded for SQLite) reads with
    /// `params`, through `map`.
    pub fn row<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(sql)?;
        Ok(statement.query_row(params, map).optional()?)
    }
}

/// A `User` from the `{user}` columns a row starts with.
pub fn user(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        phone: row.get(3)?,
        password_hash: row.get(4)?,
        created_at: row.get(5)?,
        disabled_at: row.get(6)?,
        email_verified: row.get(7)?,
        phone_verified: row.get(8)?,
        totp_enabled: row.get(9)?,
        passkey_count: row.get(10)?,
        recovery_codes_left: row.get(11)?,
    })
}

/// A `SessionRow`: the user's columns, then `session_id` and `last_seen_at`.
pub fn session(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        user: user(row)?,
        session_id: row.get("session_id")?,
        last_seen_at: row.get("last_seen_at")?,
        aal: row.get("aal")?,
        proved_at: row.get("proved_at")?,
    })
}

/// A `UserCodeRow`: the user's columns, then the live code's, NULL when there is none.
pub fn user_code(row: &Row<'_>) -> rusqlite::Result<UserCodeRow> {
    Ok(UserCodeRow {
        user: user(row)?,
        code_id: row.get("code_id")?,
        code_hash: row.get("code_hash")?,
        code_attempts: row.get("code_attempts")?,
        code_address: row.get("code_address")?,
    })
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            // Locked, busy, unreadable or gone: an outage, answered with 503.
            Some(
                DatabaseBusy | DatabaseLocked | SystemIoFailure | CannotOpen | NotADatabase
                | DatabaseCorrupt | OutOfMemory,
            ) => StoreError::Unavailable(e.into()),
            _ => StoreError::Database(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_database_is_an_outage_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        // Rollback-journal mode (not WAL), so an exclusive lock shuts readers out.
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, email TEXT,
                     phone TEXT, password_hash TEXT, created_at INTEGER, disabled_at INTEGER,
                     username_norm TEXT, email_norm TEXT);
                 PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;",
            )
            .unwrap();
        let readers = InlineReaders::open(&path).unwrap();
        let lookup = || {
            readers.row(
                "SELECT id, username, email, phone, password_hash, created_at, disabled_at
                 FROM users WHERE username_norm = ?",
                ["alice"],
                user,
            )
        };
        let started = std::time::Instant::now();
        let err = lookup().unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5), // bounded by BUSY_TIMEOUT, not a hang
            "{:?}",
            started.elapsed()
        );
        drop(holder);
        assert!(lookup().unwrap().is_none());
    }
}
