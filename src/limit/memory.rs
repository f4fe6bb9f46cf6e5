//! `MemoryLimiter`: GCRA state in this process's memory — right for a single instance.
//! Keys whose state has fully decayed are swept out, so memory stays bounded by the
//! number of keys active within the longest period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{gcra, LimiterStatus, RateLimiter};
use crate::config::Rule;

pub struct MemoryLimiter {
    start: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tats: HashMap<String, u64>,
    checks: u64,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter {
            start: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }
}

impl MemoryLimiter {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Synchronous core, also used as the fallback of shared backends.
    pub fn check_now(&self, rule: &Rule, key: &str) -> Result<(), Duration> {
        let now = self.now_ms();
        let Ok(mut state) = self.state.lock() else {
            return Ok(()); // a poisoned lock must not take logins down
        };
        state.checks += 1;
        if state.checks % 4096 == 0 {
            state.tats.retain(|_, tat| *tat > now);
        }
        let tat = state.tats.get(key).copied().unwrap_or(0);
        let new_tat = gcra(rule, tat, now)?;
        state.tats.insert(key.to_owned(), new_tat);
        Ok(())
    }

    pub fn reset_now(&self, key: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.tats.remove(key);
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, rule: &Rule, key: &str) -> Result<(), Duration> {
        self.check_now(rule, key)
    }

    async fn reset(&self, key: &str) {
        self.reset_now(key)
    }

    fn status(&self) -> LimiterStatus {
        LimiterStatus {
            backend: "memory",
            healthy: true,
            detail: "this instance only",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_independent_and_reset_works() {
        let l = MemoryLimiter::default();
        let rule: Rule = "2/1h".parse().unwrap();
        assert!(l.check(&rule, "a").await.is_ok());
        assert!(l.check(&rule, "a").await.is_ok());
        let wait = l.check(&rule, "a").await.unwrap_err();
        assert!(wait > Duration::from_secs(29 * 60));
        assert!(l.check(&rule, "b").await.is_ok());
        l.reset("a").await;
        assert!(l.check(&rule, "a").await.is_ok());
    }
}
