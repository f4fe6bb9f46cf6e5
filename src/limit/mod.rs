//! Rate limiting: the `RateLimiter` trait and the named limits the routes apply. The
//! algorithm is GCRA (a leaky bucket kept as one "theoretical arrival time" per key): a
//! rule `N/period` allows a burst of N, then one event every period/N.
//!
//! Per-account limits are keyed on the normalised identifier whether or not the account
//! exists, so a 429 never tells an attacker which accounts are real.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::config::Rule;
use crate::error::ApiError;

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one event for `key` under `rule`. `Err(wait)` when over the limit: the
    /// event is not counted, and `wait` is when the next one would be allowed.
    async fn check(&self, rule: &Rule, key: &str) -> Result<(), Duration>;

    /// Forgets `key` (a successful login clears its failed-attempt budget).
    async fn reset(&self, key: &str);

    /// Which backend is in use and whether it is working, for /readyz.
    fn status(&self) -> LimiterStatus;
}

/// Spends one event of the limit `name` for `key` (stored as `name:key`). Over the limit
/// it is a 429 that says when to come back, counted by rule name.
pub async fn spend(
    limiter: &dyn RateLimiter,
    rule: &Rule,
    name: &str,
    key: &str,
) -> Result<(), ApiError> {
    limiter
        .check(rule, &format!("{name}:{key}"))
        .await
        .map_err(|wait| {
            metrics::counter!("gatehouse_rate_limit_rejections_total", "rule" => name.to_owned())
                .increment(1);
            ApiError::RateLimited(wait)
        })
}

/// What /readyz reports about rate limiting.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LimiterStatus {
    pub backend: &'static str,
    /// False when a shared backend is down and this instance limits on its own.
    pub healthy: bool,
    pub detail: &'static str,
}

/// GCRA on millisecond timestamps, shared by every backend so they agree exactly.
/// Given the key's stored theoretical arrival time (`tat`, 0 when absent) and `now`,
/// returns the new `tat` to store, or how long to wait.
pub fn gcra(rule: &Rule, tat: u64, now: u64) -> Result<u64, Duration> {
    let period = rule.period.as_millis().max(1) as u64;
    let interval = (period / u64::from(rule.count)).max(1);
    let new_tat = tat.max(now) + interval;
    let allow_at = new_tat.saturating_sub(period);
    if now < allow_at {
        Err(Duration::from_millis(allow_at - now))
    } else {
        Ok(new_tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_one_per_interval() {
        let rule: Rule = "3/1m".parse().unwrap();
        let mut tat = 0;
        for _ in 0..3 {
            tat = gcra(&rule, tat, 1_000_000).unwrap();
        }
        let wait = gcra(&rule, tat, 1_000_000).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        assert!(gcra(&rule, tat, 1_000_000 + 19_999).is_err());
        assert!(gcra(&rule, tat, 1_000_000 + 20_000).is_ok());
    }

    #[test]
    fn an_idle_key_gets_its_full_burst_back() {
        let rule: Rule = "3/1m".parse().unwrap();
        let mut tat = 0;
        for _ in 0..3 {
            tat = gcra(&rule, tat, 0).unwrap();
        }
        let later = 60_000;
        for _ in 0..3 {
            tat = gcra(&rule, tat, later).unwrap();
        }
        assert!(gcra(&rule, tat, later).is_err());
    }
}
