//! `ApiError`, the one error type handlers return, and its single mapping to an HTTP
//! status and a `{"error": "…"}` body. Nothing else in the crate decides a status code.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not well-formed JSON, or a field is missing or of the wrong type.
    #[error("{0}")]
    BadRequest(String),
    /// 415: the body is not declared as JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 413: the body is over the limit.
    #[error("Request body is too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    /// 422: a field is present but fails validation; the message names it and says why.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// 422: the JSON is well-formed but a field has the wrong type; the message names it.
    #[error("{0}")]
    Unprocessable(String),
    /// 401 on /login: unknown identifier, wrong password or disabled account alike.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// 401: no live session, or no valid reset token; the message says which.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 400 on /validate-otp: wrong, expired, used or dead code alike.
    #[error("Invalid or expired OTP")]
    InvalidOtp,
    /// 400 on /verify and the confirmations of a change: wrong, expired, used or dead code
    /// alike.
    #[error("Invalid or expired code")]
    InvalidCode,
    /// 403 on /login under REQUIRE_VERIFIED_EMAIL: right password, unproven email.
    #[error("Email address not verified")]
    EmailNotVerified,
    /// 404 on /sessions/{id}: not one of the caller's sessions, or none at all, alike.
    #[error("Session not found")]
    SessionNotFound,
    /// 409 on /register.
    #[error("User already exists")]
    UserExists,
    /// 403 with `"reauth_required": true`: a sensitive change on a session whose user has
    /// not proved themselves recently enough (REAUTH_MAX_AGE), or only with one factor
    /// when the account has two.
    #[error("Re-authentication required")]
    ReauthRequired,
    /// 401 on a second factor (or /reauthenticate): a wrong, used or replayed code or
    /// assertion, alike.
    #[error("Invalid code")]
    InvalidSecondFactor,
    /// 401 on /login/mfa: the mfa_token is unknown, expired, used up or out of tries.
    #[error("The sign-in has expired; log in again")]
    SignInExpired,
    /// 409: the change conflicts with the account's state; the message says how.
    #[error("{0}")]
    Conflict(&'static str),
    /// 404: no such thing on this account (or on any, alike); the message names it.
    #[error("{0}")]
    Missing(&'static str),
    /// 404: no such route.
    #[error("Not found")]
    NotFound,
    /// 405: the route exists with another method.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 429 with `Retry-After`.
    #[error("Too many requests; try again in {} seconds", retry_secs(*.0))]
    RateLimited(Duration),
    /// 503 with `Retry-After`: the database (or another dependency) is unreachable or slow.
    #[error("Service temporarily unavailable")]
    Unavailable,
    /// 500: anything else. The cause is logged; the body stays generic.
    #[error("Internal server error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl ApiError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidOtp | ApiError::InvalidCode => {
                StatusCode::BAD_REQUEST
            }
            ApiError::EmailNotVerified | ApiError::ReauthRequired => StatusCode::FORBIDDEN,
            ApiError::InvalidSecondFactor | ApiError::SignInExpired => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::SessionNotFound => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::InvalidCredentials | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::UserExists => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "Invalid credentials"}))]
pub struct ErrorBody {
    /// What went wrong, naming the field when one is at fault.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "internal error");
            }
            ApiError::Unavailable => tracing::warn!("dependency unavailable, answering 503"),
            _ => {}
        }
        let retry_after = match &self {
            ApiError::RateLimited(d) => Some(retry_secs(*d).max(1)),
            ApiError::Unavailable => Some(2),
            _ => None,
        };
        let mut response = match &self {
            ApiError::ReauthRequired => (
                status,
                Json(serde_json::json!({"error": self.to_string(), "reauth_required": true})),
            )
                .into_response(),
            _ => (
                status,
                Json(ErrorBody {
                    error: self.to_string(),
                }),
            )
                .into_response(),
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Storage failures become API errors here, except a unique-constraint conflict: only the
/// call that wrote the row knows what a duplicate means there (a taken username, a passkey
/// registered twice …), so it maps `Conflict` itself; one that reaches this point was not
/// expected and is a 500.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable,
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(e)
    }
}

/// A domain value that failed to parse is a 422 naming the field.
impl From<crate::domain::ParseError> for ApiError {
    fn from(e: crate::domain::ParseError) -> Self {
        ApiError::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}
