//! A few PostgreSQL/MySQL connections kept out of the pool for the hottest reads: the
//! session check and the user (with their live code) by identifier.
//!
//! sqlx's pool pings every connection handed back to it — a whole extra round trip to the
//! database server per query, on both sides (`bench/RESULTS.md` has the profile). These
//! connections are never handed back, so a lookup is exactly one round trip. When every
//! hot connection is busy the read goes through the pool instead, so they never become a
//! queue. A connection that idled a second or more is pinged first, and one that fails is
//! dropped and reopened on next use, as the pool would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::query::QueryAs;
use sqlx::{Connection, Database, Executor, FromRow, IntoArguments, Pool};
use tokio::sync::Mutex;

use super::StoreResult;

pub(crate) struct HotConnections<DB: Database> {
    slots: Vec<Mutex<Option<Hot<DB>>>>,
    next: AtomicUsize,
    options: <DB::Connection as Connection>::Options,
    connect_timeout: Duration,
}

struct Hot<DB: Database> {
    conn: DB::Connection,
    last_used: Instant,
}

/// Idle longer than this, a connection is pinged before use (see `super::ping_if_idle`).
const STALE_AFTER: Duration = Duration::from_secs(1);

impl<DB: Database> HotConnections<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    /// `count` connections, opened on first use.
    pub fn new(
        options: <DB::Connection as Connection>::Options,
        count: usize,
        connect_timeout: Duration,
    ) -> Self {
        HotConnections {
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            options,
            connect_timeout,
        }
    }

    /// Runs a single-row read on a free hot connection, or on `pool` if none is free.
    pub async fn fetch_optional<'q, O, A>(
        &self,
        pool: &Pool<DB>,
        query: QueryAs<'q, DB, O, A>,
    ) -> StoreResult<Option<O>>
    where
        O: Send + Unpin + for<'r> FromRow<'r, DB::Row> + 'q,
        A: IntoArguments<'q, DB> + 'q,
    {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(mut slot) = (0..n).find_map(|i| self.slots[(start + i) % n].try_lock().ok())
        else {
            return Ok(query.fetch_optional(pool).await?);
        };
        // Taken out while in use: a request dropped mid-query drops its connection with
        // it, instead of leaving one in an unknown state for the next.
        let kept = match slot.take() {
            Some(mut hot) if hot.last_used.elapsed() >= STALE_AFTER => {
                hot.conn.ping().await.ok().map(|()| hot)
            }
            kept => kept,
        };
        let mut hot = match kept {
            Some(hot) => hot,
            None => Hot {
                conn: tokio::time::timeout(
                    self.connect_timeout,
                    DB::Connection::connect_with(&self.options),
                )
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??,
                last_used: Instant::now(),
            },
        };
        // On error the connection is dropped: a fresh one next time costs little.
        let row = query.fetch_optional(&mut hot.conn).await?;
        hot.last_used = Instant::now();
        *slot = Some(hot);
        Ok(row)
    }
}
