//! `POST /send-verification` and `POST /verify`: proving an email or phone with a code
//! (the flow: `auth::verification`).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, Unavailable};
use super::recovery::{channel_schema, parse_channel};
use super::MessageBody;
use crate::auth::verification;
use crate::domain::{Identifier, OtpCode};
use crate::error::{ErrorBody, Result};
use crate::extract::{ApiJson, RequestMeta};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_verification))
        .routes(routes!(verify))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "user@example.com", "channel": "email"}))]
struct SendVerificationRequest {
    /// Email, E.164 phone number (starts with `+`) or username.
    #[schema(min_length = 1)]
    identifier: String,
    /// Which address to verify: "email" or "sms"; by default the identifier's kind decides.
    #[schema(schema_with = channel_schema)]
    channel: Option<String>,
}

/// Ask for a code that proves the account's email (or phone).
///
/// Answers the same whether or not the account exists or the address is verified
/// already; the code is queued for delivery after the answer. Rate limited per client IP
/// and per identifier; past the hourly cap of codes per account nothing is sent.
#[utoipa::path(
    post,
    path = "/send-verification",
    tag = "accounts",
    operation_id = "send_verification",
    request_body = SendVerificationRequest,
    responses(
        (status = 200, description = "Accepted, whether or not the account exists",
            body = MessageBody,
            links(("verify" = (
                operation_id = "verify",
                request_body = json!({"identifier": "$request.body#/identifier", "otp": "000000"}),
                description = "Type back the code that was sent"
            ))),
            example = json!({"message": "Verification code sent"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn send_verification(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<SendVerificationRequest>,
) -> Result<Json<MessageBody>> {
    let identifier = Identifier::parse(&req.identifier)?;
    let channel = parse_channel(req.channel.as_deref())?;
    verification::request(&state, &identifier, channel, &meta).await?;
    Ok(Json(MessageBody {
        message: "Verification code sent",
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "user@example.com", "otp": "713113", "channel": "email"}))]
struct VerifyRequest {
    /// Any identifier of the account.
    #[schema(min_length = 1)]
    identifier: String,
    /// Exactly 6 ASCII digits (surrounding spaces ignored).
    #[schema(min_length = 6)]
    otp: String,
    /// Which address the code proves: "email" or "sms"; by default the identifier's kind
    /// decides.
    #[schema(schema_with = channel_schema)]
    channel: Option<String>,
}

/// Prove the account's email (or phone) with the code sent to it.
///
/// Wrong, expired, used or exhausted code and unknown identifier give the same 400. A
/// recovery code verifies nothing. Rate limited per client IP and per identifier.
#[utoipa::path(
    post,
    path = "/verify",
    tag = "accounts",
    operation_id = "verify",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The address is verified", body = MessageBody,
            example = json!({"message": "Verified"})),
        BodyErrors,
        // After BodyErrors, whose 400 it replaces.
        (status = 400, description = "Wrong, expired, used or exhausted code, or the body is \
            malformed (not JSON, not an object, a field missing)",
            body = ErrorBody, example = json!({"error": "Invalid or expired code",
                "code": "invalid_code"})),
        RateLimited,
        Unavailable,
    )
)]
async fn verify(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Json<MessageBody>> {
    let identifier = Identifier::parse(&req.identifier)?;
    let otp = OtpCode::parse(&req.otp)?;
    let channel = parse_channel(req.channel.as_deref())?;
    verification::verify(&state, &identifier, &otp, channel, &meta).await?;
    Ok(Json(MessageBody {
        message: "Verified",
    }))
}
