//! `GET /me` and `POST /logout`: what a live session sees and how it ends.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, IntoResponse};
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::Unavailable;
use super::MessageBody;
use crate::audit::Origin;
use crate::auth::session::{self, set_cookie, SESSION_COOKIE};
use crate::error::{ErrorBody, Result};
use crate::extract::{AuthSession, RequestMeta};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(logout))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": 1,
    "username": "user123",
    "email": "user@example.com",
    "phone": "+1234567890",
    "created_at": "2026-11-24T06:03:11Z"
}))]
struct Me {
    id: i64,
    /// As registered (after NFKC).
    username: String,
    email: String,
    /// E.164, or null when the account has none.
    phone: Option<String>,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    created_at: String,
}

/// The account of the session.
#[utoipa::path(
    get,
    path = "/me",
    tag = "accounts",
    operation_id = "me",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The logged-in account", body = Me),
        (status = 401, description = "No session, or it has expired or was revoked",
            body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired"})),
        Unavailable,
    )
)]
async fn me(session: AuthSession) -> Json<Me> {
    let u = session.user;
    let created_at = chrono::DateTime::from_timestamp(u.created_at, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Json(Me {
        id: u.id,
        username: u.username,
        email: u.email,
        phone: u.phone,
        created_at,
    })
}

/// End the session: it is deleted server-side and the cookie is cleared.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "accounts",
    operation_id = "logout",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Logged out; the `session` cookie is cleared",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Host-session=; Path=/; [Secure; ]HttpOnly; SameSite=Strict; Max-Age=0`")),
            example = json!({"message": "Logged out"})),
        (status = 401, description = "No session, or it has expired or was revoked",
            body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired"})),
        Unavailable,
    )
)]
async fn logout(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<impl IntoResponse> {
    let origin = Origin::of(&meta);
    let event = origin.event("logged_out", Some(session.user.id));
    session::close(&*state.store, &session.token_hash, &event).await?;
    let clear = set_cookie(
        SESSION_COOKIE,
        "",
        "/",
        Duration::ZERO,
        state.settings.cookie_secure,
    );
    Ok((
        AppendHeaders([(SET_COOKIE, clear)]),
        Json(MessageBody {
            message: "Logged out",
        }),
    ))
}
