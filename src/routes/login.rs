//! `POST /login`: check a password and open a session (the flow: `auth::login`).

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::HeaderMap;
use axum::response::{AppendHeaders, IntoResponse};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, Unavailable};
use super::MessageBody;
use crate::auth::device::{self, DEVICE_COOKIE};
use crate::auth::login;
use crate::auth::session::{cookie, set_cookie, SESSION_COOKIE};
use crate::domain::{Identifier, Password};
use crate::error::{ErrorBody, Result};
use crate::extract::{ApiJson, RequestMeta};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "user@example.com", "password": "correct horse battery"}))]
struct LoginRequest {
    /// Email, E.164 phone number (starts with `+`) or username, trimmed and normalised
    /// (NFKC, case-folded) as at registration.
    #[schema(min_length = 1)]
    identifier: String,
    /// 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    password: String,
}

/// Check a password and open a session.
///
/// Unknown identifier, wrong password and disabled account give the same 401 after the
/// same work. Rate limited per client IP and per identifier (a successful login clears
/// the identifier's budget).
#[utoipa::path(
    post,
    path = "/login",
    tag = "accounts",
    operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; the session comes back as the `session` cookie",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Host-session=<token>; Path=/; [Secure; ]HttpOnly; SameSite=Strict; \
                    Max-Age=<SESSION_ABSOLUTE_TIMEOUT>`. The token also works as \
                    `Authorization: Bearer <token>`.")),
            links(
                ("me" = (operation_id = "me", description = "Who is logged in (the session cookie)")),
                ("logout" = (operation_id = "logout", description = "End the session")),
            ),
            example = json!({"message": "Login successful"})),
        (status = 401, description = "Unknown identifier, wrong password or disabled account, alike",
            body = ErrorBody, example = json!({"error": "Invalid credentials"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse> {
    let identifier = Identifier::parse(&req.identifier)?;
    let password = Password::parse("password", req.password)?;
    let device_cookie = cookie(&headers, DEVICE_COOKIE, "/", state.settings.cookie_secure);
    let opened = login::open_session(&state, &identifier, &password, device_cookie, &meta).await?;
    let lifetime = state.settings.sessions.session_absolute_timeout;
    let secure = state.settings.cookie_secure;
    let mut cookies = vec![(
        SET_COOKIE,
        set_cookie(SESSION_COOKIE, &opened.token, "/", lifetime, secure),
    )];
    if opened.new_device {
        cookies.push((
            SET_COOKIE,
            device::set_new(&state.keys, opened.user_id, secure),
        ));
    }
    Ok((
        AppendHeaders(cookies),
        Json(MessageBody {
            message: "Login successful",
        }),
    ))
}
