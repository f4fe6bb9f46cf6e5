//! Building the application from settings — store, secret, hasher, limiter, notifiers,
//! router with its middleware, listener — and running it until a shutdown signal. `main`
//! and the tests use the same `Application::build`.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use rand::RngCore;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::keys::Keys;
use crate::auth::password::{HashError, PasswordHasher};
use crate::config::Settings;
use crate::error::ApiError;
use crate::extract::BODY_LIMIT;
use crate::limit::memory::MemoryLimiter;
use crate::limit::redis::RedisLimiter;
use crate::limit::RateLimiter;
use crate::notify::outbox::OutboxWorker;
use crate::state::{now, AppState};
use crate::store::{self, StoreError};

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
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: OutboxWorker,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate().map_err(StartupError::Config)?;
        let store = store::connect(&settings.database).await?;
        let secret = match &settings.secret_key {
            Some(key) => key.expose_secret().to_owned(),
            None => {
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                store.server_secret(&hex::encode(bytes)).await?
            }
        };
        let keys = Arc::new(Keys::from_secret(&secret));
        let hasher = Arc::new(PasswordHasher::new(&settings.hashing)?);
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
        };
        Ok(Application {
            listener,
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
            state,
            worker,
        } = self;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = tokio::spawn(worker.run(stop_rx.clone()));
        let purger = tokio::spawn(purge_loop(state.clone(), stop_rx.clone()));
        let grace = state.settings.shutdown_grace;
        let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections");
            let _ = stop_tx.send(true);
        });
        let mut server = tokio::spawn(server.into_future());
        let mut stopping = stop_rx.clone();
        tokio::select! {
            result = &mut server => {
                result.map_err(|e| std::io::Error::other(e.to_string()))??;
            }
            _ = async {
                let _ = stopping.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("grace period over; dropping the connections still open");
                server.abort();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
        purger.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// The router with every middleware: request ids, tracing, timeout, panic guard, body
/// limit and security headers. A plain function so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let timeout = state.settings.request_timeout;
    let hsts = state.settings.cookie_secure.then(|| {
        SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        )
    });
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The matched route, never the raw URI: nothing a client puts in a
                    // query string ends up in the log.
                    let path = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("<unmatched>", MatchedPath::as_str);
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .option_layer(hsts)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            ApiError::Unavailable
        }))
        .timeout(timeout)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    crate::routes::router()
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state)
        .layer(middleware)
}

/// Deletes expired sessions, codes and tokens, and old delivered messages, every ten
/// minutes.
async fn purge_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    const EVERY: Duration = Duration::from_secs(600);
    const KEEP_SENT: i64 = 7 * 24 * 3600;
    loop {
        let now = now();
        match state.store.purge_expired(now, now - KEEP_SENT).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "purged expired rows"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
        }
        let keep = state.settings.audit_retention.as_secs() as i64;
        match state.store.purge_audit(now - keep).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "purged old audit events"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit purge failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
