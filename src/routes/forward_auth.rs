//! `/auth/verify`: forward authentication for nginx `auth_request`, Caddy `forward_auth`
//! and Traefik `forwardAuth`. The rules are `auth::forward`'s; this module reads the
//! proxy's headers and answers in the shapes those proxies understand.

use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::Unavailable;
use crate::auth::forward::{self, Forwarded, Requirements};
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::AuthSession;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify))
}

/// The headers naming the user on a 200, as nginx (`auth_request_set`), Caddy
/// (`copy_headers`) and Traefik (`authResponseHeaders`) pass them on.
const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
const X_AUTH_EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
const REMOTE_EMAIL: HeaderName = HeaderName::from_static("remote-email");

/// Whether a live session may pass, for a reverse proxy in front of an app.
///
/// With a live session (cookie or bearer token) that meets the location's requirements:
/// 200, no body, and headers naming the user. Without one: 401 (with a `Location` to the
/// login page, for nginx's `error_page 401 =302 $upstream_http_location`), or a 302 to
/// the login page when the proxy passes redirects on (`redirect=1`, or a browser's
/// `Accept: text/html` forwarded by Caddy or Traefik). A session short of a requirement:
/// 403.
#[utoipa::path(
    get,
    path = "/auth/verify",
    tag = "forward authentication",
    operation_id = "verify",
    security(("bearer" = []), ("session_cookie" = [])),
    params(
        ("aal" = Option<String>, Query,
            description = "`2`: require a sign-in with a second factor (else 403)"),
        ("verified" = Option<String>, Query,
            description = "`1`: require a proven email address (else 403)"),
        ("redirect" = Option<String>, Query,
            description = "`1`: answer a missing session with a 302 to the login page"),
        ("X-Original-URL" = Option<String>, Header,
            description = "The URL the browser asked for (nginx)"),
        ("X-Forwarded-Proto" = Option<String>, Header,
            description = "With X-Forwarded-Host and X-Forwarded-Uri (Caddy, Traefik)"),
        ("X-Forwarded-Host" = Option<String>, Header),
        ("X-Forwarded-Uri" = Option<String>, Header),
    ),
    responses(
        (status = 200, description = "A live session that meets the requirements",
            headers(
                ("X-Auth-User" = String, description = "The username"),
                ("X-Auth-Email" = String, description = "The email address"),
                ("X-Auth-User-Id" = String, description = "The account id"),
                ("Remote-User" = String, description = "The username (as Authelia names it)"),
                ("Remote-Email" = String, description = "The email (as Authelia names it)"),
            )),
        (status = 302, description = "No live session, and redirects asked for: to the login page",
            headers(("Location" = String, description = "PUBLIC_URL/ui/login?return_to=<the URL first asked for>"))),
        (status = 401, description = "No live session", body = ErrorBody,
            headers(("Location" = String, description = "The login page, as on the 302"))),
        (status = 403, description = "The session does not meet a requirement", body = ErrorBody),
        (status = 422, description = "A requirement is not understood", body = ErrorBody),
        Unavailable,
    )
)]
async fn verify(
    State(state): State<AppState>,
    session: Result<AuthSession>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let requirements = Requirements::parse(param("aal").as_deref(), param("verified").as_deref())?;
    let redirect_asked = forward::flag("redirect", param("redirect").as_deref())?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let session = match session {
        Ok(session) => session,
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            let forwarded = Forwarded {
                original_url: header("x-original-url"),
                proto: header("x-forwarded-proto"),
                host: header("x-forwarded-host"),
                uri: header("x-forwarded-uri"),
            };
            let login =
                forward::login_redirect(&state.settings.public_url, forwarded.original().as_ref());
            // Caddy and Traefik pass our answer to the browser: a page navigation (it
            // accepts HTML) is better sent to the login page than shown a 401.
            let browser = forwarded.uri.is_some()
                && header(ACCEPT.as_str()).is_some_and(|a| a.contains("text/html"));
            let location = HeaderValue::from_str(&login).map_err(ApiError::internal)?;
            let mut response = if redirect_asked || browser {
                StatusCode::FOUND.into_response()
            } else {
                e.into_response()
            };
            response.headers_mut().insert(LOCATION, location);
            return Ok(no_store(response));
        }
        Err(e) => return Err(e),
    };
    if let Some(unmet) = requirements.unmet(&session) {
        return Ok(no_store(unmet.into_response()));
    }
    let user = &session.user;
    let mut response = StatusCode::OK.into_response();
    let named = response.headers_mut();
    for (name, value) in [
        (X_AUTH_USER, user.username.as_str()),
        (X_AUTH_EMAIL, user.email.as_str()),
        (X_AUTH_USER_ID, &user.id.to_string()),
        (REMOTE_USER, user.username.as_str()),
        (REMOTE_EMAIL, user.email.as_str()),
    ] {
        // Usernames and emails hold no control characters (the domain types refuse
        // them); UTF-8 beyond ASCII goes as its bytes, as Authelia sends it.
        named.insert(
            name,
            HeaderValue::from_bytes(value.as_bytes()).map_err(ApiError::internal)?,
        );
    }
    Ok(no_store(response))
}

/// Every answer is about one browser's session at one moment: nothing may cache it.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
