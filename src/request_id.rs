//! Which `X-Request-Id` a request runs under. A client's id is kept only when it is a
//! short token; anything else is dropped before `SetRequestIdLayer`, which then mints a
//! UUID. The id goes into every log line of the request and back out in the response, so
//! a client must not be able to forge log fields with it (quotes, spaces, `key=value`) or
//! make every line carry 60 KB.

use axum::extract::Request;
use axum::http::HeaderName;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent id kept: a UUID (36) or a trace id (32) fits with room to spare.
const MAX_LEN: usize = 64;

/// Removes the client's `X-Request-Id` unless there is exactly one and it is 1–64 of
/// `A-Z a-z 0-9 . _ -`.
pub fn drop_malformed(mut req: Request) -> Request {
    let keep = {
        let mut ids = req.headers().get_all(&REQUEST_ID).iter();
        match (ids.next(), ids.next()) {
            (Some(id), None) => is_well_formed(id.as_bytes()),
            (None, _) => true,
            (Some(_), Some(_)) => false,
        }
    };
    if !keep {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

fn is_well_formed(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(ids: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut req = Request::new(axum::body::Body::empty());
        for id in ids {
            req.headers_mut().append(
                &REQUEST_ID,
                axum::http::HeaderValue::from_bytes(id).unwrap(),
            );
        }
        drop_malformed(req)
            .headers()
            .get_all(&REQUEST_ID)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn short_tokens_are_kept() {
        for id in [
            &b"abc-123"[..],
            b"0f8fad5b-d9cb-469f-a165-70867728950e",
            b"4bf92f3577b34da6a3ce929d0e0e4736",
            b"a",
            b"svc.web_01-x",
            &[b'x'; 64],
        ] {
            assert_eq!(after(&[id]), vec![id.to_vec()], "{id:?}");
        }
        assert!(after(&[]).is_empty());
    }

    #[test]
    fn anything_else_is_dropped() {
        for id in [
            &b""[..],
            &[b'x'; 65],
            &[b'x'; 60_000],
            b"abc def",
            b"abc\"x=1",
            b"a=b",
            b"a:b",
            b"a/b",
            b"a\tb",
            "caf\u{e9}".as_bytes(),
        ] {
            assert!(after(&[id]).is_empty(), "{:?}", String::from_utf8_lossy(id));
        }
        // Two ids, even two good ones: which one would the logs and the answer use?
        assert!(after(&[&b"one"[..], &b"two"[..]]).is_empty());
    }
}
