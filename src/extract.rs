//! Request extractors whose rejections come back in our error shape: `ApiJson` (a JSON
//! body, at most 16 KiB, with errors that name the field) and `ClientIp`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use http_body_util::BodyExt;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::state::AppState;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Longest the body may take to arrive. A client that sends less than its Content-Length
/// promised (or stalls mid-body) gets a 400 that says so — before REQUEST_TIMEOUT's
/// default 15 s would answer a generic 503.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A body refused as too large is still read and dropped, up to this many bytes and for
/// at most DRAIN_TIMEOUT, so that a client still sending it can read the 413 rather than
/// have the connection reset under it.
const DRAIN_LIMIT: usize = 2 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = read_body(req.into_body(), declared).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reads at most BODY_LIMIT bytes within BODY_TIMEOUT.
async fn read_body(mut body: Body, declared: Option<u64>) -> Result<Vec<u8>, ApiError> {
    let too_large = ApiError::PayloadTooLarge(BODY_LIMIT);
    if let Some(n) = declared.filter(|&n| n > BODY_LIMIT as u64) {
        // Refused on the header alone; drained only if the rest is worth waiting for.
        if n <= DRAIN_LIMIT as u64 {
            drain(body).await;
        }
        return Err(too_large);
    }
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| body_error(&e))?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > BODY_LIMIT {
                    return Err(too_large);
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(e @ ApiError::PayloadTooLarge(_))) => {
            drain(body).await;
            Err(e)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(body_timed_out()),
    }
}

fn body_timed_out() -> ApiError {
    ApiError::BadRequest(
        "Timed out waiting for the rest of the request body (is its Content-Length \
         larger than the body?)"
            .into(),
    )
}

/// A body that could not be read: the connection's read timeout, or a body that ended
/// early or was framed wrongly.
fn body_error(e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return body_timed_out();
        }
        cause = c.source();
    }
    ApiError::BadRequest(
        "Could not read the request body: it ended early or its chunked framing is invalid".into(),
    )
}

/// Reads and drops what is left of a refused body, within DRAIN_LIMIT and DRAIN_TIMEOUT.
async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
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
