//! The middleware every public request goes through, outermost first: the request id (a
//! client's, if well formed), the request's tracing span, the security headers, the panic
//! guard, REQUEST_TIMEOUT, the body limit and the refusal of methods HTTP does not define.
//! Per-route metrics (`crate::metrics::track`) sit inside, on the routes themselves.

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Settings;
use crate::error::ApiError;
use crate::extract::BODY_LIMIT;
use crate::request_id::REQUEST_ID;

/// `router` wrapped in the stack.
pub fn wrap(router: Router, settings: &Settings) -> Router {
    let hsts = settings.cookie_secure.then(|| {
        SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        )
    });
    let middleware = ServiceBuilder::new()
        .map_request(crate::request_id::drop_malformed)
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The matched route, never the raw URI: nothing a client puts in a
                    // query string ends up in the log.
                    let path = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("<unmatched>", MatchedPath::as_str);
                    let method = crate::metrics::method_label(req.method());
                    tracing::info_span!("request", request_id = %id, method, path)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .option_layer(hsts)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            ApiError::Unavailable
        }))
        .timeout(settings.request_timeout)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            crate::metrics::refuse_unknown_methods,
        ));
    router.layer(middleware)
}
