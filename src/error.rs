//! `ApiError`, the one error type handlers return, and its single mapping to an HTTP
//! status and a `{"error": "…", "code": "…"}` body. Nothing else in the crate decides a
//! status code or an error code.

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
    /// 401: no live session, or no valid reset token; the message says which (and its code,
    /// from `REASONS`).
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
    /// 403 on /auth/verify?aal=2: the session was opened without a second factor.
    #[error("A sign-in with a second factor is required")]
    SecondFactorRequired,
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
    /// 409: the change conflicts with the account's state; the message says how (and its
    /// code, from `REASONS`).
    #[error("{0}")]
    Conflict(&'static str),
    /// 404: no such thing on this account (or on any, alike); the message names it (and its
    /// code, from `REASONS`).
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

/// The code of each message that `Unauthorized`, `Conflict` and `Missing` carry: one
/// message, one meaning, one code, whichever call site answers it. A message missing here
/// would answer its variant's generic code (`unauthorized`, `conflict`, `not_found`);
/// the test `every_reason_in_the_source_has_its_own_code` keeps that from happening.
const REASONS: &[(&str, &str)] = &[
    // Unauthorized
    ("Not logged in, or the session has expired", "not_logged_in"),
    (
        "A reset token is required: validate the OTP first",
        "reset_token_required",
    ),
    ("Invalid or expired reset token", "invalid_reset_token"),
    // Conflict
    (
        "Two-factor authentication is already enabled",
        "totp_already_enabled",
    ),
    (
        "Recovery codes stand in for a second factor: turn on TOTP or add a passkey first",
        "no_second_factor",
    ),
    (
        "This passkey is registered already",
        "passkey_already_registered",
    ),
    // Missing
    (
        "No two-factor enrolment to confirm: start one with POST /mfa/totp/setup",
        "totp_enrolment_not_found",
    ),
    (
        "Two-factor authentication is not enabled",
        "totp_not_enabled",
    ),
    ("Passkey not found", "passkey_not_found"),
];

/// The code `REASONS` gives `message`, else `generic`.
fn reason_code(message: &str, generic: &'static str) -> &'static str {
    REASONS
        .iter()
        .find(|(m, _)| *m == message)
        .map_or(generic, |(_, code)| code)
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

    /// The stable, machine-readable `code` of the body: snake_case, one per kind of error
    /// (the human `error` beside it may name a field or a number of seconds). Clients
    /// branch on this; a code, once published, never changes meaning.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Unauthorized(message) => reason_code(message, "unauthorized"),
            ApiError::InvalidOtp => "invalid_otp",
            ApiError::InvalidCode => "invalid_code",
            ApiError::EmailNotVerified => "email_not_verified",
            ApiError::SecondFactorRequired => "second_factor_required",
            ApiError::SessionNotFound => "session_not_found",
            ApiError::UserExists => "user_exists",
            ApiError::ReauthRequired => "reauth_required",
            ApiError::InvalidSecondFactor => "invalid_second_factor",
            ApiError::SignInExpired => "sign_in_expired",
            ApiError::Conflict(message) => reason_code(message, "conflict"),
            ApiError::Missing(message) => reason_code(message, "not_found"),
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidOtp | ApiError::InvalidCode => {
                StatusCode::BAD_REQUEST
            }
            ApiError::EmailNotVerified
            | ApiError::ReauthRequired
            | ApiError::SecondFactorRequired => StatusCode::FORBIDDEN,
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
#[schema(example = json!({"error": "Invalid credentials", "code": "invalid_credentials"}))]
pub struct ErrorBody {
    /// What went wrong, for people, naming the field when one is at fault. Its wording is
    /// kept as it is for older clients; a program should branch on `code`.
    pub error: String,
    /// What went wrong, for programs: a stable snake_case code, one per kind of error
    /// (`invalid_credentials`, `not_logged_in`, `invalid_field`, `rate_limited` …; the
    /// README lists them all).
    #[schema(pattern = "^[a-z][a-z0-9_]*$", example = "invalid_credentials")]
    pub code: &'static str,
    /// With `invalid_field` only: the request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "email")]
    pub field: Option<&'static str>,
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
        let code = self.code();
        let mut response = match &self {
            ApiError::ReauthRequired => (
                status,
                Json(serde_json::json!({
                    "error": self.to_string(),
                    "code": code,
                    "reauth_required": true,
                })),
            )
                .into_response(),
            _ => (
                status,
                Json(ErrorBody {
                    error: self.to_string(),
                    code,
                    field: match &self {
                        ApiError::Invalid { field, .. } => Some(*field),
                        _ => None,
                    },
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    /// One of each variant (`Unauthorized`, `Conflict` and `Missing` once per reason).
    fn one_of_each() -> Vec<ApiError> {
        let mut all = vec![
            ApiError::BadRequest("Missing field: password".into()),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge(16384),
            ApiError::invalid("email", "is not a valid email address"),
            ApiError::Unprocessable("email: invalid type: integer `1`, expected a string".into()),
            ApiError::InvalidCredentials,
            ApiError::InvalidOtp,
            ApiError::InvalidCode,
            ApiError::EmailNotVerified,
            ApiError::SecondFactorRequired,
            ApiError::SessionNotFound,
            ApiError::UserExists,
            ApiError::ReauthRequired,
            ApiError::InvalidSecondFactor,
            ApiError::SignInExpired,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::RateLimited(Duration::from_millis(11_500)),
            ApiError::Unavailable,
            ApiError::Internal("boom".into()),
        ];
        for (message, _) in REASONS {
            all.push(ApiError::Unauthorized(message));
        }
        all
    }

    fn snake_case(code: &str) -> bool {
        code.starts_with(|c: char| c.is_ascii_lowercase())
            && code
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    #[test]
    fn every_kind_of_error_has_its_own_snake_case_code() {
        let all = one_of_each();
        let codes: Vec<&str> = all.iter().map(ApiError::code).collect();
        for code in &codes {
            assert!(snake_case(code), "{code:?} is not snake_case");
        }
        let distinct: BTreeSet<&str> = codes.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            codes.len(),
            "a code is used twice: {codes:?}"
        );

        assert_eq!(ApiError::InvalidCredentials.code(), "invalid_credentials");
        assert_eq!(ApiError::invalid("email", "x").code(), "invalid_field");
        assert_eq!(
            ApiError::Unauthorized("Not logged in, or the session has expired").code(),
            "not_logged_in"
        );
        assert_eq!(
            ApiError::Conflict("This passkey is registered already").code(),
            "passkey_already_registered"
        );
        assert_eq!(
            ApiError::Missing("Passkey not found").code(),
            "passkey_not_found"
        );
        // A message nobody gave a code falls back to the variant's generic one.
        assert_eq!(ApiError::Unauthorized("?").code(), "unauthorized");
        assert_eq!(ApiError::Conflict("?").code(), "conflict");
        assert_eq!(ApiError::Missing("?").code(), "not_found");
    }

    #[test]
    fn reasons_are_listed_once_each() {
        let messages: BTreeSet<&str> = REASONS.iter().map(|(m, _)| *m).collect();
        let codes: BTreeSet<&str> = REASONS.iter().map(|(_, c)| *c).collect();
        assert_eq!(messages.len(), REASONS.len(), "a message is listed twice");
        assert_eq!(codes.len(), REASONS.len(), "a code is listed twice");
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `ApiError::Unauthorized("…")`, `Conflict("…")` and `Missing("…")` in the
    /// crate passes a message that `REASONS` gives a specific code.
    #[test]
    fn every_reason_in_the_source_has_its_own_code() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let this_file = src.join("error.rs");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut seen = 0;
        for file in files.iter().filter(|f| **f != this_file) {
            let text = std::fs::read_to_string(file).unwrap();
            for variant in ["Unauthorized", "Conflict", "Missing"] {
                let needle = format!("ApiError::{variant}(");
                for (at, _) in text.match_indices(&needle) {
                    let rest = text[at + needle.len()..].trim_start();
                    let message = rest
                        .strip_prefix('"')
                        .and_then(|r| r.split_once('"'))
                        .map(|(m, _)| m);
                    let Some(message) = message else {
                        let start: String = rest.chars().take(40).collect();
                        panic!(
                            "{}: ApiError::{variant} takes a string literal, so that its code \
                             can be checked here; found {start:?}",
                            file.display()
                        );
                    };
                    assert!(
                        REASONS.iter().any(|(m, _)| *m == message),
                        "{}: {message:?} has no code in REASONS",
                        file.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(
            seen > 5,
            "only {seen} call sites found: is the search broken?"
        );
    }

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn every_body_carries_its_code_beside_the_unchanged_message() {
        for e in one_of_each() {
            let (message, code) = (e.to_string(), e.code());
            let reauth = matches!(e, ApiError::ReauthRequired);
            let invalid = matches!(e, ApiError::Invalid { .. });
            let (_, got) = body(e).await;
            assert_eq!(got["error"], message.as_str(), "{got}");
            assert_eq!(got["code"], code, "{got}");
            let keys = got.as_object().unwrap().len();
            assert_eq!(keys, if reauth || invalid { 3 } else { 2 }, "{got}");
        }
        assert_eq!(
            body(ApiError::invalid("email", "is not a valid email address")).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({
                    "error": "email: is not a valid email address",
                    "code": "invalid_field",
                    "field": "email",
                })
            )
        );
        assert_eq!(
            body(ApiError::ReauthRequired).await,
            (
                StatusCode::FORBIDDEN,
                serde_json::json!({
                    "error": "Re-authentication required",
                    "code": "reauth_required",
                    "reauth_required": true,
                })
            )
        );
        assert_eq!(
            body(ApiError::Internal("secret detail".into())).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "Internal server error", "code": "internal"})
            )
        );
    }
}
