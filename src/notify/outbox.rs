//! The outbox: how a message is sealed for the table, and the worker that opens and
//! delivers queued messages with retries and exponential backoff.
//!
//! A message may carry a one-time code, so it is stored encrypted under the server's
//! outbox key ([`seal`]) and decrypted only by the worker about to send it ([`open`]).
//! Flows write a message in the same transaction as the code it carries, so nothing
//! acknowledged can be lost; this worker claims one due message at a time (an atomic
//! claim with a lease, so several instances never send the same message at once), sends
//! it with a per-attempt timeout, and marks it sent, due again later, or failed after the
//! last attempt. If the process dies mid-send the lease runs out and another attempt is
//! made: delivery is at least once, and exactly once in normal operation.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::{Message, Notifiers, NotifyError};
use crate::auth::keys::Keys;
use crate::config::OutboxSettings;
use crate::state::now;
use crate::store::{Store, StoreResult};

/// Why a message could not be sealed (neither happens in practice: the message is plain
/// strings and the cipher takes any length).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("message not serialised: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Encrypt(#[from] crate::auth::keys::EncryptError),
}

/// A message as the outbox table stores it: JSON, encrypted under the outbox key.
pub fn seal(keys: &Keys, message: &Message) -> Result<String, SealError> {
    Ok(keys.seal(&serde_json::to_vec(message)?)?)
}

/// A stored payload back as the message it seals.
pub fn open(keys: &Keys, payload: &str) -> Result<Message, &'static str> {
    let plain = keys.open(payload).map_err(|_| {
        "payload cannot be decrypted with this server secret (was SECRET_KEY changed?)"
    })?;
    serde_json::from_slice(&plain).map_err(|_| "payload is not a message")
}

/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct OutboxWorker {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keys>,
    pub notifiers: Notifiers,
    pub settings: OutboxSettings,
    pub wake: Arc<Notify>,
    /// Set to the current time on every round of the loop.
    pub heartbeat: Arc<AtomicI64>,
}

impl OutboxWorker {
    /// Runs until `shutdown` turns true; a message being sent is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("outbox worker started");
        loop {
            self.heartbeat.store(now(), Ordering::Relaxed);
            if *shutdown.borrow() {
                break;
            }
            let idle = match self.deliver_one().await {
                Ok(sent_something) => !sent_something,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: database error, will retry");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.outbox_poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!("outbox worker stopped");
    }

    /// Claims and handles one due message; false when none was due.
    pub async fn deliver_one(&self) -> StoreResult<bool> {
        let now = now();
        // The lease outlives the longest attempt, so a slow send is never claimed twice.
        let lease = self.settings.notify_timeout.as_secs() as i64 + 30;
        let Some(item) = self.store.claim_outbox(now, now + lease).await? else {
            return Ok(false);
        };
        let message = match open(&self.keys, &item.payload) {
            Ok(m) => m,
            Err(reason) => {
                tracing::error!(
                    id = item.id,
                    reason,
                    "outbox: message unreadable, giving up"
                );
                self.store.outbox_failed(item.id, now, reason).await?;
                return Ok(true);
            }
        };
        let notifier = self.notifiers.for_channel(message.channel);
        let result =
            match tokio::time::timeout(self.settings.notify_timeout, notifier.send(&message)).await
            {
                Ok(r) => r,
                Err(_) => Err(NotifyError::Temporary("timed out".into())),
            };
        let done = crate::state::now();
        let outcome = match &result {
            Ok(()) => "delivered",
            Err(NotifyError::Permanent(_)) => "failed_permanently",
            Err(NotifyError::Temporary(_)) => "failed_temporarily",
        };
        metrics::counter!("gatehouse_outbox_deliveries_total", "channel" => item.channel.clone(), "result" => outcome)
            .increment(1);
        match result {
            Ok(()) => {
                self.store.outbox_sent(item.id, done).await?;
                tracing::info!(
                    id = item.id,
                    channel = item.channel,
                    via = notifier.name(),
                    "outbox: delivered"
                );
            }
            Err(e @ NotifyError::Permanent(_)) => {
                tracing::error!(id = item.id, channel = item.channel, error = %e, "outbox: delivery failed for good");
                self.store
                    .outbox_failed(item.id, done, &e.to_string())
                    .await?;
            }
            Err(e) if item.attempts as u32 >= self.settings.outbox_max_attempts => {
                tracing::error!(id = item.id, channel = item.channel, error = %e, attempts = item.attempts, "outbox: giving up after the last attempt");
                self.store
                    .outbox_failed(item.id, done, &e.to_string())
                    .await?;
            }
            Err(e) => {
                let wait = backoff(self.settings.outbox_retry_base, item.attempts);
                tracing::warn!(id = item.id, channel = item.channel, error = %e, attempts = item.attempts, retry_in = ?wait, "outbox: delivery failed, will retry");
                let next = done + wait.as_secs().max(1) as i64;
                self.store
                    .outbox_retry(item.id, next, &e.to_string())
                    .await?;
            }
        }
        Ok(true)
    }
}

/// base × 2^(attempts−1), capped.
fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 20) as u32;
    base.saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(2);
        assert_eq!(backoff(b, 1), Duration::from_secs(2));
        assert_eq!(backoff(b, 2), Duration::from_secs(4));
        assert_eq!(backoff(b, 4), Duration::from_secs(16));
        assert_eq!(backoff(b, 30), MAX_BACKOFF);
    }
}
