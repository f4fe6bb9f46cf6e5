//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its job: the
//! database answers). The public listener says only ready or not; the operations listener
//! (`ADMIN_LISTEN_ADDR`) serves the detailed report and `/metrics`, which tell whoever
//! reads them about the traffic and so are not for the public.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::atomic::Ordering;

use crate::state::{now, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The operations listener's routes: liveness, the detailed readiness report, metrics.
/// Not in the OpenAPI document, which describes the public listener; the operations
/// listener is for a private network.
pub fn operations_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz_detail))
        .route("/metrics", get(metrics))
}

/// `{"status": "ok"}`. Documentation only: the handler writes it with `json!`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: String,
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses(
        (status = 200, description = "The process answers", body = Health,
            example = json!({"status": "ok"})),
    )
)]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The body of the public `/readyz`. Documentation only: the handler writes it with
/// `json!`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"status": "ready"}))]
struct Readiness {
    /// `ready` when the database answers, its schema is current and the outbox worker is
    /// alive, else `unavailable`. Which check failed is on the operations listener.
    #[schema(pattern = "^(ready|unavailable)$")]
    status: String,
}

/// Ready when the database answers. A rate-limit backend that is down does not make the
/// instance unready (it falls back to local limits) but is reported.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: the database answers, its schema is current and \
            the outbox worker is alive", body = Readiness),
        (status = 503, description = "Not ready; the operations listener's `/readyz` says \
            which check failed", body = Readiness),
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (status, body) = readiness(&state).await;
    (status, Json(json!({"status": body["status"]})))
}

/// The operations listener's `/readyz`: the same verdict, with each check described.
async fn readyz_detail(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (status, body) = readiness(&state).await;
    (status, Json(body))
}

async fn readiness(state: &AppState) -> (StatusCode, Value) {
    let database = match state.store.ping().await {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            json!({"status": "unreachable"})
        }
    };
    let expected = crate::store::expected_schema_version(&state.settings.database.database_url);
    // Asked only of a database that answered, so an outage costs one timeout, not two.
    let migrations = if database["status"] != "ok" {
        json!({"status": "unknown"})
    } else {
        match state.store.schema_version().await {
            Ok(v) if v >= expected => json!({"status": "ok", "version": v}),
            Ok(v) => json!({"status": "behind", "version": v, "expected": expected}),
            Err(_) => json!({"status": "unknown"}),
        }
    };
    // The worker goes round its loop at least every poll interval, plus one delivery.
    let outbox = &state.settings.outbox;
    let allowed = (outbox.outbox_poll_interval + outbox.notify_timeout).as_secs() as i64 + 5;
    let since = now() - state.outbox_heartbeat.load(Ordering::Relaxed);
    let worker = if since <= allowed {
        json!({"status": "ok", "last_seen_seconds_ago": since})
    } else {
        json!({"status": "stalled", "last_seen_seconds_ago": since})
    };
    let ready =
        database["status"] == "ok" && migrations["status"] == "ok" && worker["status"] == "ok";
    let limits = state.limiter.status();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "database": database,
            "migrations": migrations,
            "outbox_worker": worker,
            "rate_limits": {
                "status": if limits.healthy { "ok" } else { "degraded" },
                "backend": limits.backend,
                "detail": limits.detail,
            },
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// Prometheus metrics, in the text exposition format 0.0.4.
async fn metrics(state: State<AppState>) -> Response {
    crate::metrics::render(state).await
}
