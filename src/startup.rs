//! Wiring: the application built from settings — store, secret, hasher, limiter,
//! notifiers, listeners — and run until a shutdown signal, with its parts in their own
//! rooms: the accept loop and signals in `crate::server`, the router and its middleware in
//! `crate::routes`, the background jobs in `crate::jobs`. `main` runs
//! `Application::build`; `app` is re-exported here for tests that drive the router in
//! process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::auth::keys::Keys;
use crate::auth::password::{HashError, PasswordHasher};
use crate::config::Settings;
use crate::jobs::Jobs;
use crate::limit::memory::MemoryLimiter;
use crate::limit::redis::RedisLimiter;
use crate::limit::RateLimiter;
use crate::notify::outbox::OutboxWorker;
use crate::server;
use crate::state::{now, AppState};
use crate::store::{self, StoreError};

/// The public router with its middleware (defined beside the routes).
pub use crate::routes::app;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing: {0}")]
    Hash(#[from] HashError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    File(#[from] crate::private_file::FileError),
}

pub struct Application {
    listener: TcpListener,
    /// The operations listener (`/metrics`, the detailed `/readyz`), when enabled.
    admin: Option<TcpListener>,
    state: AppState,
    worker: OutboxWorker,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate().map_err(StartupError::Config)?;
        let store = store::connect(&settings.database).await?;
        let secret =
            crate::auth::secret::load(&settings.database, &settings.secret, store.as_ref()).await?;
        let keys = Keys::from_secret(secret.expose_secret())
            .map_err(|e| StartupError::Config(e.to_string()))?;
        let keys = Arc::new(keys);
        drop(secret);
        let hasher = Arc::new(PasswordHasher::new(&settings.hashing)?);
        let webauthn = Arc::new(
            crate::auth::passkey::relying_party(&settings.factors, &settings.public_url)
                .map_err(StartupError::Config)?,
        );
        let notifiers = crate::notify::build(
            &settings.email,
            &settings.sms,
            settings.outbox.notify_timeout,
        )
        .map_err(StartupError::Config)?;
        let outbox_wake = Arc::new(Notify::new());
        let outbox_heartbeat = Arc::new(AtomicI64::new(now()));
        let worker = OutboxWorker {
            store: store.clone(),
            keys: keys.clone(),
            notifiers,
            settings: settings.outbox.clone(),
            wake: outbox_wake.clone(),
            heartbeat: outbox_heartbeat.clone(),
        };
        crate::metrics::handle();
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let admin = match settings.admin_listen_addr.0 {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                StartupError::Config(format!("ADMIN_LISTEN_ADDR {addr}: cannot listen: {e}"))
            })?),
            None => None,
        };
        tracing::info!(
            hash_concurrency = hasher.concurrency(),
            argon2_m_kib = settings.hashing.argon2_memory_kib,
            argon2_t = settings.hashing.argon2_iterations,
            "password hashing ready"
        );
        let limiter: Arc<dyn RateLimiter> = match &settings.redis_url {
            Some(url) => {
                tracing::info!("rate limits shared through Redis");
                Arc::new(
                    RedisLimiter::new(url.expose_secret(), &settings.redis_key_prefix)
                        .map_err(StartupError::Config)?,
                )
            }
            None => Arc::new(MemoryLimiter::default()),
        };
        let state = AppState {
            store,
            hasher,
            keys,
            limiter,
            settings: Arc::new(settings),
            outbox_wake,
            outbox_heartbeat,
            background: tokio_util::task::TaskTracker::new(),
            background_slots: Arc::new(Semaphore::new(crate::state::BACKGROUND_SLOTS)),
            webauthn,
        };
        Ok(Application {
            listener,
            admin,
            state,
            worker,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, gives in-flight requests
    /// up to SHUTDOWN_GRACE, and lets the outbox worker finish its current message.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Application {
            listener,
            admin,
            state,
            worker,
        } = self;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        let jobs = Jobs::start(&state, worker);
        let operations = admin.map(|listener| {
            let router = crate::routes::operations_router().with_state(state.clone());
            tokio::spawn(server::serve_operations(listener, router, jobs.stopped()))
        });
        let settings = state.settings.clone();
        let background = state.background.clone();

        let draining = server::serve(listener, app(state), &settings, shutdown).await;
        jobs.stop();
        draining.finish().await;
        // Codes asked for just before the signal are still issued (and so delivered).
        background.close();
        let _ = tokio::time::timeout(settings.shutdown_grace, background.wait()).await;
        jobs.finish().await;
        if let Some(task) = operations {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}
