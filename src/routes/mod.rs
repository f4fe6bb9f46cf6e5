//! The HTTP API: one module per feature, each exposing `router()`, merged here with the
//! JSON 404/405 fallbacks.

mod health;
mod login;
mod openapi;
mod recovery;
mod register;
mod session;

use axum::Router;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(register::router())
        .merge(login::router())
        .merge(session::router())
        .merge(recovery::router())
        .merge(health::router())
        .merge(openapi::router())
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
