//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, assembled from the routers
//! themselves (`utoipa_axum`'s `OpenApiRouter`): each route is registered once, with the
//! path, method and responses of its `#[utoipa::path]` annotation, and the bodies it reads
//! and writes come from their `ToSchema` derives, so the document cannot drift from the
//! code. Schemathesis checks the running server against it (`scripts/schemathesis.sh`).
//!
//! This module knows no route module: `routes::router` hands it the assembled API
//! (`serve`), and the route modules take the shared responses below from here.
//!
//! Statuses that many routes share are declared once here (`BodyErrors`, `RateLimited`,
//! `Unavailable`); the headers every response carries (`X-Request-Id`) are added by
//! `CommonHeaders`.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, ObjectBuilder, RefOr, Type};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::state::AppState;

/// `api` as a plain router, with `GET /openapi.json` added, serving the document of every
/// route in `api` and of itself.
pub fn serve(api: OpenApiRouter<AppState>) -> Router<AppState> {
    let served = Served::default();
    let (router, openapi) = api
        .routes(routes!(openapi_json).layer(Extension(served.clone())))
        .split_for_parts();
    // The document names this route too, so it can only be written once the route is in.
    let body = serde_json::to_vec(&document(openapi)).unwrap_or_default();
    let _ = served.0.set(Bytes::from(body));
    router
}

/// The serialised document, shared with the handler that serves it.
#[derive(Clone, Default)]
struct Served(Arc<OnceLock<Bytes>>);

/// The name of the request id header on every response.
const REQUEST_ID: &str = "X-Request-Id";
/// Response headers that are always present when their response is documented to have
/// them. utoipa's header type has no `required`; it is set on the serialised document.
const ALWAYS_SENT: [&str; 3] = [REQUEST_ID, "Retry-After", "Set-Cookie"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "An authentication server: register, log in, sessions, and password \
            recovery by one-time code over email or SMS.\n\n\
            Every request body is JSON (`Content-Type: application/json`, at most 16 KiB). \
            Every error is `{\"error\": \"…\", \"code\": \"…\"}`: `error` says what went \
            wrong for people, naming the field when one is at fault, and `code` is a stable \
            snake_case code for programs (with `\"field\"` naming the field when the code is \
            `invalid_field`). \
            Every response carries an `X-Request-Id` (the client's, if it sent one that \
            is 1-64 of `A-Z a-z 0-9 . _ -`; otherwise a new UUID). \
            An unknown path answers 404 and a known path with another method 405, both \
            with the same error body. A 500 body never shows internals.",
        license(name = "MIT"),
    ),
    components(schemas(ErrorBody, ReauthBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "accounts", description = "Registration, login and sessions"),
        (name = "recovery", description = "Password recovery by one-time code"),
        (name = "self-service", description = "What a signed-in user does to their own account: \
            change the password, email or phone, see and end sessions, delete the account"),
        (name = "second factors", description = "TOTP, recovery codes and passkeys: enrolling \
            them, the second step of a login, signing in with a passkey or a code, and \
            re-authenticating for sensitive changes"),
        (name = "forward authentication", description = "For a reverse proxy (nginx \
            auth_request, Caddy forward_auth, Traefik forwardAuth) in front of an app: is this \
            browser signed in, and as whom"),
        (name = "operations", description = "Health, readiness and this document (metrics and \
            the detailed readiness report are on the operations listener)"),
    )
)]
pub struct ApiDoc;

/// The security schemes of `/me` and `/logout`: a session token, as a bearer token or as
/// the `session` cookie set by `/login`.
struct SecuritySchemes;

/// Name of the bearer security scheme (the `security(...)` of the routes repeats it).
const BEARER: &str = "bearer";
/// Name of the cookie security scheme.
const SESSION_COOKIE: &str = "session_cookie";

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>`, the token being the value of the \
                         `session` cookie set by `/login`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::session::SESSION_COOKIE,
                "The session cookie set by `/login` (HttpOnly, SameSite=Strict)",
            ))),
        );
    }
}

/// Adds `X-Request-Id` to every response of every operation; applied by `document`, once
/// every route is in.
struct CommonHeaders;

impl Modify for CommonHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(
                "The request's id: the client's `X-Request-Id` if it sent one that is 1-64 \
                 of `A-Z a-z 0-9 . _ -`, otherwise a new UUID. Logs carry the same id.",
            ))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .insert(REQUEST_ID.to_owned(), RefOr::T(header.clone()));
                    }
                }
            }
        }
    }
}

/// The document as served: `ApiDoc` with every route's operations (`openapi`), the
/// common headers, and the always-sent headers marked required.
fn document(mut openapi: utoipa::openapi::OpenApi) -> Value {
    CommonHeaders.modify(&mut openapi);
    let mut doc = serde_json::to_value(openapi).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        let responses = paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
            .flat_map(|responses| responses.values_mut());
        for response in responses {
            let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) else {
                continue;
            };
            for (name, header) in headers.iter_mut() {
                if ALWAYS_SENT.contains(&name.as_str()) {
                    header["required"] = Value::Bool(true);
                }
            }
        }
    }
    doc
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API",
            body = Object, content_type = "application/json"),
    )
)]
async fn openapi_json(Extension(served): Extension<Served>) -> Response {
    let body = served.0.get().cloned().unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// 400, 413, 415 and 422: what any route that reads a JSON body can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum BodyErrors {
    /// The body is not well-formed JSON, is not a JSON object, or a required field is
    /// missing; or it could not be read (it ended early, or stalled for 10 s).
    #[response(status = 400, example = json!({"error": "Missing field: password",
        "code": "bad_request"}))]
    BadRequest(ErrorBody),
    /// The body is over 16 KiB.
    #[response(
        status = 413,
        example = json!({"error": "Request body is too large (limit 16384 bytes)",
            "code": "payload_too_large"})
    )]
    TooLarge(ErrorBody),
    /// The body is not declared as JSON (`Content-Type` is not `application/json` or
    /// `application/*+json`).
    #[response(
        status = 415,
        example = json!({"error": "Content-Type must be application/json",
            "code": "unsupported_media_type"})
    )]
    UnsupportedMediaType(ErrorBody),
    /// A field has the wrong type or fails validation; the message names it and says why.
    #[response(
        status = 422,
        example = json!({"error": "email: is not a valid email address",
            "code": "invalid_field", "field": "email"})
    )]
    Invalid(ErrorBody),
}

/// 429, with `Retry-After`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum RateLimited {
    /// Over a rate limit; try again after `Retry-After` seconds.
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds to wait before trying again (at least 1)")),
        example = json!({"error": "Too many requests; try again in 12 seconds",
            "code": "rate_limited"})
    )]
    TooManyRequests(ErrorBody),
}

/// The body of the 403 a sensitive change answers without a recent proof.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ReauthBody {
    error: String,
    /// Always `reauth_required`.
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    code: String,
    /// Always true: call `POST /reauthenticate`, then repeat the request.
    reauth_required: bool,
}

/// 403: step-up.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum StepUp {
    /// The session's user last proved themselves longer ago than REAUTH_MAX_AGE, or only
    /// with one factor on an account that has two: `POST /reauthenticate` first.
    #[response(
        status = 403,
        example = json!({"error": "Re-authentication required", "code": "reauth_required",
            "reauth_required": true})
    )]
    ReauthRequired(ReauthBody),
}

/// 503, with `Retry-After`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Unavailable {
    /// The database is unreachable or slow, or the request timed out.
    #[response(
        status = 503,
        headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
        example = json!({"error": "Service temporarily unavailable", "code": "unavailable"})
    )]
    ServiceUnavailable(ErrorBody),
}
