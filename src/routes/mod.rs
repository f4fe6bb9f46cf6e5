//! The HTTP API: one module per feature, each exposing `router()`, merged here with the
//! JSON 404/405 fallbacks; `app` wraps them in the middleware (`middleware`).

mod account;
mod forward_auth;
mod health;
mod login;
mod mfa;
mod middleware;
mod openapi;
mod passkey;
mod recovery;
mod register;
mod session;
mod verification;

use axum::Router;
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;
use session::rfc3339;

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
        .merge(verification::router())
        .merge(account::router())
        .merge(mfa::router())
        .merge(passkey::router())
        .merge(forward_auth::router())
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
