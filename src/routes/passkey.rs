//! Passkeys: registering (`/passkeys/register/start`, `/passkeys/register/finish`),
//! listing and removing (`GET /passkeys`, `DELETE /passkeys/{id}`), signing in without a
//! password (`/passkeys/login/start`, `/passkeys/login/finish`) and as the second step of
//! a login (`/login/mfa/passkey/start`). The rules are in `auth::passkey`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::login::{mfa_token, session_response};
use super::openapi::{BodyErrors, RateLimited, StepUp, Unavailable};
use super::rfc3339;
use super::MessageBody;
use crate::auth::{factors, passkey};
use crate::domain::Identifier;
use crate::error::{ErrorBody, Result};
use crate::extract::{ApiJson, ApiJsonOpt, AuthSession, RequestMeta};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_start))
        .routes(routes!(register_finish))
        .routes(routes!(list))
        .routes(routes!(remove))
        .routes(routes!(login_start))
        .routes(routes!(login_finish))
        .routes(routes!(mfa_start))
}

/// Start registering a passkey: the creation options for `navigator.credentials.create()`.
///
/// A discoverable credential is preferred (it can then sign in without a username), and
/// user verification is required. The account's passkeys are excluded.
#[utoipa::path(
    post,
    path = "/passkeys/register/start",
    tag = "second factors",
    operation_id = "passkey_register_start",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "`{\"publicKey\": {…creation options…}}`", body = Object),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired", "code": "not_logged_in"})),
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn register_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<Json<serde_json::Value>> {
    factors::step_up(&state, &session)?;
    Ok(Json(
        passkey::register_start(&state, &session.user, &meta).await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RegisterFinishRequest {
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, as JSON.
    #[schema(value_type = Object)]
    credential: serde_json::Value,
    /// A name for it, at most 64 characters (default "Passkey").
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "q83vEjRWeJCrze8SNFZ4kA", "name": "Laptop",
    "created_at": "2026-11-30T10:00:00Z", "last_used_at": null}))]
struct PasskeyBody {
    id: String,
    name: String,
    /// RFC 3339, UTC.
    created_at: String,
    /// RFC 3339, UTC; null until first used.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<Option<String>>,
}

/// Finish registering a passkey: the credential answering the options of
/// `/passkeys/register/start` is checked and stored. The email is told.
#[utoipa::path(
    post,
    path = "/passkeys/register/finish",
    tag = "second factors",
    operation_id = "passkey_register_finish",
    request_body = RegisterFinishRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 201, description = "Registered", body = PasskeyBody),
        (status = 401, description = "The credential does not answer a live ceremony of this \
            account, or does not verify", body = ErrorBody,
            example = json!({"error": "Invalid code", "code": "invalid_second_factor"})),
        (status = 409, description = "This credential is registered already", body = ErrorBody),
        BodyErrors,
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn register_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<RegisterFinishRequest>,
) -> Result<(StatusCode, Json<PasskeyBody>)> {
    factors::step_up(&state, &session)?;
    let added =
        passkey::register_finish(&state, &session.user, req.credential, req.name, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(PasskeyBody {
            id: added.id,
            name: added.name,
            created_at: rfc3339(added.created_at),
            last_used_at: None,
        }),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
struct PasskeyList {
    /// Oldest first.
    passkeys: Vec<PasskeyBody>,
}

/// The account's passkeys.
#[utoipa::path(
    get,
    path = "/passkeys",
    tag = "second factors",
    operation_id = "passkeys",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The passkeys", body = PasskeyList),
        (status = 401, description = "No live session", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
async fn list(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<Json<PasskeyList>> {
    crate::auth::account::spend_limits(&state, &session.user, &meta).await?;
    let passkeys = state
        .store
        .passkeys(session.user.id)
        .await?
        .into_iter()
        .map(|p| PasskeyBody {
            id: p.public_id,
            name: p.name,
            created_at: rfc3339(p.created_at),
            last_used_at: Some(p.last_used_at.map(rfc3339)),
        })
        .collect();
    Ok(Json(PasskeyList { passkeys }))
}

/// Remove one of the account's passkeys. Another account's id is "not found", alike.
#[utoipa::path(
    delete,
    path = "/passkeys/{id}",
    tag = "second factors",
    operation_id = "passkey_remove",
    params(("id" = String, Path, description = "The passkey's `id`")),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Removed", body = MessageBody,
            example = json!({"message": "Passkey removed"})),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired", "code": "not_logged_in"})),
        (status = 404, description = "Not one of this account's passkeys", body = ErrorBody,
            example = json!({"error": "Passkey not found", "code": "passkey_not_found"})),
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn remove(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<MessageBody>> {
    factors::step_up(&state, &session)?;
    // An id that is not even text (`%FF`) names no passkey either; passkey::remove
    // judges the rest (someone else's id alike).
    let id = id.map(|Path(id)| id).unwrap_or_default();
    passkey::remove(&state, &session.user, &id, &meta).await?;
    Ok(Json(MessageBody {
        message: "Passkey removed",
    }))
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
struct LoginStartRequest {
    /// Optional: binds the ceremony to this account. The options are the same either way
    /// (they never list credentials).
    identifier: Option<String>,
}

/// Start signing in with a passkey, no password: request options for a discoverable
/// credential.
#[utoipa::path(
    post,
    path = "/passkeys/login/start",
    tag = "second factors",
    operation_id = "passkey_login_start",
    request_body(content = Option<LoginStartRequest>, description = "May be empty"),
    responses(
        (status = 200, description = "`{\"publicKey\": {…request options…}}`", body = Object),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn login_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJsonOpt(req): ApiJsonOpt<LoginStartRequest>,
) -> Result<Json<serde_json::Value>> {
    let identifier = req
        .unwrap_or_default()
        .identifier
        .map(|i| Identifier::parse(&i))
        .transpose()?;
    Ok(Json(
        passkey::login_start(&state, identifier.as_ref(), &meta).await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct CredentialRequest {
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, as JSON.
    #[schema(value_type = Object)]
    credential: serde_json::Value,
}

/// Finish signing in with a passkey: a session (`aal2` when the authenticator verified its
/// user, else `aal1`), exactly like a login.
#[utoipa::path(
    post,
    path = "/passkeys/login/finish",
    tag = "second factors",
    operation_id = "passkey_login_finish",
    request_body = CredentialRequest,
    responses(
        (status = 200, description = "Logged in; the session comes back as the `session` cookie",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Host-session=<token>; Path=/; [Secure; ]HttpOnly; SameSite=Strict; \
                    Max-Age=<SESSION_ABSOLUTE_TIMEOUT>`, as after a password login")),
            example = json!({"message": "Login successful"})),
        (status = 401, description = "The assertion does not answer a live ceremony, is not \
            of a registered passkey, or does not verify, alike", body = ErrorBody,
            example = json!({"error": "Invalid code", "code": "invalid_second_factor"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn login_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<CredentialRequest>,
) -> Result<Response> {
    let opened = passkey::login_finish(&state, req.credential, &meta).await?;
    Ok(session_response(&state, &opened, false))
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
struct MfaStartRequest {
    /// From the 401 of `POST /login`; may be left out when the `mfa_token` cookie carries
    /// it.
    mfa_token: Option<String>,
}

/// Start the passkey second step of a login: request options listing the account's
/// passkeys. Then `POST /login/mfa` with `method: "passkey"` and the `credential`.
#[utoipa::path(
    post,
    path = "/login/mfa/passkey/start",
    tag = "second factors",
    operation_id = "login_mfa_passkey_start",
    request_body(content = Option<MfaStartRequest>, description = "May be empty"),
    responses(
        (status = 200, description = "`{\"publicKey\": {…request options…}}`", body = Object),
        (status = 401, description = "The `mfa_token` is unknown, expired or used",
            body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn mfa_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJsonOpt(req): ApiJsonOpt<MfaStartRequest>,
) -> Result<Json<serde_json::Value>> {
    let token = mfa_token(&state, &headers, req.unwrap_or_default().mfa_token)?;
    Ok(Json(
        passkey::second_step_start(&state, &token, &meta).await?,
    ))
}
