//! Building the application from settings — store, secret, hasher, limiter, notifiers,
//! router with its middleware, listener — and running it until a shutdown signal. `main`
//! and the tests use the same `Application::build`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use secrecy::ExposeSecret;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::keys::Keys;
use crate::auth::password::{HashError, PasswordHasher};
use crate::config::Settings;
use crate::connections::{PerIpConnections, PerIpPermit};
use crate::error::ApiError;
use crate::extract::{client_network, BODY_LIMIT};
use crate::limit::memory::MemoryLimiter;
use crate::limit::redis::RedisLimiter;
use crate::limit::RateLimiter;
use crate::notify::outbox::OutboxWorker;
use crate::request_id::REQUEST_ID;
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
        let secret = crate::auth::secret::load(&settings, store.as_ref()).await?;
        let keys = Arc::new(Keys::from_secret(secret.expose_secret()));
        drop(secret);
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
        let (stop_tx, stop_rx) = watch::channel(false);
        let workers: Vec<_> = (0..state.settings.outbox.outbox_workers.max(1))
            .map(|_| tokio::spawn(worker.clone().run(stop_rx.clone())))
            .collect();
        let purger = tokio::spawn(purge_loop(state.clone(), stop_rx.clone()));
        let upgrader = state
            .settings
            .hash_upgrade_on_start
            .then(|| tokio::spawn(upgrade_pass(state.clone())));
        let upkeep = tokio::spawn(crate::metrics::upkeep(stop_rx.clone()));
        let operations = admin.map(|listener| {
            tokio::spawn(serve_operations(listener, state.clone(), stop_rx.clone()))
        });
        let settings = state.settings.clone();
        let background = state.background.clone();
        let router = app(state);

        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(settings.max_connections));
        let open_per_ip = Arc::new(PerIpConnections::default());
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        // Over MAX_CONNECTIONS: refuse at once rather than queue.
                        refuse(stream, "max_connections");
                        continue;
                    };
                    let ip_permit = match per_ip_network(&settings, peer) {
                        Some(network) => {
                            let cap = settings.max_connections_per_ip;
                            let Some(ip_permit) = open_per_ip.try_acquire(network, cap) else {
                                // Over MAX_CONNECTIONS_PER_IP: this client has enough.
                                refuse(stream, "max_connections_per_ip");
                                continue;
                            };
                            Some(ip_permit)
                        }
                        None => None,
                    };
                    let permits = (permit, ip_permit);
                    serve_connection(stream, peer, router.clone(), &settings, &graceful, permits);
                }
                _ = &mut shutdown => break,
            }
        }

        tracing::info!("shutting down: no new connections; finishing requests in flight");
        drop(listener);
        let _ = stop_tx.send(true);
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(settings.shutdown_grace) => {
                tracing::warn!("grace period over; dropping the connections still open");
            }
        }
        // Codes asked for just before the signal are still issued (and so delivered).
        background.close();
        let _ = tokio::time::timeout(settings.shutdown_grace, background.wait()).await;
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(workers),
        )
        .await;
        purger.abort();
        upkeep.abort();
        // Each of its writes is one conditional statement or transaction: stopping it
        // anywhere leaves every row done or untouched.
        if let Some(task) = upgrader {
            task.abort();
        }
        if let Some(task) = operations {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves the operations router on its own listener until `stop`. Its log line does not
/// say "listening on": that one names the public address.
async fn serve_operations(listener: TcpListener, state: AppState, mut stop: watch::Receiver<bool>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("operations endpoints (/metrics, /readyz) on http://{addr}");
    }
    let router = crate::routes::operations_router().with_state(state);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "operations listener stopped");
    }
}

/// Closes a connection refused at accept, counting why.
fn refuse(stream: TcpStream, reason: &'static str) {
    metrics::counter!("gatehouse_connections_refused_total", "reason" => reason).increment(1);
    drop(stream);
}

/// The network a peer's connections count against for MAX_CONNECTIONS_PER_IP, or `None`
/// when they are not capped: no cap is set, or the peer is a trusted proxy, through which
/// every client arrives. IPv4 peers of a dual-stack listener (`::ffff:a.b.c.d`) count as
/// their IPv4 address.
fn per_ip_network(settings: &Settings, peer: SocketAddr) -> Option<IpNet> {
    let ip = peer.ip().to_canonical();
    let trusted = settings.trusted_proxies.iter().any(|net| net.contains(&ip));
    (settings.max_connections_per_ip > 0 && !trusted)
        .then(|| client_network(ip, settings.rate_limit_ipv6_prefix))
}

/// Serves one accepted connection (HTTP/1.1 or HTTP/2) on its own task. Headers must
/// arrive within HEADER_READ_TIMEOUT — also the longest a kept-alive connection may sit
/// idle — so slow or idle clients cannot hold connections open; the request itself is
/// bounded by REQUEST_TIMEOUT in the middleware.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    settings: &Settings,
    graceful: &GracefulShutdown,
    permits: (OwnedSemaphorePermit, Option<PerIpPermit>),
) {
    let service = router.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.map(Body::new)
    });
    let mut builder = ConnectionBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(settings.header_read_timeout)
        .keep_alive_timeout(settings.header_read_timeout);
    // hyper's header timer only starts once a request begins; a connection that sends
    // nothing at all (or goes quiet between requests) is bounded by this read timeout.
    let mut stream = TimeoutStream::new(stream);
    stream.set_read_timeout(Some(settings.header_read_timeout));
    let connection = builder
        .serve_connection_with_upgrades(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(service),
        )
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        let _permits = permits;
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// The router with every middleware: request ids (a client's, if well formed), tracing,
/// timeout, panic guard, body limit and security headers. A plain function so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let timeout = state.settings.request_timeout;
    let hsts = state.settings.cookie_secure.then(|| {
        SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        )
    });
    let middleware = ServiceBuilder::new()
        .map_request(crate::request_id::drop_malformed)
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
                    let method = crate::metrics::method_label(req.method());
                    tracing::info_span!("request", request_id = %id, method, path)
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
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            crate::metrics::refuse_unknown_methods,
        ));
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

/// The start-up upgrade pass (`crate::upgrade`). A failure is logged, not fatal: the
/// rows it did not reach still verify, and the next start or `gatehouse upgrade-hashes`
/// carries on.
async fn upgrade_pass(state: AppState) {
    if let Err(e) = crate::upgrade::run(state.store.as_ref(), &state.hasher).await {
        tracing::warn!(error = %e, "upgrade pass stopped; the next start carries on");
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
