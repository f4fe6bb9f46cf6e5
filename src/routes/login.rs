//! `POST /login`: check a password and open a session, or ask for the second factor;
//! `POST /login/mfa`: the second factor (the flows: `auth::login`).

use std::time::Duration;

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, Unavailable};
use super::recovery::{channel_schema, parse_channel};
use super::MessageBody;
use crate::auth::code_login;
use crate::auth::device::{self, DEVICE_COOKIE};
use crate::auth::factors::Method;
use crate::auth::login::{self, Opened, Outcome};
use crate::auth::session::{cookie, set_cookie, SessionCookie};
use crate::domain::{Identifier, OtpCode, Password};
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::{ApiJson, RequestMeta};
use crate::state::AppState;

/// The cookie that carries the `mfa_token` to the second step, scoped to `/login`.
pub const MFA_COOKIE: &str = "mfa_token";
const MFA_COOKIE_PATH: &str = "/login";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(login_mfa))
        .routes(routes!(login_code_request))
        .routes(routes!(login_code))
}

/// The 401 of a login: `Invalid credentials` alone (code `invalid_credentials`), or, after a
/// right first factor on an account with a second factor, `Second factor required` (code
/// `mfa_required`) with what the second step needs.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "Second factor required", "code": "mfa_required",
    "mfa_required": true, "mfa_token": "3q2-7wE…", "methods": ["totp", "recovery_code"]}))]
pub struct MfaRequired {
    error: &'static str,
    /// `mfa_required`, or `invalid_credentials` (as in every error body).
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    code: &'static str,
    /// True when a second factor is required: a client that knows nothing of second
    /// factors sees a 401 and no session.
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_required: Option<bool>,
    /// Opaque; present it to `POST /login/mfa` (or let the `mfa_token` cookie carry it).
    /// Lives 5 minutes and dies after 5 wrong second factors.
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<String>,
    /// The second factors this account can use: `totp`, `recovery_code`, `passkey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<&'static str>>,
}

/// The answer to a right first factor (a password, a login code): the session with its
/// cookies, or the 401 that asks for the second factor with the `mfa_token` cookie.
pub fn outcome_response(state: &AppState, outcome: Outcome) -> Response {
    let secure = state.settings.cookie_secure;
    match outcome {
        Outcome::Opened(opened) => session_response(state, &opened, true),
        Outcome::SecondFactor { mfa_token, methods } => {
            let cookie = set_cookie(
                MFA_COOKIE,
                &mfa_token,
                MFA_COOKIE_PATH,
                Duration::from_secs(login::MFA_TOKEN_TTL as u64),
                secure,
            );
            (
                StatusCode::UNAUTHORIZED,
                AppendHeaders([(SET_COOKIE, cookie)]),
                Json(MfaRequired {
                    error: "Second factor required",
                    code: "mfa_required",
                    mfa_required: Some(true),
                    mfa_token: Some(mfa_token),
                    methods: Some(methods),
                }),
            )
                .into_response()
        }
    }
}

/// `{"message": "Login successful"}` with the session cookie (and a device cookie for a
/// browser new to the account, when `device_cookie_allowed`).
pub fn session_response(
    state: &AppState,
    opened: &Opened,
    device_cookie_allowed: bool,
) -> Response {
    let lifetime = state.settings.sessions.session_absolute_timeout;
    let secure = state.settings.cookie_secure;
    let mut cookies: Vec<(_, HeaderValue)> = vec![(
        SET_COOKIE,
        SessionCookie::of(&state.settings).set(&opened.token, lifetime),
    )];
    if opened.new_device && device_cookie_allowed {
        cookies.push((
            SET_COOKIE,
            device::set_new(&state.keys, opened.user_id, secure),
        ));
    }
    (
        AppendHeaders(cookies),
        Json(MessageBody {
            message: "Login successful",
        }),
    )
        .into_response()
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
        (status = 401, description = "Unknown identifier, wrong password or disabled account, \
            alike (`Invalid credentials`); or the right password on an account with a second \
            factor: no session, and an `mfa_token` for `POST /login/mfa` (also set as the \
            `mfa_token` cookie, `Path=/login`)",
            body = MfaRequired, example = json!({"error": "Invalid credentials",
                "code": "invalid_credentials"})),
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
) -> Result<Response> {
    let identifier = Identifier::parse(&req.identifier)?;
    let password = Password::parse("password", req.password)?;
    let device_cookie = cookie(&headers, DEVICE_COOKIE, "/", state.settings.cookie_secure);
    let outcome = login::open_session(&state, &identifier, &password, device_cookie, &meta).await?;
    Ok(outcome_response(&state, outcome))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"mfa_token": "3q2-7wE…", "method": "totp", "code": "123456"}))]
struct LoginMfaRequest {
    /// From the 401 of `POST /login`; may be left out when the `mfa_token` cookie carries
    /// it.
    mfa_token: Option<String>,
    /// `totp`, `recovery_code` or `passkey`.
    method: String,
    /// The TOTP code (6 digits) or a recovery code (`xxxxx-xxxxx`).
    code: Option<String>,
    /// For `passkey`: the `PublicKeyCredential` from `navigator.credentials.get()` with
    /// the options of `POST /login/mfa/passkey/start`, as JSON.
    #[schema(value_type = Option<Object>)]
    credential: Option<serde_json::Value>,
}

/// The `mfa_token` of a second step: the body's, else the cookie's.
pub fn mfa_token(state: &AppState, headers: &HeaderMap, body: Option<String>) -> Result<String> {
    body.or_else(|| {
        cookie(
            headers,
            MFA_COOKIE,
            MFA_COOKIE_PATH,
            state.settings.cookie_secure,
        )
    })
    .ok_or_else(|| ApiError::invalid("mfa_token", "is required (from the 401 of /login)"))
}

/// The second step of a login: a second factor for the `mfa_token`.
///
/// A right one opens the session exactly like a password login, at assurance level
/// `aal2`, and uses the token up. Each try takes one of the token's 5 and one of the
/// account's second-factor attempts (RATE_MFA_PER_ACCOUNT); a TOTP time step is accepted
/// once, a recovery code used once.
#[utoipa::path(
    post,
    path = "/login/mfa",
    tag = "second factors",
    operation_id = "login_mfa",
    request_body = LoginMfaRequest,
    responses(
        (status = 200, description = "Logged in; the session comes back as the `session` cookie",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Host-session=<token>; Path=/; [Secure; ]HttpOnly; SameSite=Strict; \
                    Max-Age=<SESSION_ABSOLUTE_TIMEOUT>`, as after a password login")),
            example = json!({"message": "Login successful"})),
        (status = 401, description = "A wrong, used or replayed code or assertion; or the \
            `mfa_token` is unknown, expired, used or out of tries (log in again)",
            body = ErrorBody, example = json!({"error": "Invalid code",
                "code": "invalid_second_factor"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn login_mfa(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginMfaRequest>,
) -> Result<Response> {
    let token = mfa_token(&state, &headers, req.mfa_token)?;
    let method = Method::parse(&req.method)?;
    let opened = match method {
        Method::Passkey => {
            let credential = req
                .credential
                .ok_or_else(|| ApiError::invalid("credential", "is required for `passkey`"))?;
            crate::auth::passkey::second_step(&state, &token, credential, &meta).await?
        }
        Method::Totp | Method::RecoveryCode => {
            let code = req
                .code
                .ok_or_else(|| ApiError::invalid("code", "is required"))?;
            login::second_step(&state, &token, method, &code, &meta).await?
        }
    };
    let device_cookie = cookie(&headers, DEVICE_COOKIE, "/", state.settings.cookie_secure);
    let known_device = device::of_user(&state.keys, device_cookie, opened.user_id).is_some();
    let mut response = session_response(&state, &opened, !known_device);
    // The token is used up: the browser may forget it.
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(
            MFA_COOKIE,
            "",
            MFA_COOKIE_PATH,
            Duration::ZERO,
            state.settings.cookie_secure,
        ),
    );
    Ok(response)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "alice", "channel": "email"}))]
struct LoginCodeRequest {
    /// Email, E.164 phone number (starts with `+`) or username.
    #[schema(min_length = 1)]
    identifier: String,
    /// Where the code goes: "email" or "sms"; by default the identifier's kind decides
    /// (SMS for a phone number, else email).
    #[schema(schema_with = channel_schema)]
    channel: Option<String>,
}

/// Ask for a sign-in code (CODE_LOGIN; 404 when off).
///
/// Answers the same whether or not the account exists; the code goes out after the
/// answer, only to an address the account's proofs allow. Rate limited per client IP
/// and per identifier, within the account's hourly cap of codes.
#[utoipa::path(
    post,
    path = "/login/code/request",
    tag = "second factors",
    operation_id = "login_code_request",
    request_body = LoginCodeRequest,
    responses(
        (status = 200, description = "Accepted, whether or not the account exists",
            body = MessageBody, example = json!({"message": "OTP sent successfully"})),
        (status = 404, description = "CODE_LOGIN is off", body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn login_code_request(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<LoginCodeRequest>,
) -> Result<Json<MessageBody>> {
    code_login_enabled(&state)?;
    let identifier = Identifier::parse(&req.identifier)?;
    let channel = parse_channel(req.channel.as_deref())?;
    code_login::request(&state, &identifier, channel, &meta).await?;
    Ok(Json(MessageBody {
        message: "OTP sent successfully",
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "alice", "otp": "713113"}))]
struct LoginCodeBody {
    /// The identifier the code was asked for with.
    #[schema(min_length = 1)]
    identifier: String,
    /// Exactly 6 ASCII digits (surrounding spaces ignored).
    #[schema(min_length = 6)]
    otp: String,
    /// The channel the code was asked on, if not the identifier's default.
    #[schema(schema_with = channel_schema)]
    channel: Option<String>,
}

/// Sign in with a code (CODE_LOGIN; 404 when off).
///
/// A right code signs in (`aal1`) exactly like a password, and proves the address it was
/// sent to; an account with a second factor answers the same 401 as `/login` with an
/// `mfa_token`. Wrong, expired, used or exhausted code and unknown identifier give the
/// same 400.
#[utoipa::path(
    post,
    path = "/login/code",
    tag = "second factors",
    operation_id = "login_code",
    request_body = LoginCodeBody,
    responses(
        (status = 200, description = "Logged in; the session comes back as the `session` cookie",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Host-session=<token>; Path=/; [Secure; ]HttpOnly; SameSite=Strict; \
                    Max-Age=<SESSION_ABSOLUTE_TIMEOUT>`, as after a password login")),
            example = json!({"message": "Login successful"})),
        BodyErrors,
        // After BodyErrors, whose 400 it replaces.
        (status = 400, description = "Wrong, expired, used or exhausted code, or the body is \
            malformed", body = ErrorBody, example = json!({"error": "Invalid or expired code",
                "code": "invalid_code"})),
        (status = 401, description = "The account has a second factor: no session, and an \
            `mfa_token` for `POST /login/mfa`", body = MfaRequired),
        (status = 404, description = "CODE_LOGIN is off", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
async fn login_code(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<LoginCodeBody>,
) -> Result<Response> {
    code_login_enabled(&state)?;
    let identifier = Identifier::parse(&req.identifier)?;
    let otp = OtpCode::parse(&req.otp)?;
    let channel = parse_channel(req.channel.as_deref())?;
    let outcome = code_login::login(&state, &identifier, &otp, channel, &meta).await?;
    Ok(outcome_response(&state, outcome))
}

/// The code-login routes answer 404 while CODE_LOGIN is off, before reading anything.
fn code_login_enabled(state: &AppState) -> Result<()> {
    if state.settings.factors.code_login {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}
