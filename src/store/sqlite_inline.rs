//! The SQLite store's hot point lookups — the session check and the user (with their live
//! code) by identifier — run inline on the calling async worker through a few read-only
//! rusqlite connections.
//!
//! Measured on the benchmark (`bench/RESULTS.md`): through sqlx, every query is a round
//! trip to the connection's own thread, plus a ping to that thread when the pooled
//! connection is handed back, so at 64 concurrent session checks over half the server's
//! CPU went to waking threads. These lookups are a single indexed read of a few pages
//! that are in the page cache (tens of microseconds, and WAL readers never wait for the
//! writer), so running them where the request already is costs less than handing them
//! over. Everything else — writes, transactions, scans — stays on sqlx.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::{lookup_column, LiveCode, SessionRow, StoreError, StoreResult, User};
use crate::domain::Identifier;

/// A read that finds the database locked gives up quickly: it is holding an async worker.
const BUSY_TIMEOUT: Duration = Duration::from_millis(200);

const USER_COLUMNS: &str = "u.id, u.username, u.email, u.phone, u.password_hash, \
     u.created_at, u.disabled_at";

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

    pub fn session_user(
        &self,
        token_hash: &str,
        now: i64,
        idle_cutoff: i64,
    ) -> StoreResult<Option<SessionRow>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, s.id, s.last_seen_at FROM sessions s
             JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND s.last_seen_at > ?3
               AND u.disabled_at IS NULL"
        );
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&sql)?;
        Ok(statement
            .query_row(params![token_hash, now, idle_cutoff], |row| {
                Ok(SessionRow {
                    user: user(row)?,
                    session_id: row.get(7)?,
                    last_seen_at: row.get(8)?,
                })
            })
            .optional()?)
    }

    pub fn find_user(&self, identifier: &Identifier) -> StoreResult<Option<User>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.{} = ?1",
            lookup_column(identifier)
        );
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&sql)?;
        Ok(statement
            .query_row(params![identifier.key()], user)
            .optional()?)
    }

    /// The user and their newest live code in one read. The subquery walks
    /// otp_codes_user_id (user_id, id) backwards from the user's newest code, and the join
    /// reads the row it picks by rowid (SQLite has no LATERAL join).
    pub fn find_user_with_live_code(
        &self,
        identifier: &Identifier,
        now: i64,
    ) -> StoreResult<Option<(User, Option<LiveCode>)>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, c.id, c.code_hash, c.attempts FROM users u
             LEFT JOIN otp_codes c ON c.id = (
                 SELECT id FROM otp_codes
                 WHERE user_id = u.id AND used_at IS NULL AND expires_at > ?1
                 ORDER BY id DESC LIMIT 1)
             WHERE u.{} = ?2",
            lookup_column(identifier)
        );
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&sql)?;
        Ok(statement
            .query_row(params![now, identifier.key()], |row| {
                let code = match row.get::<_, Option<i64>>(7)? {
                    Some(id) => Some(LiveCode {
                        id,
                        code_hash: row.get(8)?,
                        attempts: row.get(9)?,
                    }),
                    None => None,
                };
                Ok((user(row)?, code))
            })
            .optional()?)
    }
}

/// The first seven columns, in `USER_COLUMNS` order.
fn user(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        phone: row.get(3)?,
        password_hash: row.get(4)?,
        created_at: row.get(5)?,
        disabled_at: row.get(6)?,
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
        let started = std::time::Instant::now();
        let err = readers
            .find_user(&Identifier::parse("alice").unwrap())
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5), // bounded by BUSY_TIMEOUT, not a hang
            "{:?}",
            started.elapsed()
        );
        drop(holder);
        assert!(readers
            .find_user(&Identifier::parse("alice").unwrap())
            .unwrap()
            .is_none());
    }
}
