//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its job: the
//! database answers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use std::sync::atomic::Ordering;

use crate::state::{now, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers. A rate-limit backend that is down does not make the
/// instance unready (it falls back to local limits) but is reported.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match state.store.ping().await {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            json!({"status": "unreachable"})
        }
    };
    let expected = crate::store::expected_schema_version(&state.settings.database.database_url);
    let migrations = match state.store.schema_version().await {
        Ok(v) if v >= expected => json!({"status": "ok", "version": v}),
        Ok(v) => json!({"status": "behind", "version": v, "expected": expected}),
        Err(_) => json!({"status": "unknown"}),
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
