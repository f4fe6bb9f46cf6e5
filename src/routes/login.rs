//! `POST /login`: check a password and open a session.
//!
//! Unknown identifier, wrong password and disabled account give the same 401 after the
//! same work (one hash, against a dummy when there is no user), held until the slowest
//! verification seen lately has had time to run (whatever format the stored hash is in),
//! so neither the answer nor its timing tells which accounts exist.

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::HeaderMap;
use axum::response::{AppendHeaders, IntoResponse};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, Unavailable};
use super::{audit, audit_record, limit, MessageBody};
use crate::auth::device;
use crate::auth::lookup;
use crate::auth::session::{set_cookie, SESSION_COOKIE};
use crate::auth::token::{new_token, token_hash};
use crate::domain::{Identifier, Password};
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::{ApiJson, RequestMeta};
use crate::state::{now, AppState};
use crate::store::NewSession;

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
    let limits = &state.settings.limits;
    limit(&state, &limits.login_per_ip, "login:ip", &meta.ip_key).await?;

    let found = lookup::find_user(&*state.store, &identifier).await?;
    // The budget of failed attempts belongs to the account, whichever of its identifiers
    // is typed (one budget, not three); attempts from one of its devices have their own,
    // so an attacker spending the account's cannot lock the owner out (auth::device).
    let secure = state.settings.cookie_secure;
    let device = found
        .as_ref()
        .and_then(|u| device::presented(&state.keys, &headers, secure, u.id));
    let account = match (&device, &found) {
        (Some(d), _) => format!("device:{}", d.id),
        (None, Some(u)) => format!("user:{}", u.id),
        (None, None) => format!("name:{}", identifier.key()),
    };
    limit(&state, &limits.login_per_account, "login:account", &account).await?;
    limit(
        &state,
        &limits.login_per_account_long,
        "login:account-long",
        &account,
    )
    .await?;
    let known_id = found.as_ref().map(|u| u.id);
    let user = found.filter(|u| u.disabled_at.is_none());
    let (verdict, hold) = state
        .hasher
        .verify_held(&password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await
        .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|_| verdict.ok) else {
        tracing::info!("login failed");
        metrics::counter!("gatehouse_logins_total", "result" => "failed").increment(1);
        audit(&state, "login_failed", known_id, &meta).await;
        // A wrapped bcrypt hash costs more than the dummy, an older argon2 one less: the
        // refusal waits for the same floor either way. Success is not held.
        hold.wait().await;
        return Err(ApiError::InvalidCredentials);
    };
    state
        .limiter
        .reset(&format!("login:account:{account}"))
        .await;
    state
        .limiter
        .reset(&format!("login:account-long:{account}"))
        .await;

    let now = now();
    if verdict.needs_rehash {
        let new_hash = state
            .hasher
            .hash(&password)
            .await
            .map_err(ApiError::internal)?;
        // Conditional on the old hash: never undo a reset that raced with this login.
        state
            .store
            .replace_password_hash(user.id, &user.password_hash, &new_hash, now)
            .await?;
        tracing::info!(
            user_id = user.id,
            "password rehashed to current argon2id parameters"
        );
    }

    let token = new_token();
    let lifetime = state.settings.sessions.session_absolute_timeout;
    let ip = meta.ip.to_string();
    state
        .store
        .create_session(
            &NewSession {
                user_id: user.id,
                token_hash: &token_hash(&token),
                now,
                expires_at: now + lifetime.as_secs() as i64,
            },
            &audit_record("login_succeeded", Some(user.id), &meta, &ip),
        )
        .await?;
    tracing::info!(user_id = user.id, "login succeeded");
    metrics::counter!("gatehouse_logins_total", "result" => "succeeded").increment(1);
    let mut cookies = vec![(
        SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &token,
            "/",
            lifetime,
            state.settings.cookie_secure,
        ),
    )];
    if device.is_none() {
        cookies.push((SET_COOKIE, device::set_new(&state.keys, user.id, secure)));
    }
    Ok((
        AppendHeaders(cookies),
        Json(MessageBody {
            message: "Login successful",
        }),
    ))
}
