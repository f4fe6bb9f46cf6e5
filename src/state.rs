//! `AppState`: what every handler shares — built once by `startup.rs`, cheap to clone.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::auth::keys::Keys;
use crate::auth::password::PasswordHasher;
use crate::config::Settings;
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
}

/// Now, in the Unix seconds the store works in.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
