//! `AppState`: what every handler shares — built once by `startup.rs`, cheap to clone.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::keys::Keys;
use crate::auth::password::PasswordHasher;
use crate::config::Settings;
use crate::error::ApiError;
use crate::limit::RateLimiter;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub hasher: Arc<PasswordHasher>,
    pub keys: Arc<Keys>,
    pub limiter: Arc<dyn RateLimiter>,
    pub settings: Arc<Settings>,
    /// Pinged when a message is queued, so the outbox worker sends it at once instead of
    /// at its next poll.
    pub outbox_wake: Arc<Notify>,
    /// When the outbox worker last went round its loop (Unix seconds), for /readyz.
    pub outbox_heartbeat: Arc<AtomicI64>,
    /// Work a request starts and does not wait for: what only an existing account costs
    /// (issuing a code), done after the answer so its time cannot be measured. Waited for
    /// at shutdown.
    pub background: TaskTracker,
    /// Bounds that work: every request of the kind takes a slot first, account or not, so
    /// a full queue slows both alike.
    pub background_slots: Arc<Semaphore>,
    /// The WebAuthn relying party (WEBAUTHN_RP_ID, WEBAUTHN_ORIGINS).
    pub webauthn: Arc<crate::auth::passkey::RelyingParty>,
}

impl AppState {
    /// Runs `job` after the answer, in a slot of the background queue taken now (waiting
    /// for one while the queue is full).
    pub async fn after_answer<F>(&self, job: F) -> Result<(), ApiError>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let slot = self.background_slot().await?;
        self.run_in(slot, job);
        Ok(())
    }

    /// A slot of the background queue, waited for: taken by every request of a kind,
    /// account or not, before what only an account costs is decided.
    pub async fn background_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.background_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable)
    }

    /// Runs `job` in the background, holding `slot` until it ends, in the request's span.
    pub fn run_in<F>(&self, slot: OwnedSemaphorePermit, job: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(
            async move {
                let _slot = slot;
                job.await;
            }
            .instrument(tracing::Span::current()),
        );
    }
}

/// Most background jobs at once (see `AppState::background_slots`).
pub const BACKGROUND_SLOTS: usize = 256;

/// Now, in the Unix seconds the store works in.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
