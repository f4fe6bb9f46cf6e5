//! Second factors on a signed-in account: TOTP (`/mfa/totp/setup`, `/mfa/totp/confirm`,
//! `DELETE /mfa/totp`), recovery codes (`/mfa/recovery-codes`) and `/reauthenticate`.
//! The handlers parse and answer; the rules are in `auth::factors`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, StepUp, Unavailable};
use super::MessageBody;
use crate::auth::factors::{self, Method, Reauthentication};
use crate::auth::passkey;
use crate::domain::Password;
use crate::error::{ErrorBody, Result};
use crate::extract::{ApiJson, AuthSession, RequestMeta};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(totp_setup))
        .routes(routes!(totp_confirm))
        .routes(routes!(totp_remove))
        .routes(routes!(recovery_codes))
        .routes(routes!(reauthenticate))
        .routes(routes!(reauthenticate_passkey_start))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    "otpauth_uri": "otpauth://totp/Gatehouse:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Gatehouse",
    "qr_svg": "<?xml version=\"1.0\" standalone=\"yes\"?><svg …"
}))]
struct TotpSetup {
    /// The secret in base32 (160 bits), for typing into an authenticator app.
    secret: String,
    /// The same as an `otpauth://` URI (SHA-1, 6 digits, 30 s).
    otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    qr_svg: String,
}

/// Start enrolling an authenticator app (TOTP).
///
/// A new secret, stored encrypted and unconfirmed (replacing an earlier enrolment never
/// confirmed): nothing changes until `/mfa/totp/confirm`.
#[utoipa::path(
    post,
    path = "/mfa/totp/setup",
    tag = "second factors",
    operation_id = "totp_setup",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The secret to enrol", body = TotpSetup),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        (status = 409, description = "TOTP is already enabled", body = ErrorBody,
            example = json!({"error": "Two-factor authentication is already enabled",
                "code": "totp_already_enabled"})),
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn totp_setup(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<Json<TotpSetup>> {
    factors::step_up(&state, &session)?;
    let enrolment = factors::begin_totp(&state, &session.user, &meta).await?;
    Ok(Json(TotpSetup {
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauth_uri,
        qr_svg: enrolment.qr_svg,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"otp": "123456"}))]
struct OtpRequest {
    /// A current code from the authenticator app (`DELETE /mfa/totp` also takes a
    /// recovery code).
    #[schema(min_length = 1)]
    otp: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "message": "Two-factor authentication enabled",
    "recovery_codes": ["7k2mq-r4x9t", "…"]
}))]
struct RecoveryCodesBody {
    message: &'static str,
    /// Ten single-use codes (`xxxxx-xxxxx`, 50 bits each), shown this once: each signs in
    /// in place of the app's code.
    recovery_codes: Vec<String>,
}

/// Confirm the enrolment with a first code from the app: TOTP is on.
///
/// Answers ten recovery codes, shown this once. The session that confirmed counts as
/// having proved a second factor (`aal2`). The email is told.
#[utoipa::path(
    post,
    path = "/mfa/totp/confirm",
    tag = "second factors",
    operation_id = "totp_confirm",
    request_body = OtpRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "TOTP is on", body = RecoveryCodesBody),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        (status = 400, description = "Not the app's current code (or one already used)",
            body = ErrorBody, example = json!({"error": "Invalid or expired code",
                "code": "invalid_code"})),
        (status = 404, description = "No enrolment waiting: start with /mfa/totp/setup",
            body = ErrorBody),
        (status = 409, description = "TOTP is already enabled", body = ErrorBody),
        BodyErrors,
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn totp_confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<OtpRequest>,
) -> Result<Json<RecoveryCodesBody>> {
    factors::step_up(&state, &session)?;
    let codes = factors::confirm_totp(&state, &session, &req.otp, &meta).await?;
    Ok(Json(RecoveryCodesBody {
        message: "Two-factor authentication enabled",
        recovery_codes: codes,
    }))
}

/// Turn TOTP off, with a current code from the app or a recovery code.
///
/// The recovery codes go too when no passkey is left. The email is told.
#[utoipa::path(
    delete,
    path = "/mfa/totp",
    tag = "second factors",
    operation_id = "totp_remove",
    request_body = OtpRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "TOTP is off", body = MessageBody,
            example = json!({"message": "Two-factor authentication disabled"})),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        (status = 400, description = "Neither a current code nor an unused recovery code",
            body = ErrorBody, example = json!({"error": "Invalid or expired code",
                "code": "invalid_code"})),
        (status = 404, description = "TOTP is not enabled", body = ErrorBody),
        BodyErrors,
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn totp_remove(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<OtpRequest>,
) -> Result<Json<MessageBody>> {
    factors::step_up(&state, &session)?;
    factors::remove_totp(&state, &session.user, &req.otp, &meta).await?;
    Ok(Json(MessageBody {
        message: "Two-factor authentication disabled",
    }))
}

/// Replace the recovery codes with a new set, shown this once.
#[utoipa::path(
    post,
    path = "/mfa/recovery-codes",
    tag = "second factors",
    operation_id = "recovery_codes",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The new codes; the old ones no longer work",
            body = RecoveryCodesBody),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        (status = 409, description = "The account has no second factor to stand in for",
            body = ErrorBody),
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn recovery_codes(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<Json<RecoveryCodesBody>> {
    factors::step_up(&state, &session)?;
    let codes = factors::replace_recovery_codes(&state, &session.user, &meta).await?;
    Ok(Json(RecoveryCodesBody {
        message: "Recovery codes replaced",
        recovery_codes: codes,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"method": "totp", "code": "123456"}))]
struct ReauthenticateRequest {
    /// The account's password: enough on an account without a second factor; checked too,
    /// when given, on one with.
    #[schema(max_length = 256)]
    password: Option<String>,
    /// `totp`, `recovery_code` or `passkey`: required on an account with a second factor.
    method: Option<String>,
    /// The TOTP or recovery code.
    code: Option<String>,
    /// For `passkey`: the assertion answering `POST /reauthenticate/passkey/start`.
    #[schema(value_type = Option<Object>)]
    credential: Option<serde_json::Value>,
}

/// Prove yourself again on this session, for the sensitive changes that need a recent
/// proof (REAUTH_MAX_AGE).
///
/// An account without a second factor re-authenticates with its password; one with a
/// second factor with that factor (the session is then `aal2`).
#[utoipa::path(
    post,
    path = "/reauthenticate",
    tag = "second factors",
    operation_id = "reauthenticate",
    request_body = ReauthenticateRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The session's proof is fresh", body = MessageBody,
            example = json!({"message": "Re-authenticated"})),
        (status = 401, description = "A wrong password (`Invalid credentials`) or second \
            factor (`Invalid code`), or no live session", body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn reauthenticate(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<ReauthenticateRequest>,
) -> Result<Json<MessageBody>> {
    let given = Reauthentication {
        password: req
            .password
            .map(|p| Password::parse("password", p))
            .transpose()?,
        method: req.method.as_deref().map(Method::parse).transpose()?,
        code: req.code,
        credential: req.credential,
    };
    factors::reauthenticate(&state, &session, given, &meta).await?;
    Ok(Json(MessageBody {
        message: "Re-authenticated",
    }))
}

/// Start re-authenticating with a passkey: the request options for
/// `navigator.credentials.get()`, listing the account's passkeys.
#[utoipa::path(
    post,
    path = "/reauthenticate/passkey/start",
    tag = "second factors",
    operation_id = "reauthenticate_passkey_start",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "`{\"publicKey\": {…request options…}}`",
            body = Object),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
        (status = 422, description = "The account has no passkey", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
async fn reauthenticate_passkey_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(
        passkey::reauth_start(&state, &session.user, &meta).await?,
    ))
}
