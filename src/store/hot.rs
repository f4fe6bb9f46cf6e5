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
//!
//! A read that many requests make at once with different keys can also be *batched*
//! ([`Batched`]): requests queue their keys, and up to one drainer task per kept
//! connection answers everything queued so far with one statement. Under light load a
//! batch holds one key and costs what a lone read does; under a flood one round trip
//! answers dozens of requests, which is where a database server's CPU goes otherwise
//! (waking a backend per query: `bench/RESULTS.md`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::query::QueryAs;
use sqlx::{Connection, Database, Executor, FromRow, IntoArguments};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{StoreError, StoreResult};

pub(crate) struct HotConnections<DB: Database> {
    /// One permit per connection: holding one entitles a read to a connection.
    permits: Arc<Semaphore>,
    count: usize,
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
    /// `count` connections (at least one), opened on first use. `timeout` bounds both the
    /// wait for a free one and opening one.
    pub fn new(
        options: <DB::Connection as Connection>::Options,
        count: u32,
        timeout: Duration,
    ) -> Self {
        let count = count.max(1) as usize;
        HotConnections {
            permits: Arc::new(Semaphore::new(count)),
            count,
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

/// A read that answers many keys in one statement.
pub(crate) trait BatchRead<DB: Database>: Send + Sync + 'static {
    type Key: Send + Sync + 'static;
    type Value: Send + Sync + 'static;

    /// Answers every key, in order: element `i` of the result is `keys[i]`'s row, if any.
    fn run<'c>(
        &'c self,
        conn: &'c mut DB::Connection,
        keys: &'c [Self::Key],
    ) -> BoxFuture<'c, Result<Vec<Option<Self::Value>>, sqlx::Error>>;
}

/// Most keys answered by one statement.
const MAX_BATCH: usize = 64;

/// Batched reads of one kind on the hot connections (see the module's documentation).
pub(crate) struct Batched<DB: Database, Q: BatchRead<DB>> {
    hot: Arc<HotConnections<DB>>,
    query: Q,
    lane: Mutex<Lane<Q::Key, Q::Value>>,
}

struct Lane<K, V> {
    queue: VecDeque<Waiting<K, V>>,
    /// Drainer tasks alive (waiting for a connection or answering batches); at most one
    /// per hot connection. Whenever the queue is not empty there is at least one.
    drainers: usize,
}

struct Waiting<K, V> {
    key: K,
    since: Instant,
    reply: oneshot::Sender<StoreResult<Option<V>>>,
}

impl<DB, Q> Batched<DB, Q>
where
    DB: Database,
    Q: BatchRead<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub fn new(hot: Arc<HotConnections<DB>>, query: Q) -> Arc<Self> {
        Arc::new(Batched {
            hot,
            query,
            lane: Mutex::new(Lane {
                queue: VecDeque::new(),
                drainers: 0,
            }),
        })
    }

    /// Queues `key` and waits for its row. Waits for a connection as long as a lone read
    /// would (`timeout`, then 503); a caller that gives up just leaves its key behind,
    /// skipped if not yet sent.
    pub async fn fetch(self: &Arc<Self>, key: Q::Key) -> StoreResult<Option<Q::Value>> {
        let (reply, answer) = oneshot::channel();
        let start_drainer = {
            let mut lane = self.lane();
            lane.queue.push_back(Waiting {
                key,
                since: Instant::now(),
                reply,
            });
            let more = lane.drainers < self.hot.count;
            if more {
                lane.drainers += 1;
            }
            more
        };
        if start_drainer {
            tokio::spawn(Arc::clone(self).drain(DrainerGuard(Arc::clone(self))));
        }
        // A drainer always replies before dropping a request it took.
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Database("batched read abandoned".into())))
    }

    /// One drainer: takes a connection, then answers batches until the queue is empty.
    async fn drain(self: Arc<Self>, _guard: DrainerGuard<DB, Q>) {
        let _permit = loop {
            match self.hot.permit().await {
                Ok(permit) => break permit,
                Err(_) => {
                    // No connection for `timeout`: whoever has waited that long gets a 503,
                    // as a lone read would; the rest keep waiting with this drainer.
                    let timeout = self.hot.timeout;
                    let (expired, left) = {
                        let mut lane = self.lane();
                        let (expired, kept): (VecDeque<_>, VecDeque<_>) = lane
                            .queue
                            .drain(..)
                            .partition(|w| w.since.elapsed() >= timeout);
                        lane.queue = kept;
                        (expired, lane.queue.len())
                    };
                    for w in expired {
                        let _ = w.reply.send(Err(sqlx::Error::PoolTimedOut.into()));
                    }
                    if left == 0 {
                        // The guard re-checks the queue under the lock as it leaves.
                        return;
                    }
                }
            }
        };
        loop {
            let batch: Vec<Waiting<Q::Key, Q::Value>> = {
                let mut lane = self.lane();
                // Callers that gave up (their request was dropped) need no answer.
                lane.queue.retain(|w| !w.reply.is_closed());
                let n = lane.queue.len().min(MAX_BATCH);
                lane.queue.drain(..n).collect()
            };
            if batch.is_empty() {
                // The guard re-checks the queue under the lock as it leaves.
                return;
            }
            self.answer(batch).await;
        }
    }

    async fn answer(&self, batch: Vec<Waiting<Q::Key, Q::Value>>) {
        let (keys, mut replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.key, w.reply)).unzip();
        let read = async {
            let mut hot = self.hot.take().await?;
            // On error the connection is dropped: a fresh one next time costs little.
            let rows = self.query.run(&mut hot.conn, &keys).await?;
            self.hot.put_back(hot);
            Ok::<_, StoreError>(rows)
        };
        // Abandoned, connection and all, once every caller in the batch has gone: a lone
        // read is dropped with its request in the same way.
        let all_gone = futures_util::future::join_all(replies.iter_mut().map(|r| r.closed()));
        let outcome = tokio::select! {
            rows = read => Some(rows),
            _ = all_gone => None,
        };
        match outcome {
            None => {}
            Some(Ok(rows)) if rows.len() == replies.len() => {
                for (reply, row) in replies.into_iter().zip(rows) {
                    let _ = reply.send(Ok(row));
                }
            }
            Some(Ok(rows)) => {
                let e = format!(
                    "batched read gave {} rows for {} keys",
                    rows.len(),
                    keys.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Database(e.clone().into())));
                }
            }
            Some(Err(e)) => {
                for reply in replies {
                    let _ = reply.send(Err(e.duplicate()));
                }
            }
        }
    }

    fn lane(&self) -> std::sync::MutexGuard<'_, Lane<Q::Key, Q::Value>> {
        self.lane
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts a drainer out when it ends, however it ends. Leaving is decided under the lane's
/// lock: a key queued after the drainer last looked, while every drainer slot was taken,
/// gets a new drainer here instead of waiting forever.
struct DrainerGuard<DB, Q>(Arc<Batched<DB, Q>>)
where
    DB: Database,
    Q: BatchRead<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>;

impl<DB, Q> Drop for DrainerGuard<DB, Q>
where
    DB: Database,
    Q: BatchRead<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn drop(&mut self) {
        let batched = &self.0;
        let replace = {
            let mut lane = batched.lane();
            if lane.queue.is_empty() {
                lane.drainers -= 1;
                false
            } else {
                true
            }
        };
        if replace {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(Arc::clone(batched).drain(DrainerGuard(Arc::clone(batched))));
            }
        }
    }
}
