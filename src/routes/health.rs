//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its job: the
//! database answers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use std::sync::atomic::Ordering;

use crate::state::{now, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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

/// The body of `/readyz`. Documentation only: the handler writes it with `json!`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({
    "status": "ready",
    "checks": {
        "database": {"status": "ok"},
        "migrations": {"status": "ok", "version": 4},
        "outbox_worker": {"status": "ok", "last_seen_seconds_ago": 0},
        "rate_limits": {"status": "ok", "backend": "memory", "detail": "in-process"}
    }
}))]
struct Readiness {
    /// `ready` when every check but `rate_limits` is ok, else `unavailable`.
    #[schema(pattern = "^(ready|unavailable)$")]
    status: String,
    #[schema(inline)]
    checks: ReadinessChecks,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ReadinessChecks {
    #[schema(inline)]
    database: DatabaseCheck,
    #[schema(inline)]
    migrations: MigrationsCheck,
    #[schema(inline)]
    outbox_worker: WorkerCheck,
    #[schema(inline)]
    rate_limits: LimiterCheck,
}

/// Whether the database answers a ping.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct DatabaseCheck {
    /// `ok` or `unreachable`.
    #[schema(pattern = "^(ok|unreachable)$")]
    status: String,
}

/// Whether the schema is at the version this build expects.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct MigrationsCheck {
    /// `ok`, `behind` or `unknown` (the version could not be read).
    #[schema(pattern = "^(ok|behind|unknown)$")]
    status: String,
    /// The applied schema version, when known.
    version: Option<i64>,
    /// The version this build needs, when behind.
    expected: Option<i64>,
}

/// Whether the outbox delivery worker went round its loop recently.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct WorkerCheck {
    /// `ok` or `stalled`.
    #[schema(pattern = "^(ok|stalled)$")]
    status: String,
    last_seen_seconds_ago: i64,
}

/// The rate-limit backend; `degraded` (Redis unreachable, limiting locally) does not make
/// the instance unready.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct LimiterCheck {
    /// `ok` or `degraded`.
    #[schema(pattern = "^(ok|degraded)$")]
    status: String,
    /// `memory` or `redis`.
    backend: String,
    detail: String,
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
        (status = 503, description = "Not ready; the body says which check failed",
            body = Readiness),
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
    (status, Json(body))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Metrics in the Prometheus text exposition format 0.0.4",
            body = String, content_type = "text/plain"),
    )
)]
async fn metrics(state: State<AppState>) -> Response {
    crate::metrics::render(state).await
}
