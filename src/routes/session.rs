//! `GET /me`, `POST /logout` and `/sessions`: what a live session sees, how it ends, and
//! the user's other sessions.

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, IntoResponse};
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::RateLimited;
use super::openapi::Unavailable;
use super::MessageBody;
use crate::audit::Origin;
use crate::auth::account;
use crate::auth::session;
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::{AuthSession, RequestMeta};
use crate::state::{now, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(logout))
        .routes(routes!(list_sessions, revoke_other_sessions))
        .routes(routes!(revoke_session))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": 1,
    "username": "user123",
    "email": "user@example.com",
    "phone": "+1234567890",
    "created_at": "2026-11-24T06:03:11Z",
    "email_verified": true,
    "phone_verified": false,
    "mfa": {"totp": true, "passkeys": 1, "recovery_codes_left": 9}
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
    /// The email, as it is now, has been proven by a code sent to it.
    email_verified: bool,
    /// The phone, as it is now, has been proven by a code sent to it (false without one).
    phone_verified: bool,
    /// The account's second factors.
    mfa: MfaSummary,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MfaSummary {
    /// An authenticator app (TOTP) is enabled.
    totp: bool,
    /// How many passkeys are registered.
    passkeys: i32,
    /// How many unused recovery codes are left.
    recovery_codes_left: i32,
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
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        Unavailable,
    )
)]
async fn me(session: AuthSession) -> Json<Me> {
    let u = session.user;
    Json(Me {
        id: u.id,
        username: u.username,
        email: u.email,
        phone: u.phone,
        created_at: rfc3339(u.created_at),
        email_verified: u.email_verified,
        phone_verified: u.phone_verified,
        mfa: MfaSummary {
            totp: u.totp_enabled,
            passkeys: u.passkey_count,
            recovery_codes_left: u.recovery_codes_left,
        },
    })
}

/// Unix seconds as RFC 3339, UTC.
pub(super) fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
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
    let clear = session::SessionCookie::of(&state.settings).set("", Duration::ZERO);
    Ok((
        AppendHeaders([(SET_COOKIE, clear)]),
        Json(MessageBody {
            message: "Logged out",
        }),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
struct SessionView {
    /// The session's public handle, for `DELETE /sessions/{id}`: never its token.
    id: String,
    /// RFC 3339, UTC: when it was opened (the login).
    #[schema(format = DateTime)]
    created_at: String,
    /// RFC 3339, UTC: when it was last used, to the minute (a quarter of
    /// SESSION_IDLE_TIMEOUT when that is shorter).
    #[schema(format = DateTime)]
    last_seen_at: String,
    /// RFC 3339, UTC: when it ends however active (SESSION_ABSOLUTE_TIMEOUT after login).
    #[schema(format = DateTime)]
    expires_at: String,
    /// The client's address at login; null for sessions from before it was kept.
    ip: Option<String>,
    /// The client's User-Agent at login (at most 256 characters), if it sent one.
    user_agent: Option<String>,
    /// This is the session the request was made with.
    current: bool,
    /// The session's assurance level: `aal1` (a password or a code), `aal2` (with a
    /// second factor, or a passkey).
    aal: &'static str,
    /// When the user last proved themselves on it (the login, or a re-authentication);
    /// RFC 3339, UTC.
    authenticated_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"sessions": [{
    "id": "Xq2m0vS1aD7bC9eF3gH5iJ",
    "created_at": "2026-11-24T06:03:11Z",
    "last_seen_at": "2026-11-24T07:12:40Z",
    "expires_at": "2026-11-24T18:03:11Z",
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0",
    "current": true,
    "aal": "aal2",
    "authenticated_at": "2026-11-24T06:03:11Z"
}]}))]
struct SessionList {
    /// Newest first.
    sessions: Vec<SessionView>,
}

/// The account's live sessions, newest first.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "self-service",
    operation_id = "list_sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Every live session of the account", body = SessionList),
        (status = 401, description = "No session, or it has expired or was revoked",
            body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        RateLimited,
        Unavailable,
    )
)]
async fn list_sessions(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<Json<SessionList>> {
    account::spend_limits(&state, &session.user, &meta).await?;
    let idle = state.settings.sessions.session_idle_timeout;
    let rows = session::list(
        &*state.store,
        session.user.id,
        &session.token_hash,
        idle,
        now(),
    )
    .await?;
    let sessions = rows
        .into_iter()
        .map(|s| SessionView {
            id: s.public_id,
            created_at: rfc3339(s.created_at),
            last_seen_at: rfc3339(s.last_seen_at),
            expires_at: rfc3339(s.expires_at),
            ip: s.ip,
            user_agent: s.user_agent,
            current: s.current,
            aal: if s.aal >= 2 { "aal2" } else { "aal1" },
            authenticated_at: rfc3339(s.proved_at),
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// End one of the account's sessions (the current one too: that is a logout).
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "self-service",
    operation_id = "revoke_session",
    params(("id" = String, Path, description = "A session's `id` from `GET /sessions`")),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The session ended", body = MessageBody,
            example = json!({"message": "Session revoked"})),
        (status = 401, description = "No session, or it has expired or was revoked",
            body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        (status = 404, description = "Not a session of this account (another account's alike)",
            body = ErrorBody, example = json!({"error": "Session not found",
                "code": "session_not_found"})),
        RateLimited,
        Unavailable,
    )
)]
async fn revoke_session(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<MessageBody>> {
    account::spend_limits(&state, &session.user, &meta).await?;
    // An id that is not even text (`%FF`) names no session either.
    let Ok(Path(id)) = id else {
        return Err(ApiError::SessionNotFound);
    };
    let origin = Origin::of(&meta);
    let event = origin.event("session_revoked", Some(session.user.id));
    if !session::revoke(&*state.store, session.user.id, &id, &event).await? {
        return Err(ApiError::SessionNotFound);
    }
    crate::metrics::account_event("session_revoked");
    Ok(Json(MessageBody {
        message: "Session revoked",
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"message": "Other sessions revoked", "revoked": 2}))]
struct Revoked {
    message: &'static str,
    /// How many sessions ended.
    revoked: u64,
}

/// End every session of the account except this one.
#[utoipa::path(
    delete,
    path = "/sessions",
    tag = "self-service",
    operation_id = "revoke_other_sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Every other session ended", body = Revoked),
        (status = 401, description = "No session, or it has expired or was revoked",
            body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        RateLimited,
        Unavailable,
    )
)]
async fn revoke_other_sessions(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<Json<Revoked>> {
    account::spend_limits(&state, &session.user, &meta).await?;
    let origin = Origin::of(&meta);
    let event = origin.event("sessions_revoked", Some(session.user.id));
    let revoked =
        session::revoke_others(&*state.store, session.user.id, &session.token_hash, &event).await?;
    crate::metrics::account_event("sessions_revoked");
    Ok(Json(Revoked {
        message: "Other sessions revoked",
        revoked,
    }))
}
