//! Password recovery, the seed's three steps: `POST /forgot-password` asks for a one-time
//! code, `POST /validate-otp` trades a right code for a single-use reset token,
//! `POST /reset-password` needs that token. The handlers parse, call the flows in
//! `auth::codes` and `auth::reset`, and answer; the rules live there.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::HeaderMap;
use axum::response::{AppendHeaders, IntoResponse};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, Unavailable};
use super::MessageBody;
use crate::auth::device::{self, DEVICE_COOKIE};
use crate::auth::session::{cookie, set_cookie, RESET_COOKIE};
use crate::auth::{codes, reset};
use crate::domain::{Identifier, OtpCode, ParseError};
use crate::error::{ErrorBody, Result};
use crate::extract::{ApiJson, RequestMeta};
use crate::notify::Channel;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(forgot_password))
        .routes(routes!(validate_otp))
        .routes(routes!(reset_password))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "user@example.com", "channel": "email"}))]
struct ForgotRequest {
    /// Email, E.164 phone number (starts with `+`) or username.
    #[schema(min_length = 1)]
    identifier: String,
    /// "email" or "sms"; by default the identifier's kind decides.
    #[schema(schema_with = channel_schema)]
    channel: Option<String>,
}

/// `channel`: an enum of "email" and "sms", plus what also means "not given".
pub(super) fn channel_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([
            serde_json::json!("email"),
            serde_json::json!("sms"),
            serde_json::json!(""),
            serde_json::Value::Null,
        ]))
        .description(Some(
            "`email` or `sms` (any case, surrounding spaces ignored). Absent, null or empty: \
             SMS when the identifier is a phone number, email otherwise. An account without \
             a phone gets the code by email whatever is asked.",
        ))
        .build()
}

/// Ask for a one-time code.
///
/// Answers the same whether or not the account exists; the code is queued for delivery,
/// never sent inline. Rate limited per client IP and per identifier; past the hourly cap
/// of codes per account no code is sent but the answer does not change.
#[utoipa::path(
    post,
    path = "/forgot-password",
    tag = "recovery",
    operation_id = "forgot_password",
    request_body = ForgotRequest,
    responses(
        (status = 200, description = "Accepted, whether or not the account exists",
            body = MessageBody,
            links(
                ("validate_otp" = (
                    operation_id = "validate_otp",
                    request_body = json!({"identifier": "$request.body#/identifier", "otp": "000000"}),
                    description = "Trade the code that was sent for a reset token"
                )),
            ),
            example = json!({"message": "OTP sent successfully"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn forgot_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ForgotRequest>,
) -> Result<Json<MessageBody>> {
    let identifier = Identifier::parse(&req.identifier)?;
    let channel = parse_channel(req.channel.as_deref())?;
    codes::request(
        &state,
        &identifier,
        channel,
        device_cookie(&state, &headers),
        &meta,
    )
    .await?;
    Ok(Json(MessageBody {
        message: "OTP sent successfully",
    }))
}

/// A `channel` field: `email` or `sms` in any case, or not given (absent, null, empty).
pub(super) fn parse_channel(raw: Option<&str>) -> Result<Option<Channel>, ParseError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) if c.eq_ignore_ascii_case("email") => Ok(Some(Channel::Email)),
        Some(c) if c.eq_ignore_ascii_case("sms") => Ok(Some(Channel::Sms)),
        Some(_) => Err(ParseError::new("channel", "must be \"email\" or \"sms\"")),
    }
}

/// The request's device cookie (`auth::device`), as sent.
fn device_cookie(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, DEVICE_COOKIE, "/", state.settings.cookie_secure)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "user@example.com", "otp": "713113"}))]
struct ValidateRequest {
    /// Any identifier of the account: the code is bound to the user, not to the identifier
    /// it was asked with.
    #[schema(min_length = 1)]
    identifier: String,
    /// Exactly 6 ASCII digits (surrounding spaces ignored).
    #[schema(min_length = 6)]
    otp: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "message": "OTP verified. Proceed to reset password.",
    "reset_token": "KdAZW5apw5o3lQm4D1w6k0bqC5vTnYb0GdQq3xk7n8Q"
}))]
struct ValidateResponse {
    message: &'static str,
    /// Single use, valid `RESET_TOKEN_TTL` (15 minutes by default): 256 random bits,
    /// base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    reset_token: String,
}

/// Trade a right code for a single-use reset token.
///
/// Wrong, expired, used or exhausted code and unknown identifier give the same 400.
/// Each code dies after `OTP_MAX_ATTEMPTS` guesses. Rate limited per client IP and per
/// identifier.
#[utoipa::path(
    post,
    path = "/validate-otp",
    tag = "recovery",
    operation_id = "validate_otp",
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "The code was right; here is the reset token, also as a cookie",
            body = ValidateResponse,
            headers(("Set-Cookie" = String,
                description = "`__Secure-reset_token=<token>; Path=/reset-password; [Secure; ]HttpOnly; \
                    SameSite=Strict; Max-Age=<RESET_TOKEN_TTL>`")),
            links(
                ("reset_password" = (
                    operation_id = "reset_password",
                    request_body = json!({
                        "identifier": "$request.body#/identifier",
                        "reset_token": "$response.body#/reset_token",
                        "new_password": "a brand new passphrase"
                    }),
                    description = "Set a new password with the token"
                )),
            )),
        BodyErrors,
        // After BodyErrors, whose 400 it replaces.
        (status = 400, description = "Wrong, expired, used or exhausted code, or the body is \
            malformed (not JSON, not an object, a field missing)",
            body = ErrorBody, example = json!({"error": "Invalid or expired OTP",
                "code": "invalid_otp"})),
        RateLimited,
        Unavailable,
    )
)]
async fn validate_otp(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ValidateRequest>,
) -> Result<impl IntoResponse> {
    let identifier = Identifier::parse(&req.identifier)?;
    let otp = OtpCode::parse(&req.otp)?;
    let redeemed = codes::validate(
        &state,
        &identifier,
        &otp,
        device_cookie(&state, &headers),
        &meta,
    )
    .await?;
    let ttl = state.settings.recovery.reset_token_ttl;
    let secure = state.settings.cookie_secure;
    let mut cookies = vec![(
        SET_COOKIE,
        set_cookie(
            RESET_COOKIE,
            &redeemed.reset_token,
            "/reset-password",
            ttl,
            secure,
        ),
    )];
    if redeemed.new_device {
        cookies.push((
            SET_COOKIE,
            device::set_new(&state.keys, redeemed.user_id, secure),
        ));
    }
    Ok((
        AppendHeaders(cookies),
        Json(ValidateResponse {
            message: "OTP verified. Proceed to reset password.",
            reset_token: redeemed.reset_token,
        }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "identifier": "user@example.com",
    "new_password": "a brand new passphrase",
    "reset_token": "KdAZW5apw5o3lQm4D1w6k0bqC5vTnYb0GdQq3xk7n8Q"
}))]
struct ResetRequest {
    /// Any identifier of the account the token was issued for.
    #[schema(min_length = 1)]
    identifier: String,
    /// 8 to 256 characters, all of which count (compared in Unicode NFKC); not one of the
    /// 10,000 most common passwords, not mostly one repeated character, and not built from
    /// `gatehouse` or the account's username, email or phone (in any case, reversed, with
    /// look-alike digits, or with digits and symbols added around it). Checked once the
    /// token is.
    #[schema(min_length = 8, max_length = 256)]
    new_password: String,
    /// Also accepted from the `reset_token` cookie set by /validate-otp.
    /// Null or empty: the cookie is used.
    reset_token: Option<String>,
}

/// Set a new password with a reset token.
///
/// The token is single use; consuming it kills every other code and token of the user
/// and revokes all their sessions, and a "your password was changed" email is queued.
/// There is no automatic login. Rate limited per client IP.
#[utoipa::path(
    post,
    path = "/reset-password",
    tag = "recovery",
    operation_id = "reset_password",
    request_body = ResetRequest,
    params(
        ("reset_token" = Option<String>, Cookie,
            description = "The reset token set by `/validate-otp`, used when the body has none"),
    ),
    responses(
        (status = 200, description = "The password was changed; every session was revoked",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Secure-reset_token=; Path=/reset-password; [Secure; ]HttpOnly; \
                    SameSite=Strict; Max-Age=0`: the token cookie is cleared")),
            example = json!({"message": "Password reset successful"})),
        (status = 401, description = "No reset token, or it is invalid, expired or used",
            body = ErrorBody, example = json!({"error": "Invalid or expired reset token",
                "code": "invalid_reset_token"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn reset_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<impl IntoResponse> {
    let identifier = Identifier::parse(&req.identifier)?;
    // The body's token, else the cookie /validate-otp set.
    let token = req
        .reset_token
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            cookie(
                &headers,
                RESET_COOKIE,
                "/reset-password",
                state.settings.cookie_secure,
            )
        });
    reset::reset_password(&state, &identifier, token, req.new_password, &meta).await?;
    let clear = set_cookie(
        RESET_COOKIE,
        "",
        "/reset-password",
        Duration::ZERO,
        state.settings.cookie_secure,
    );
    Ok((
        AppendHeaders([(SET_COOKIE, clear)]),
        Json(MessageBody {
            message: "Password reset successful",
        }),
    ))
}
