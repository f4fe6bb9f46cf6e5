//! Request extractors whose rejections come back in our error shape: `ApiJson` (a JSON
//! body, at most 16 KiB, with errors that name the field) and `ClientIp`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

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

/// The client's address, for per-IP limits: the socket peer.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(ip))
    }
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
}
