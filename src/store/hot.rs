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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::query::QueryAs;
use sqlx::{Connection, Database, Executor, FromRow, IntoArguments};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreResult;

pub(crate) struct HotConnections<DB: Database> {
    /// One permit per connection: holding one entitles a read to a connection.
    permits: Arc<Semaphore>,
    /// Open connections not in use; fewer than the permits until all have been opened,
    /// and after a read was dropped mid-query (its connection goes with it).
    idle: Mutex<Vec<Hot<DB>>>,
    options: <DB::Connection as Connection>::Options,
    timeout: Duration,
}

pub(crate) struct Hot<DB: Database> {
    pub conn: DB::Connection,
    last_used: Instant,
}

/// Idle longer than this, a connection is pinged before use (see `super::ping_if_idle`).
const STALE_AFTER: Duration = Duration::from_secs(1);

impl<DB: Database> HotConnections<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// `DATABASE_READ_CONNECTIONS` connections (at least one), opened on first use.
    /// `DATABASE_TIMEOUT` bounds both the wait for a free one and opening one.
    pub fn new(
        options: <DB::Connection as Connection>::Options,
        settings: &crate::config::DatabaseSettings,
    ) -> Self {
        let count = settings.database_read_connections.max(1) as usize;
        HotConnections {
            permits: Arc::new(Semaphore::new(count)),
            idle: Mutex::new(Vec::new()),
            options,
            timeout: settings.database_timeout,
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
        let _permit = self.permit().await?;
        let mut hot = self.take().await?;
        // On error the connection is dropped: a fresh one next time costs little.
        let row = query.fetch_optional(&mut hot.conn).await?;
        self.put_back(hot);
        Ok(row)
    }

    /// The right to use one connection, waited for at most `timeout`.
    async fn permit(&self) -> StoreResult<OwnedSemaphorePermit> {
        Ok(
            tokio::time::timeout(self.timeout, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?,
        )
    }

    /// A connection for the holder of a permit: the most recently used idle one (under
    /// light load the others go stale and are pinged), or a new one. It stays out of the
    /// list while in use, so a read dropped mid-query drops its connection with it instead
    /// of leaving one in an unknown state for the next.
    async fn take(&self) -> StoreResult<Hot<DB>> {
        let kept = self.idle().pop();
        let kept = match kept {
            Some(mut hot) if hot.last_used.elapsed() >= STALE_AFTER => {
                hot.conn.ping().await.ok().map(|()| hot)
            }
            kept => kept,
        };
        match kept {
            Some(hot) => Ok(hot),
            None => Ok(Hot {
                conn: tokio::time::timeout(
                    self.timeout,
                    DB::Connection::connect_with(&self.options),
                )
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??,
                last_used: Instant::now(),
            }),
        }
    }

    fn put_back(&self, mut hot: Hot<DB>) {
        hot.last_used = Instant::now();
        self.idle().push(hot);
    }

    /// The idle list. Nothing panics while holding it, but a poisoned list is still a
    /// valid list of connections.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Hot<DB>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
