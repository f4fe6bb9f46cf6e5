//! Request extractors whose rejections come back in our error shape: `ApiJson` (a JSON
//! body, at most 16 KiB, with errors that name the field) and `ClientIp`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::state::AppState;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 16 * 1024;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|e| {
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                {
                    ApiError::PayloadTooLarge(BODY_LIMIT)
                } else {
                    ApiError::BadRequest("Could not read the request body".into())
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserialises a body, turning serde's errors into messages that name the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Structs would also deserialise from arrays; our bodies are objects, nothing else.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => {
            return Err(ApiError::BadRequest(
                "Malformed JSON: the body is empty".into(),
            ))
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "The request body must be a JSON object".into(),
            ))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::BadRequest(format!("Malformed JSON: {inner}"))
            }
            Category::Data => {
                let msg = strip_position(&inner.to_string());
                if let Some(rest) = msg.strip_prefix("missing field ") {
                    ApiError::BadRequest(format!("Missing field: {}", rest.trim_matches('`')))
                } else if msg.starts_with("duplicate field") {
                    ApiError::BadRequest(format!("Malformed JSON: {msg}"))
                } else if path == "." {
                    ApiError::BadRequest("The request body must be a JSON object".into())
                } else {
                    ApiError::Unprocessable(format!("{path}: {msg}"))
                }
            }
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("Malformed JSON: {e}")))?;
    Ok(value)
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// The client's address, for per-IP limits: the socket peer, unless that peer is one of
/// TRUSTED_PROXIES — then the right-most X-Forwarded-For entry that is not itself a
/// trusted proxy. The header is never believed from anyone else: any client can send it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(ClientIp(client_ip(
            peer,
            forwarded,
            &state.settings.trusted_proxies,
        )))
    }
}

/// Who sent a request, for rate limits and the audit trail.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: IpAddr,
    /// At most 256 characters of the User-Agent header.
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(RequestMeta { ip, user_agent })
    }
}

pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = forwarded_for
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        username: String,
        phone: Option<String>,
    }

    fn err(json: &str) -> (StatusCode, String) {
        let e = parse_json::<Body>(json.as_bytes()).unwrap_err();
        (e.status(), e.to_string())
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err(r#"{"phone": "x"}"#),
            (StatusCode::BAD_REQUEST, "Missing field: username".into())
        );
        let (status, msg) = err(r#"{"username": 5}"#);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(msg.starts_with("username: invalid type: integer"), "{msg}");
        assert_eq!(err(r#"{"username": "a""#).0, StatusCode::BAD_REQUEST);
        assert_eq!(err("[1]").0, StatusCode::BAD_REQUEST);
        assert_eq!(
            err(r#"{"username":"a","username":"b"}"#).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            err(r#"{"username":"a"} trailing"#).0,
            StatusCode::BAD_REQUEST
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(err(&deep).0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // From an untrusted peer the header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter(), &trusted),
            ip("203.0.113.9")
        );
        // From a trusted proxy, the right-most untrusted hop is the client.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                ["6.6.6.6, 1.2.3.4, 10.0.0.7"].into_iter(),
                &trusted
            ),
            ip("1.2.3.4")
        );
        // Junk in the header falls back to the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["nonsense"].into_iter(), &trusted),
            ip("10.0.0.2")
        );
        // No trusted proxies configured: always the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["1.2.3.4"].into_iter(), &[]),
            ip("10.0.0.2")
        );
    }
}
