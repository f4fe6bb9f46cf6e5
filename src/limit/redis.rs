//! `RedisLimiter`: GCRA state in Redis, shared by every instance — the same algorithm as
//! `gcra()`, run atomically server-side as one Lua script per check (EVALSHA after the
//! first call), on Redis's own clock so instances with skewed clocks still agree. Each key
//! expires when its state has fully decayed, so nothing grows without bound.
//!
//! If Redis cannot be reached the instance keeps serving with its local in-memory limiter
//! (logging the switch once, reporting it in /readyz and a metric), and tries Redis again
//! every few seconds; no request ever fails because Redis is down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::Mutex;

use super::memory::MemoryLimiter;
use super::{LimiterStatus, RateLimiter};
use crate::config::Rule;

/// A check that takes longer than this counts as Redis being unavailable.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, how long to stay on the local limiter before trying Redis again.
const RETRY_AFTER: Duration = Duration::from_secs(3);

/// Returns 0 when the event is allowed (and recorded), else milliseconds to wait.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local interval = math.max(math.floor(period / tonumber(ARGV[2])), 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(new_tat - now, 1))
return 0
"#;

pub struct RedisLimiter {
    client: redis::Client,
    prefix: String,
    connection: Mutex<Option<ConnectionManager>>,
    script: Script,
    fallback: MemoryLimiter,
    degraded: AtomicBool,
    /// Milliseconds since `start` before which Redis is not tried again.
    retry_at_ms: AtomicU64,
    start: Instant,
}

impl RedisLimiter {
    /// Prepares the limiter; it connects lazily, so a Redis that is down at start only
    /// means starting on the local limiter.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        Ok(RedisLimiter {
            client,
            prefix: prefix.to_owned(),
            connection: Mutex::new(None),
            script: Script::new(GCRA_LUA),
            fallback: MemoryLimiter::default(),
            degraded: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1);
        let manager = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Runs `op` against Redis unless it is known to be down; `None` means "use the
    /// local limiter".
    async fn try_redis<T>(
        &self,
        op: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Option<T> {
        if self.degraded.load(Ordering::Relaxed)
            && self.now_ms() < self.retry_at_ms.load(Ordering::Relaxed)
        {
            return None;
        }
        let result = match self.connection().await {
            Ok(mut conn) => match tokio::time::timeout(CALL_TIMEOUT, op(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::warn!("Redis is reachable again: rate limits are shared again");
                    metrics::gauge!("gatehouse_rate_limit_backend_degraded").set(0.0);
                }
                Some(v)
            }
            Err(e) => {
                self.retry_at_ms.store(
                    self.now_ms() + RETRY_AFTER.as_millis() as u64,
                    Ordering::Relaxed,
                );
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "Redis unreachable: using this instance's local rate limiter until it is back");
                    metrics::gauge!("gatehouse_rate_limit_backend_degraded").set(1.0);
                }
                None
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, rule: &Rule, key: &str) -> Result<(), Duration> {
        let period = rule.period.as_millis().max(1) as u64;
        let count = rule.count;
        let key = format!("{}{key}", self.prefix);
        let wait = self
            .try_redis(async |conn| {
                self.script
                    .key(&key)
                    .arg(period)
                    .arg(count)
                    .invoke_async::<u64>(conn)
                    .await
            })
            .await;
        match wait {
            Some(0) => Ok(()),
            Some(ms) => Err(Duration::from_millis(ms)),
            None => self.fallback.check_now(rule, &key),
        }
    }

    async fn reset(&self, key: &str) {
        let key = format!("{}{key}", self.prefix);
        self.fallback.reset_now(&key);
        let _ = self
            .try_redis(async |conn| redis::cmd("DEL").arg(&key).query_async::<i64>(conn).await)
            .await;
    }

    fn status(&self) -> LimiterStatus {
        if self.degraded.load(Ordering::Relaxed) {
            LimiterStatus {
                backend: "redis",
                healthy: false,
                detail: "Redis unreachable; using the local in-memory limiter",
            }
        } else {
            LimiterStatus {
                backend: "redis",
                healthy: true,
                detail: "shared through Redis",
            }
        }
    }
}
