//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its job: the
//! database answers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;

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
    let ready = database["status"] == "ok";
    let limits = state.limiter.status();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "database": database,
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
