//! Self-service with a live session: `POST /change-password`, `POST /change-email` and
//! `POST /confirm-email-change`, `POST /change-phone` and `POST /confirm-phone-change`,
//! `DELETE /me`. The handlers parse and answer; the rules are in `auth::account`.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, IntoResponse};
use axum::Json;
use serde::{Deserialize, Deserializer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, StepUp, Unavailable};
use super::MessageBody;
use crate::auth::session::SessionCookie;
use crate::auth::{account, factors};
use crate::domain::{Email, OtpCode, Password, Phone};
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::{ApiJson, AuthSession, RequestMeta};
use crate::notify::Channel;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_password))
        .routes(routes!(change_email))
        .routes(routes!(confirm_email_change))
        .routes(routes!(change_phone))
        .routes(routes!(confirm_phone_change))
        .routes(routes!(delete_me))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "current_password": "correct horse battery",
    "new_password": "a brand new passphrase",
    "sign_out_other_sessions": true
}))]
struct ChangePasswordRequest {
    /// The account's password now.
    #[schema(min_length = 1, max_length = 256)]
    current_password: String,
    /// The registration policy: 8 to 256 characters, not a common password, not built
    /// from the account's username, email or phone.
    #[schema(min_length = 8, max_length = 256)]
    new_password: String,
    /// End every other session of the account (default true).
    sign_out_other_sessions: Option<bool>,
}

/// Change the password.
///
/// The session that asked gets a new token (the old one stops working); every other
/// session ends unless `sign_out_other_sessions` is false; outstanding recovery codes and
/// reset tokens die; the email is told. A wrong current password counts against the
/// account's login limits.
#[utoipa::path(
    post,
    path = "/change-password",
    tag = "self-service",
    operation_id = "change_password",
    request_body = ChangePasswordRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Changed; the session's new token comes back as the `session` cookie",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Host-session=<new token>; Path=/; [Secure; ]HttpOnly; \
                    SameSite=Strict; Max-Age=<SESSION_ABSOLUTE_TIMEOUT>`")),
            example = json!({"message": "Password changed"})),
        (status = 401, description = "Wrong current password, or no live session",
            body = ErrorBody, example = json!({"error": "Invalid credentials",
                "code": "invalid_credentials"})),
        BodyErrors,
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn change_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<impl IntoResponse> {
    factors::step_up(&state, &session)?;
    let current = Password::parse("current_password", req.current_password)?;
    let token = account::change_password(
        &state,
        &session.user,
        &session.token_hash,
        &current,
        req.new_password,
        req.sign_out_other_sessions.unwrap_or(true),
        &meta,
    )
    .await?;
    let cookie = SessionCookie::of(&state.settings)
        .set(&token, state.settings.sessions.session_absolute_timeout);
    Ok((
        AppendHeaders([(SET_COOKIE, cookie)]),
        Json(MessageBody {
            message: "Password changed",
        }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"new_email": "new@example.com", "current_password": "correct horse battery"}))]
struct ChangeEmailRequest {
    /// The address to move to, under the registration rules for an email.
    #[schema(min_length = 1)]
    new_email: String,
    #[schema(min_length = 1, max_length = 256)]
    current_password: String,
}

/// Start moving the account to a new email: a code goes to the new address.
///
/// Nothing changes until `/confirm-email-change`. An address that belongs to another
/// account gets the same answer and no code (that account's owner is told).
#[utoipa::path(
    post,
    path = "/change-email",
    tag = "self-service",
    operation_id = "change_email",
    request_body = ChangeEmailRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "A code was sent to the new address, if it is free",
            body = MessageBody,
            links(("confirm" = (operation_id = "confirm_email_change",
                request_body = json!({"otp": "000000"}),
                description = "Type back the code sent to the new address")),),
            example = json!({"message": "Verification code sent"})),
        (status = 401, description = "Wrong current password, or no live session",
            body = ErrorBody, example = json!({"error": "Invalid credentials",
                "code": "invalid_credentials"})),
        BodyErrors,
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn change_email(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<ChangeEmailRequest>,
) -> Result<Json<MessageBody>> {
    factors::step_up(&state, &session)?;
    let new_email = Email::parse(&req.new_email).map_err(|e| e.in_field("new_email"))?;
    let current = Password::parse("current_password", req.current_password)?;
    account::change_email(&state, &session.user, &current, &new_email, &meta).await?;
    Ok(Json(MessageBody {
        message: "Verification code sent",
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"otp": "713113"}))]
struct ConfirmRequest {
    /// Exactly 6 ASCII digits (surrounding spaces ignored): the code sent to the new address.
    #[schema(min_length = 6)]
    otp: String,
}

/// Finish moving to the new email with the code sent to it.
///
/// Only now does the address change; it counts as verified, the old address is told
/// (naming the new one, masked), and recovery codes sent to the old one die.
#[utoipa::path(
    post,
    path = "/confirm-email-change",
    tag = "self-service",
    operation_id = "confirm_email_change",
    request_body = ConfirmRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The email was changed", body = MessageBody,
            example = json!({"message": "Email changed"})),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
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
async fn confirm_email_change(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<ConfirmRequest>,
) -> Result<Json<MessageBody>> {
    let otp = OtpCode::parse(&req.otp)?;
    account::confirm_change(&state, &session.user, Channel::Email, &otp, &meta).await?;
    Ok(Json(MessageBody {
        message: "Email changed",
    }))
}

/// `new_phone` present (a number, or null to remove), told apart from absent.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"new_phone": "+14155550123", "current_password": "correct horse battery"}))]
struct ChangePhoneRequest {
    /// The number to move to (E.164, as at registration), or null (or empty) to remove
    /// the phone. Required: leaving it out is an error, not a removal.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true)]
    new_phone: Option<Option<String>>,
    #[schema(min_length = 1, max_length = 256)]
    current_password: String,
}

/// Move the account to a new phone (a code goes to it by SMS), or remove the phone.
///
/// Nothing changes until `/confirm-phone-change`. A number that belongs to another account
/// gets the same answer and no code (that account's owner is told by email). With
/// `new_phone: null` the phone is removed at once and the email is told.
#[utoipa::path(
    post,
    path = "/change-phone",
    tag = "self-service",
    operation_id = "change_phone",
    request_body = ChangePhoneRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "A code was sent to the new number if it is free, or the \
            phone was removed", body = MessageBody,
            example = json!({"message": "Verification code sent"})),
        (status = 401, description = "Wrong current password, or no live session",
            body = ErrorBody, example = json!({"error": "Invalid credentials",
                "code": "invalid_credentials"})),
        BodyErrors,
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn change_phone(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<ChangePhoneRequest>,
) -> Result<Json<MessageBody>> {
    factors::step_up(&state, &session)?;
    let new_phone = match req.new_phone {
        None => return Err(ApiError::BadRequest("Missing field: new_phone".into())),
        Some(raw) => match raw.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => Some(Phone::parse(p).map_err(|e| e.in_field("new_phone"))?),
        },
    };
    if let Some(phone) = &new_phone {
        if !crate::notify::sms_policy::country_allowed(&state.settings.sms_policy, phone.as_str()) {
            return Err(ApiError::invalid(
                "new_phone",
                "numbers in this country are not accepted",
            ));
        }
    }
    let current = Password::parse("current_password", req.current_password)?;
    let removed =
        account::change_phone(&state, &session.user, &current, new_phone.as_ref(), &meta).await?;
    Ok(Json(MessageBody {
        message: if removed {
            "Phone removed"
        } else {
            "Verification code sent"
        },
    }))
}

/// Finish moving to the new phone with the code sent to it.
#[utoipa::path(
    post,
    path = "/confirm-phone-change",
    tag = "self-service",
    operation_id = "confirm_phone_change",
    request_body = ConfirmRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The phone was changed", body = MessageBody,
            example = json!({"message": "Phone changed"})),
        (status = 401, description = "No live session", body = ErrorBody,
            example = json!({"error": "Not logged in, or the session has expired",
                "code": "not_logged_in"})),
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
async fn confirm_phone_change(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<ConfirmRequest>,
) -> Result<Json<MessageBody>> {
    let otp = OtpCode::parse(&req.otp)?;
    account::confirm_change(&state, &session.user, Channel::Sms, &otp, &meta).await?;
    Ok(Json(MessageBody {
        message: "Phone changed",
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"current_password": "correct horse battery"}))]
struct DeleteRequest {
    #[schema(min_length = 1, max_length = 256)]
    current_password: String,
}

/// Delete the account.
///
/// The account, its sessions, codes, tokens and undelivered messages go; a goodbye email
/// is still sent; the audit trail keeps the user id without the client's address. The
/// username, email and phone can be registered again.
#[utoipa::path(
    delete,
    path = "/me",
    tag = "self-service",
    operation_id = "delete_me",
    request_body = DeleteRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Deleted; the `session` cookie is cleared",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Host-session=; Path=/; [Secure; ]HttpOnly; SameSite=Strict; Max-Age=0`")),
            example = json!({"message": "Account deleted"})),
        (status = 401, description = "Wrong current password, or no live session",
            body = ErrorBody, example = json!({"error": "Invalid credentials",
                "code": "invalid_credentials"})),
        BodyErrors,
        StepUp,
        RateLimited,
        Unavailable,
    )
)]
async fn delete_me(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: AuthSession,
    ApiJson(req): ApiJson<DeleteRequest>,
) -> Result<impl IntoResponse> {
    factors::step_up(&state, &session)?;
    let current = Password::parse("current_password", req.current_password)?;
    account::delete(&state, &session.user, &current, &meta).await?;
    let clear = SessionCookie::of(&state.settings).set("", Duration::ZERO);
    Ok((
        AppendHeaders([(SET_COOKIE, clear)]),
        Json(MessageBody {
            message: "Account deleted",
        }),
    ))
}
