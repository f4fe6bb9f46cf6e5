//! Request extractors whose rejections come back in our error shape: `ApiJson` (a JSON
//! body, at most 16 KiB, with errors that name the field), `ClientIp` (who the client is,
//! behind trusted proxies), `RequestMeta` (what rate limits and the audit trail key on)
//! and `AuthSession` (a live session, `auth::session`).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use http_body_util::BodyExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::auth::session;
use crate::error::ApiError;
use crate::state::{now, AppState};
use crate::store::User;

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

/// A JSON body that may be left out: no body at all is `None`; anything else is read as
/// `ApiJson` reads it.
pub struct ApiJsonOpt<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJsonOpt<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared == Some(0) {
            return Ok(ApiJsonOpt(None));
        }
        if req.headers().get(CONTENT_TYPE).is_none() {
            let bytes = read_body(req.into_body(), declared).await?;
            return if bytes.is_empty() {
                Ok(ApiJsonOpt(None))
            } else {
                Err(ApiError::UnsupportedMediaType)
            };
        }
        ApiJson::from_request(req, state)
            .await
            .map(|ApiJson(v)| ApiJsonOpt(Some(v)))
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

/// The client's address, for per-IP limits and the audit trail: the socket peer, unless
/// that peer is one of TRUSTED_PROXIES — then X-Forwarded-For is read from the right, one
/// hop at a time, for as long as the hop just placed is a trusted proxy (see `client_ip`).
/// The header is never believed from anyone else: any client can send it.
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
        // Lossy rather than skipped: a header line with a non-ASCII byte in a client's
        // part must still end the walk there, not vanish and move the proxy's entries.
        let forwarded: Vec<Cow<'_, str>> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect();
        Ok(ClientIp(client_ip(
            peer,
            forwarded.iter().map(AsRef::as_ref),
            &state.settings.trusted_proxies,
        )))
    }
}

/// Who sent a request, for rate limits and the audit trail.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// The client's full address, for the audit trail.
    pub ip: IpAddr,
    /// What per-IP rate limits count under: the IPv4 address, or the IPv6 network of
    /// RATE_LIMIT_IPV6_PREFIX bits around it (`2001:db8:1:2::/64`); see `client_network`.
    pub ip_key: String,
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
        let ip_key = match client_network(ip, state.settings.rate_limit_ipv6_prefix) {
            IpNet::V4(net) => net.addr().to_string(),
            net @ IpNet::V6(_) => net.to_string(),
        };
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(RequestMeta {
            ip,
            ip_key,
            user_agent,
        })
    }
}

/// A request made with a live session. Rejects with 401 otherwise.
pub struct AuthSession {
    pub user: User,
    pub token_hash: String,
    /// The session's assurance level (1 or 2).
    pub aal: i32,
    /// When the user last proved themselves on it.
    pub proved_at: i64,
}

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        const NO_SESSION: ApiError =
            ApiError::Unauthorized("Not logged in, or the session has expired");
        let token =
            session::presented_token(&parts.headers, &session::SessionCookie::of(&state.settings))
                .ok_or(NO_SESSION)?;
        let idle_timeout = state.settings.sessions.session_idle_timeout;
        let live = session::check(state.store.as_ref(), &token, idle_timeout, now())
            .await?
            .ok_or(NO_SESSION)?;
        Ok(AuthSession {
            user: live.user,
            token_hash: live.token_hash,
            aal: live.aal,
            proved_at: live.proved_at,
        })
    }
}

/// The client's address from the socket peer and the X-Forwarded-For headers (in the order
/// they arrived; each a comma-separated list, proxies appending on the right).
///
/// The peer is believed; a trusted proxy's peer tells us who connected to it, which is the
/// entry it appended — the right-most one. So the walk goes right to left and steps left
/// only while the hop just placed is a trusted proxy: the first hop that is not one is the
/// client. Nothing left of it is believed, since the client wrote all of that itself.
///
/// An entry that is not an address (`unknown`, an obfuscated `_hidden`, garbage) ends the
/// walk: the client is then the last hop placed — the trusted proxy that reported
/// something unusable — and never anything further left. Skipping such an entry would
/// make the client's own forged entry "the client", fresh with every request.
///
/// Addresses are compared canonically: an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as
/// a dual-stack listener sees IPv4 peers) is its IPv4 address.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let headers: Vec<&str> = forwarded_for.collect();
    for entry in headers.iter().rev().flat_map(|h| h.rsplit(',')) {
        match parse_forwarded_entry(entry) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&client) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One X-Forwarded-For entry as an address, tolerating what proxies write: `1.2.3.4`,
/// `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`, with surrounding
/// spaces or quotes. IPv4-mapped IPv6 becomes IPv4. `None` for anything else, including
/// `unknown`, obfuscated identifiers (`_hidden`), zone ids and empty entries.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"').trim();
    let is_port = |p: &str| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok();
    let ip = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else {
        // Only IPv4 carries a port without brackets: in `2001:db8::1:443` the port
        // cannot be told from the address, and that entry already parsed above.
        let (host, port) = entry.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(host.parse::<Ipv4Addr>().ok()?)
    };
    Some(ip.to_canonical())
}

/// The network a client address is counted under by per-IP limits and the per-IP
/// connection cap: an IPv4 address alone (/32), an IPv6 address with its first
/// `ipv6_prefix` bits (RATE_LIMIT_IPV6_PREFIX, 64 by default). One subscriber is commonly
/// handed a whole /64 — 2^64 addresses to rotate through — so keying on the /128 would
/// give an attacker a fresh budget per request.
pub fn client_network(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, ipv6_prefix.min(128))
                .map(|net| net.trunc())
                .unwrap_or_else(|_| Ipv6Net::from(v6)),
        ),
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// The client as seen from `peer` with these X-Forwarded-For header lines, behind
    /// trusted 10.0.0.0/8 and 2001:db8:ffff::/48.
    fn client(peer: &str, headers: &[&str]) -> IpAddr {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        client_ip(ip(peer), headers.iter().copied(), &trusted)
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        assert_eq!(client("203.0.113.9", &["1.2.3.4"]), ip("203.0.113.9"));
        // No trusted proxies configured: always the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["1.2.3.4"].into_iter(), &[]),
            ip("10.0.0.2")
        );
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(client("10.0.0.2", &[]), ip("10.0.0.2"));
    }

    #[test]
    fn the_right_most_hop_that_is_not_a_trusted_proxy_is_the_client() {
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, 1.2.3.4, 10.0.0.7"]),
            ip("1.2.3.4")
        );
        // Every hop trusted: the left-most one we could place.
        assert_eq!(client("10.0.0.2", &["10.0.0.9, 10.0.0.7"]), ip("10.0.0.9"));
        // Several header lines are one list, in order.
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6", "1.2.3.4", "10.0.0.7"]),
            ip("1.2.3.4")
        );
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, 7.7.7.7", "1.2.3.4, 10.0.0.7"]),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn entries_with_ports_brackets_quotes_and_spaces_parse() {
        for (entry, want) in [
            ("1.2.3.4", "1.2.3.4"),
            ("1.2.3.4:5678", "1.2.3.4"),
            ("  1.2.3.4  ", "1.2.3.4"),
            ("\"1.2.3.4:80\"", "1.2.3.4"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("\"[2001:db8::1]:443\"", "2001:db8::1"),
            (" \" [2001:db8::1] \" ", "2001:db8::1"),
        ] {
            assert_eq!(parse_forwarded_entry(entry), Some(ip(want)), "{entry:?}");
            assert_eq!(client("10.0.0.2", &[entry]), ip(want), "{entry:?}");
        }
    }

    #[test]
    fn ipv4_mapped_entries_and_peers_are_ipv4() {
        assert_eq!(parse_forwarded_entry("::ffff:1.2.3.4"), Some(ip("1.2.3.4")));
        assert_eq!(
            parse_forwarded_entry("[::ffff:1.2.3.4]:80"),
            Some(ip("1.2.3.4"))
        );
        // A dual-stack listener sees an IPv4 proxy as ::ffff:10.0.0.2: still trusted.
        assert_eq!(client("::ffff:10.0.0.2", &["1.2.3.4"]), ip("1.2.3.4"));
        let loopback = nets(&["127.0.0.1/32"]);
        assert_eq!(
            client_ip(
                ip("::ffff:127.0.0.1"),
                ["203.0.113.5"].into_iter(),
                &loopback
            ),
            ip("203.0.113.5")
        );
        // A mapped trusted hop is stepped over like the IPv4 one.
        assert_eq!(
            client("10.0.0.2", &["1.2.3.4, ::ffff:10.0.0.7"]),
            ip("1.2.3.4")
        );
        // An untrusted mapped peer is reported as IPv4.
        assert_eq!(client("::ffff:203.0.113.9", &[]), ip("203.0.113.9"));
    }

    #[test]
    fn nothing_left_of_an_unparsable_entry_is_believed() {
        for junk in [
            "unknown",
            "_hidden",
            "nonsense",
            "",
            "1.2.3.4:99999",
            "1.2.3.4:",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[1.2.3.4]:80x",
            "fe80::1%eth0",
            "1.2.3.4.5",
            "2001:db8::1:zz",
        ] {
            assert_eq!(parse_forwarded_entry(junk), None, "{junk:?}");
            // The proxy reported junk: the proxy is the client, not the forged entry.
            assert_eq!(
                client("10.0.0.2", &[&format!("6.6.6.6, {junk}")]),
                ip("10.0.0.2"),
                "{junk:?}"
            );
            // Junk behind a trusted hop: that hop, still nothing further left.
            assert_eq!(
                client("10.0.0.2", &[&format!("6.6.6.6, {junk}, 10.0.0.7")]),
                ip("10.0.0.7"),
                "{junk:?}"
            );
            // Junk left of the client does not matter.
            assert_eq!(
                client("10.0.0.2", &[&format!("{junk}, 1.2.3.4")]),
                ip("1.2.3.4"),
                "{junk:?}"
            );
        }
        // The same across header lines.
        assert_eq!(client("10.0.0.2", &["6.6.6.6", "unknown"]), ip("10.0.0.2"));
        assert_eq!(client("10.0.0.2", &["6.6.6.6,"]), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_prefix() {
        let net = |s: &str, bits: u8| client_network(ip(s), bits).to_string();
        assert_eq!(net("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            net("2001:db8:1:2:ffff:ffff:ffff:ffff", 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(net("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::/48");
        assert_eq!(net("2001:db8:1:2:aaaa::1", 128), "2001:db8:1:2:aaaa::1/128");
        assert_eq!(net("1.2.3.4", 64), "1.2.3.4/32");
        assert_eq!(net("::ffff:1.2.3.4", 64), "1.2.3.4/32");
        assert_ne!(
            client_network(ip("2001:db8:1:2::1"), 64),
            client_network(ip("2001:db8:1:3::1"), 64)
        );
    }
}
