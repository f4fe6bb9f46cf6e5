//! The accept loop: how connections come in, how many are let in, how long they may take,
//! and how they are let go at shutdown. Why it is ours rather than `axum::serve`, guard by
//! guard:
//!
//! - **A cap on open connections (MAX_CONNECTIONS), refusing at once.** Every open
//!   connection holds a file descriptor and some memory; past the cap a new one is closed
//!   on accept instead of being queued, so a flood cannot exhaust descriptors and the
//!   connections already open keep being served. `axum::serve` accepts without limit.
//! - **A cap per client address (MAX_CONNECTIONS_PER_IP; an IPv6 client's whole
//!   RATE_LIMIT_IPV6_PREFIX network).** Without it one client can take all of
//!   MAX_CONNECTIONS for itself and lock everybody else out. Peers in TRUSTED_PROXIES are
//!   exempt: every client arrives through them.
//! - **A first-byte timeout (HEADER_READ_TIMEOUT on the socket).** hyper's header timer
//!   only starts once a request begins; a connection that sends nothing at all, or goes
//!   quiet between requests, would otherwise hold its slot for ever (slowloris with zero
//!   bytes).
//! - **A header timeout (HEADER_READ_TIMEOUT in hyper).** A client dribbling its headers a
//!   byte at a time is cut off; the request itself is bounded by REQUEST_TIMEOUT in the
//!   middleware (`routes::middleware`).
//! - **Graceful shutdown.** On SIGTERM or ctrl-c the listener closes, requests in flight get
//!   SHUTDOWN_GRACE to finish, and only then are the connections still open dropped, so a
//!   rolling restart does not cut answers in half.
//!
//! The operations listener (`ADMIN_LISTEN_ADDR`) is served by plain `axum::serve`: it is
//! meant for a private network, not for the public.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

use crate::config::Settings;
use crate::connections::{PerIpConnections, PerIpPermit};
use crate::extract::client_network;

/// Connections still finishing after the listener closed (see `serve`).
pub struct Draining {
    graceful: GracefulShutdown,
    grace: Duration,
}

impl Draining {
    /// Waits until every connection has closed, or SHUTDOWN_GRACE has passed; the
    /// connections still open then are dropped.
    pub async fn finish(self) {
        tokio::select! {
            _ = self.graceful.shutdown() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(self.grace) => {
                tracing::warn!("grace period over; dropping the connections still open");
            }
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown`
/// resolves, then closes the listener and hands back the connections still open.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
) -> Draining {
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
                let ip_permit = match per_ip_network(settings, peer) {
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
                serve_connection(stream, peer, router.clone(), settings, &graceful, permits);
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    drop(listener);
    Draining {
        graceful,
        grace: settings.shutdown_grace,
    }
}

/// Serves the operations router on its own listener until `stop`. Its log line does not
/// say "listening on": that one names the public address.
pub async fn serve_operations(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("operations endpoints (/metrics, /readyz) on http://{addr}");
    }
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
