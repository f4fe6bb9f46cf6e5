//! Prometheus metrics: the recorder, the `/metrics` route (served on the operations
//! listener only), and the per-request middleware that counts requests by route and
//! status and times them. Every label value comes from a closed set, and no counter moves
//! differently for an identifier that has an account than for one that has none. Other modules
//! record their own events with the `metrics` macros; the names are listed in the README.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::state::AppState;

/// Latency buckets from 0.5 ms to 10 s: session checks live at the bottom, hashes in the
/// middle, timeouts at the top.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// Drains recorded histogram samples into their buckets every few seconds until `stop`.
/// Without it the exporter keeps every raw sample until the next scrape: about 22 MiB per
/// million requests on a server nobody scrapes.
pub async fn upkeep(mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(handle) = handle() else { return };
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = stop.changed() => return,
        }
    }
}

/// Counts a completed self-service change (`gatehouse_account_events_total`): the audit
/// event's name, from the closed set the flows use.
pub fn account_event(event: &'static str) {
    metrics::counter!("gatehouse_account_events_total", "event" => event).increment(1);
}

const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /metrics`: Prometheus text format, with gauges refreshed at scrape time.
pub async fn render(State(state): State<AppState>) -> Response {
    if let Ok(stats) = state.store.stats().await {
        metrics::gauge!("gatehouse_outbox_pending").set(stats.outbox_pending as f64);
        metrics::gauge!("gatehouse_outbox_failed").set(stats.outbox_failed as f64);
        metrics::gauge!("gatehouse_db_pool_connections", "state" => "idle")
            .set(f64::from(stats.pool_idle));
        metrics::gauge!("gatehouse_db_pool_connections", "state" => "in_use")
            .set(f64::from(stats.pool_in_use));
    }
    let body = handle().map(|h| h.render()).unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The methods HTTP defines (RFC 9110 and PATCH): the only values the `method` label and
/// the log's method field take. Anything else is refused by `refuse_unknown_methods`
/// before routing, so a client cannot mint label values (each one a series kept for
/// the life of the process) or write what it likes into the log.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Answers 405 (our one answer for a method a route does not take; a 5xx would say the
/// fault is ours) to a method HTTP does not define, before routing and before anything
/// counts or logs it.
pub async fn refuse_unknown_methods(req: Request, next: Next) -> Response {
    if method_label(req.method()) == "other" {
        return ApiError::MethodNotAllowed.into_response();
    }
    next.run(req).await
}

/// Counts and times every request by matched route (never the raw path, whose
/// cardinality a client controls), method (from a closed set) and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("gatehouse_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("gatehouse_http_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}
