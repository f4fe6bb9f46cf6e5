//! A few PostgreSQL/MySQL connections kept out of the pool for the hottest reads: the
//! session check and the user (with their live code) by identifier.
//!
//! sqlx's pool pings every connection handed back to it — a whole extra round trip to the
//! database server per query, on both sides (`bench/RESULTS.md` has the profile). These
//! connections are never handed back to it, so a lookup is exactly one round trip. Reads
//! queue for them (first come, first served, at most `DATABASE_TIMEOUT`, then 503): on a
//! busy database server a few connections kept busy answer more reads than many that each
//! wake for one query, and the pool stays free for writes. A connection that idled a
//! second or more is pinged first, and one that fails is dropped and reopened on next use,
//! as the pool would.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::query::QueryAs;
use sqlx::{Connection, Database, Executor, FromRow, IntoArguments};
use tokio::sync::Semaphore;

use super::StoreResult;

pub(crate) struct HotConnections<DB: Database> {
    /// One permit per connection: holding one entitles a read to a connection.
    permits: Semaphore,
    /// Open connections not in use; fewer than the permits until all have been opened,
    /// and after a read was dropped mid-query (its connection goes with it).
    idle: Mutex<Vec<Hot<DB>>>,
    options: <DB::Connection as Connection>::Options,
    timeout: Duration,
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
{
    /// `count` connections (at least one), opened on first use. `timeout` bounds both the
    /// wait for a free one and opening one.
    pub fn new(
        options: <DB::Connection as Connection>::Options,
        count: u32,
        timeout: Duration,
    ) -> Self {
        HotConnections {
            permits: Semaphore::new(count.max(1) as usize),
            idle: Mutex::new(Vec::new()),
            options,
            timeout,
        }
    }

    /// Runs a single-row read on a hot connection, waiting for one to be free.
    pub async fn fetch_optional<'q, O, A>(
        &self,
        query: QueryAs<'q, DB, O, A>,
    ) -> StoreResult<Option<O>>
    where
        O: Send + Unpin + for<'r> FromRow<'r, DB::Row> + 'q,
        A: IntoArguments<'q, DB> + 'q,
    {
        let _permit = tokio::time::timeout(self.timeout, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // Most recently used first: under light load the others go stale and are pinged.
        let kept = self.idle().pop();
        // Out of the list while in use: a request dropped mid-query drops its connection
        // with it, instead of leaving one in an unknown state for the next.
        let kept = match kept {
            Some(mut hot) if hot.last_used.elapsed() >= STALE_AFTER => {
                hot.conn.ping().await.ok().map(|()| hot)
            }
            kept => kept,
        };
        let mut hot = match kept {
            Some(hot) => hot,
            None => Hot {
                conn: tokio::time::timeout(
                    self.timeout,
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
        self.idle().push(hot);
        Ok(row)
    }

    /// The idle list. Nothing panics while holding it, but a poisoned list is still a
    /// valid list of connections.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Hot<DB>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
