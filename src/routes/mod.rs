//! The HTTP API: one module per feature, each exposing `router()`, merged here with the
//! JSON 404/405 fallbacks; `app` wraps them in the middleware (`middleware`).

mod health;
mod login;
mod middleware;
mod openapi;
mod recovery;
mod register;
mod session;

use axum::Router;
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Rule;
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::state::{now, AppState};
use crate::store::{AuditEvent, UserId};

/// The public router with every middleware, ready to serve. A plain function so tests
/// can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let routes = router()
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state);
    middleware::wrap(routes, &settings)
}

/// Every public route, with `GET /openapi.json` describing them all.
pub fn router() -> Router<AppState> {
    let api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(register::router())
        .merge(login::router())
        .merge(session::router())
        .merge(recovery::router())
        .merge(health::router());
    openapi::serve(api)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// The operations listener's router (`ADMIN_LISTEN_ADDR`): `/healthz`, the detailed
/// `/readyz` and `/metrics`, with the same JSON 404/405 fallbacks.
pub fn operations_router() -> Router<AppState> {
    health::operations_router()
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// The seed's success body: `{"message": "…"}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"message": "Login successful"}))]
pub struct MessageBody {
    /// What happened, in the seed server's words.
    pub message: &'static str,
}

/// The audit row for `event`, from the request's client address (`ip`, its text) and
/// user agent.
pub(crate) fn audit_record<'a>(
    event: &'a str,
    user_id: Option<UserId>,
    meta: &'a RequestMeta,
    ip: &'a str,
) -> AuditEvent<'a> {
    AuditEvent {
        user_id,
        event,
        ip: Some(ip),
        user_agent: meta.user_agent.as_deref(),
        at: now(),
    }
}

/// Records a security event in the audit trail. Best effort: a failed write is logged,
/// never turned into a failed request for something that already happened.
pub(crate) async fn audit(
    state: &AppState,
    event: &str,
    user_id: Option<UserId>,
    meta: &RequestMeta,
) {
    let ip = meta.ip.to_string();
    let record = audit_record(event, user_id, meta, &ip);
    if let Err(e) = state.store.record_audit(&record).await {
        tracing::warn!(error = %e, event, "audit event not recorded");
    }
}

/// Counts one event against a named limit; 429 with `Retry-After` when over.
pub(crate) async fn limit(state: &AppState, rule: &Rule, name: &str, key: &str) -> Result<()> {
    state
        .limiter
        .check(rule, &format!("{name}:{key}"))
        .await
        .map_err(|wait| {
            metrics::counter!("gatehouse_rate_limit_rejections_total", "rule" => name.to_owned())
                .increment(1);
            ApiError::RateLimited(wait)
        })
}
