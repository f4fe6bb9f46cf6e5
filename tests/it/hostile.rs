//! Hostile input, black-box against the real binary: the cases a fuzzer may miss. Deep
//! JSON, huge fields, wrong types, duplicate keys, NUL bytes, invalid and overlong UTF-8,
//! Unicode look-alikes, SQL and header-injection strings in every field, a Content-Length
//! that lies, chunked bodies and wrong Content-Types. Each must get a 4xx (never a 5xx)
//! with a JSON `{"error": …, "code": …}` body naming the problem, and nothing harmful may
//! reach the database: afterwards it still registers and logs users in normally.
//!
//! What reqwest cannot send (a lying Content-Length, hand-made chunked framing, raw
//! header bytes) is written byte for byte on a `TcpStream`, and every read is bounded.

use std::time::{Duration, Instant};

use crate::common::{self, json, TestApp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery";
/// The longest any single exchange may take, including a server-side timeout.
const RAW_TIMEOUT: Duration = Duration::from_secs(20);
/// Request body limit documented in the README.
const BODY_LIMIT: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------
// One view of a response, whether it came through reqwest or a raw socket
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    async fn from(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.bytes().await.expect("read the response body").to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "{} with a body that is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a 4xx JSON error whose message mentions every one of `needles`
    /// (ASCII case-insensitive), and no injected header. Returns the message.
    fn error(&self, what: &str, needles: &[&str]) -> String {
        assert!(
            (400..500).contains(&self.status),
            "{what}: expected a 4xx, got {} {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{what}: error content-type ({} {:?})",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        let msg = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no \"error\" string in {body}"))
            .to_owned();
        // Beside the message, its stable code; and the field at fault, for `invalid_field`.
        let code = body["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no \"code\" string in {body}"));
        assert!(
            !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{what}: code {code:?} is not snake_case"
        );
        let keys = if code == "invalid_field" {
            let field = body["field"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: invalid_field without a field: {body}"));
            assert!(msg.starts_with(&format!("{field}: ")), "{what}: {body}");
            3
        } else {
            2
        };
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(keys),
            "{what}: {body}"
        );
        for needle in needles {
            assert!(
                msg.to_ascii_lowercase()
                    .contains(&needle.to_ascii_lowercase()),
                "{what}: {msg:?} should mention {needle:?}"
            );
        }
        self.no_injected_headers(what);
        msg
    }

    /// Asserts exactly `status` and a JSON error mentioning `needles`.
    fn expect(&self, status: u16, what: &str, needles: &[&str]) -> String {
        let msg = self.error(what, needles);
        assert_eq!(self.status, status, "{what}: {msg:?}");
        msg
    }

    /// No header was made out of a field's contents, and no cookie was set.
    fn no_injected_headers(&self, what: &str) {
        for (k, v) in &self.headers {
            let (k, v) = (k.to_ascii_lowercase(), v.to_ascii_lowercase());
            assert!(
                !k.contains("injected") && !v.contains("injected") && !v.contains("evil"),
                "{what}: injected header {k}: {v}"
            );
            assert_ne!(k, "set-cookie", "{what}: unexpected cookie {v}");
            assert_ne!(k, "location", "{what}: unexpected redirect {v}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1 on a socket
// ---------------------------------------------------------------------------------------

/// What the client does after writing its bytes.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Keep the connection open both ways, like a client still "sending".
    Wait,
    /// Shut down the write half (FIN), like a client that gave up sending.
    HalfClose,
}

fn host_port(app: &TestApp) -> String {
    app.addr.trim_start_matches("http://").to_owned()
}

/// A POST with `headers` (raw lines, each ending in CRLF) and `body`, and
/// `Connection: close` so the server ends the exchange after one response.
fn post(path: &str, headers: &[u8], body: &[u8]) -> Vec<u8> {
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    req.extend_from_slice(headers);
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

/// Writes `request` and reads one response, all within RAW_TIMEOUT; panics if the
/// server stays silent that long or closes without answering. Write errors are
/// ignored: the server may answer and close before it has read everything.
async fn raw(app: &TestApp, request: &[u8], then: Then) -> Answer {
    let started = Instant::now();
    let attempt = async {
        let mut stream = TcpStream::connect(host_port(app))
            .await
            .expect("connect to the server");
        let _ = stream.write_all(request).await;
        if then == Then::HalfClose {
            let _ = stream.shutdown().await;
        }
        read_response(&mut stream).await
    };
    match tokio::time::timeout(RAW_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("after {:?}: {e}", started.elapsed()),
        Err(_) => panic!(
            "no response within {RAW_TIMEOUT:?} (the server hangs on this request); \
             request began {:?}",
            String::from_utf8_lossy(&request[..request.len().min(300)])
        ),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP/1.1 response: status line, headers, and a body framed by
/// Content-Length or chunked encoding, or running to end of stream.
async fn read_response(stream: &mut TcpStream) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk).await {
            Ok(0) => {
                return Err(format!(
                    "connection closed without a (complete) response; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(format!(
                    "reading the response: {e}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: buf[head_end + 4..].to_vec(),
    };
    let length: Option<usize> = answer.header("content-length").and_then(|v| v.parse().ok());
    let chunked = answer
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    loop {
        match (length, chunked) {
            (Some(n), _) if answer.body.len() >= n => {
                answer.body.truncate(n);
                return Ok(answer);
            }
            (None, true) => {
                if let Some(decoded) = dechunk(&answer.body) {
                    answer.body = decoded;
                    return Ok(answer);
                }
            }
            _ => {}
        }
        match stream.read(&mut chunk).await {
            Ok(0) if length.is_none() && !chunked => return Ok(answer),
            Ok(0) => return Err(format!("response body cut short: {answer:?}")),
            Ok(n) => answer.body.extend_from_slice(&chunk[..n]),
            Err(_) if length.is_none() && !chunked => return Ok(answer),
            Err(e) => return Err(format!("reading the response body: {e}")),
        }
    }
}

/// The payload of a complete chunked body, or None if more bytes are needed.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `body` in chunked transfer encoding, `size` bytes a chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

const JSON: &[u8] = b"Content-Type: application/json\r\n";

fn content_length(n: usize) -> Vec<u8> {
    format!("Content-Length: {n}\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------------
// Shared steps
// ---------------------------------------------------------------------------------------

async fn post_json(app: &TestApp, path: &str, body: &Value) -> Answer {
    Answer::from(app.post_json(path, body).await).await
}

async fn post_bytes(app: &TestApp, path: &str, body: impl Into<Vec<u8>>) -> Answer {
    Answer::from(
        app.post_raw(path, Some("application/json"), body.into())
            .await,
    )
    .await
}

/// A valid body for each JSON endpoint, and the string fields it has.
fn valid_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/register",
            json!({"username": "valid_user", "email": "valid@example.com",
                   "phone": "+14155550100", "password": PASSWORD}),
        ),
        (
            "/login",
            json!({"identifier": "valid_user", "password": PASSWORD}),
        ),
        (
            "/forgot-password",
            json!({"identifier": "valid_user", "channel": "email"}),
        ),
        (
            "/validate-otp",
            json!({"identifier": "valid_user", "otp": "123456"}),
        ),
        (
            "/reset-password",
            json!({"identifier": "valid_user", "new_password": "another fine passphrase",
                   "reset_token": "A".repeat(43)}),
        ),
    ]
}

/// The field names of a body.
fn fields(body: &Value) -> Vec<String> {
    body.as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// Registration and login still work for an ordinary user.
async fn still_works(app: &TestApp, name: &str) {
    let email = format!("{name}@example.com");
    let (status, body) = json(app.register(name, &email, None, PASSWORD).await).await;
    assert_eq!(status, 201, "register {name}: {body}");
    for id in [name, email.as_str()] {
        let (status, body) = json(app.login(id, PASSWORD).await).await;
        assert_eq!(status, 200, "login {id}: {body}");
    }
}

// ---------------------------------------------------------------------------------------
// Deep nesting, huge fields, wrong types, duplicate keys
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn json_nested_ten_thousand_deep_is_refused() {
    let app = TestApp::spawn().await;
    let open = "[".repeat(10_000);
    let close = "]".repeat(10_000);

    // Balanced, 20 KB: over the body limit before nesting even matters.
    post_bytes(&app, "/login", format!("{open}{close}"))
        .await
        .expect(413, "10,000-deep array", &["too large"]);
    // Unbalanced, under the limit: malformed, however deep.
    post_bytes(&app, "/login", format!(r#"{{"ignored": {open}"#))
        .await
        .expect(400, "10,000-deep unknown field", &["Malformed JSON"]);
    let objects = r#"{"a":"#.repeat(3_000);
    post_bytes(&app, "/login", format!("{{\"x\":{objects}"))
        .await
        .expect(400, "3,000-deep objects", &["Malformed JSON"]);
    // Balanced and under the limit, in fields the server ignores: skipped without
    // recursion, so the request is answered on its merits.
    for deep in [
        format!("{}{}", "[".repeat(8_000), "]".repeat(8_000)),
        format!("{}1{}", r#"{"a":"#.repeat(2_500), "}".repeat(2_500)),
    ] {
        post_bytes(
            &app,
            "/login",
            format!(r#"{{"identifier":"a@b.co","password":"x","deep":{deep}}}"#),
        )
        .await
        .expect(401, "8,000-deep balanced", &["Invalid credentials"]);
    }
    // In a field that must be a string: refused at the first bracket.
    for deep in ["[".repeat(8_000), r#"{"a":"#.repeat(3_000)] {
        post_bytes(
            &app,
            "/register",
            format!(r#"{{"username":"deep","email":"d@example.com","phone":{deep}"#),
        )
        .await
        .expect(422, "deep value in phone", &["phone", "invalid type"]);
    }
    // Nesting where a string belongs names the field.
    post_bytes(&app, "/login", format!(r#"{{"identifier": {open}"#))
        .await
        .expect(422, "deep array in a string field", &["identifier"]);
    // And at the top level: not an object.
    post_bytes(&app, "/register", open)
        .await
        .expect(400, "top-level array", &["JSON object"]);
    still_works(&app, "after_nesting").await;
}

#[tokio::test]
async fn a_one_megabyte_string_field_is_refused_as_too_large() {
    let app = TestApp::spawn().await;
    let huge = "A".repeat(1024 * 1024);
    for (path, body) in valid_bodies() {
        for field in fields(&body) {
            let mut hostile = body.clone();
            hostile[&field] = json!(huge);
            post_json(&app, path, &hostile).await.expect(
                413,
                &format!("1 MB {field} on {path}"),
                &["too large"],
            );
        }
    }
    // Without a Content-Length (chunked), the limit still holds.
    let body = format!(r#"{{"identifier":"{huge}","password":"x"}}"#);
    let req = post(
        "/login",
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        &chunked(body.as_bytes(), 8 * 1024),
    );
    raw(&app, &req, Then::Wait)
        .await
        .expect(413, "1 MB chunked", &["too large"]);
    // Just over the limit is refused; a body just under it is read.
    let pad = "x".repeat(BODY_LIMIT);
    post_bytes(
        &app,
        "/login",
        format!(r#"{{"identifier":"a@b.co","password":"{pad}"}}"#),
    )
    .await
    .expect(413, "16 KiB + 1", &["too large", "16384"]);
    let pad = "x".repeat(BODY_LIMIT - 100);
    post_bytes(
        &app,
        "/login",
        format!(r#"{{"identifier":"a@b.co","password":"x","pad":"{pad}"}}"#),
    )
    .await
    .expect(401, "just under the limit", &["Invalid credentials"]);
    still_works(&app, "after_huge").await;
}

#[tokio::test]
async fn numbers_and_other_non_strings_where_strings_belong_name_the_field() {
    let app = TestApp::spawn().await;
    let wrong = [
        json!(12345678),
        json!(-1.5e300),
        json!(true),
        json!([]),
        json!(["a"]),
        json!({}),
        json!({"$ne": null}),
    ];
    for (path, body) in valid_bodies() {
        for field in fields(&body) {
            for value in &wrong {
                let mut hostile = body.clone();
                hostile[&field] = value.clone();
                post_json(&app, path, &hostile).await.expect(
                    422,
                    &format!("{field} = {value} on {path}"),
                    &[&field, "invalid type"],
                );
            }
        }
    }
    // null is "missing" for a required field, and allowed for an optional one.
    post_json(
        &app,
        "/login",
        &json!({"identifier": null, "password": PASSWORD}),
    )
    .await
    .expect(422, "null identifier", &["identifier"]);
    // Numbers too large for any type, where a string belongs, are malformed JSON.
    post_bytes(
        &app,
        "/login",
        r#"{"identifier": 1e999999, "password": "x"}"#,
    )
    .await
    .expect(400, "1e999999", &["number out of range"]);
    still_works(&app, "after_types").await;
}

#[tokio::test]
async fn duplicate_keys_are_refused_naming_the_key() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "/login",
            r#"{"identifier":"a@b.co","identifier":"admin","password":"x"}"#,
            "identifier",
        ),
        (
            "/login",
            r#"{"identifier":"admin","password":"x","password":"y"}"#,
            "password",
        ),
        (
            "/register",
            r#"{"username":"dupe","username":"admin","email":"d@example.com","password":"correct horse battery"}"#,
            "username",
        ),
        (
            "/validate-otp",
            r#"{"identifier":"admin","otp":"111111","otp":"222222"}"#,
            "otp",
        ),
    ];
    for (path, body, key) in cases {
        post_bytes(&app, path, body).await.expect(
            400,
            &format!("duplicate {key}"),
            &["duplicate", key],
        );
    }
    // Neither value got through: the would-be user does not exist.
    let (status, _) = json(app.login("dupe", PASSWORD).await).await;
    assert_eq!(status, 401);
    still_works(&app, "after_dupes").await;
}

// ---------------------------------------------------------------------------------------
// NUL bytes, invalid and overlong UTF-8
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn nul_bytes_are_refused_in_every_field() {
    let app = TestApp::spawn().await;
    for (path, body) in valid_bodies() {
        for field in fields(&body) {
            let original = body[&field].as_str().unwrap().to_owned();
            for hostile in [
                format!("{original}\u{0}"),
                format!("\u{0}{original}"),
                format!("{}\u{0}{}", &original[..2], &original[2..]),
            ] {
                let mut hostile_body = body.clone();
                hostile_body[&field] = json!(hostile);
                let answer = post_json(&app, path, &hostile_body).await;
                let what = format!("NUL in {field} on {path}");
                if path == "/reset-password" && field != "identifier" {
                    // The token is checked before the new password: not a well-formed
                    // token, refused like any other.
                    answer.expect(401, &what, &["reset token"]);
                } else {
                    answer.expect(422, &what, &[&field]);
                }
            }
        }
    }
    // A raw NUL byte inside a JSON string is not JSON.
    post_bytes(
        &app,
        "/login",
        b"{\"identifier\":\"ad\0min\",\"password\":\"x\"}".to_vec(),
    )
    .await
    .expect(
        400,
        "raw NUL byte",
        &["Malformed JSON", "control character"],
    );
    post_bytes(&app, "/login", b"\0".to_vec())
        .await
        .expect(400, "NUL body", &["JSON object"]);
    still_works(&app, "after_nul").await;
}

#[tokio::test]
async fn invalid_and_overlong_utf8_is_refused() {
    let app = TestApp::spawn().await;
    let bad_sequences: [(&str, &[u8]); 8] = [
        ("overlong '/' (C0 AF)", b"\xC0\xAF"),
        ("overlong '/' (E0 80 AF)", b"\xE0\x80\xAF"),
        ("overlong '/' (F0 80 80 AF)", b"\xF0\x80\x80\xAF"),
        ("overlong NUL (C0 80)", b"\xC0\x80"),
        ("UTF-16 surrogate (ED A0 80)", b"\xED\xA0\x80"),
        ("stray continuation byte", b"\x80"),
        ("0xFF", b"\xFF"),
        ("truncated sequence", b"\xE2\x82"),
    ];
    for (path, body) in valid_bodies() {
        for field in fields(&body) {
            for (name, seq) in bad_sequences {
                let mut text = serde_json::to_vec(&body).unwrap();
                let marker = format!("\"{field}\":\"");
                let at = find(&text, marker.as_bytes()).unwrap() + marker.len();
                text.splice(at..at, seq.iter().copied());
                post_bytes(&app, path, text).await.expect(
                    400,
                    &format!("{name} in {field} on {path}"),
                    &["Malformed JSON", "unicode"],
                );
            }
        }
    }
    // In a key, and as the whole body.
    post_bytes(
        &app,
        "/login",
        b"{\"ident\xC0\xAFifier\":\"admin\"}".to_vec(),
    )
    .await
    .expect(400, "overlong in a key", &["Malformed JSON"]);
    post_bytes(&app, "/login", b"\xFE\xFF\x00{\x00}".to_vec())
        .await
        .expect(400, "UTF-16 body", &["JSON object"]);
    // An escaped lone surrogate is not a character either.
    post_bytes(
        &app,
        "/login",
        r#"{"identifier":"\uD800admin","password":"x"}"#,
    )
    .await
    .expect(400, "lone surrogate escape", &["Malformed JSON", "escape"]);
    post_bytes(
        &app,
        "/login",
        r#"{"identifier":"\uDC00\uD800","password":"x"}"#,
    )
    .await
    .expect(400, "reversed surrogates", &["Malformed JSON", "surrogate"]);
    // A Content-Type header with bytes that are not text is not JSON.
    let req = post(
        "/login",
        b"Content-Type: application/json\xC0\xAF\r\nContent-Length: 2\r\n",
        b"{}",
    );
    raw(&app, &req, Then::Wait).await.expect(
        415,
        "invalid UTF-8 in Content-Type",
        &["application/json"],
    );
    still_works(&app, "after_utf8").await;
}

// ---------------------------------------------------------------------------------------
// Unicode look-alikes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unicode_look_alikes_collide_with_the_ascii_name_and_address() {
    let app = TestApp::spawn().await;
    let (status, body) = json(
        app.register("Admin", "admin@example.com", None, PASSWORD)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");

    for name in [
        "admin",
        "ADMIN",
        "ａｄｍｉｎ",
        "ＡＤＭＩＮ",
        "\u{1d41a}\u{1d41d}\u{1d426}\u{1d422}\u{1d427}", // mathematical bold
        " Admin\u{3000}",
    ] {
        let answer = Answer::from(
            app.register(name, "someone.else@example.com", None, PASSWORD)
                .await,
        )
        .await;
        answer.expect(409, &format!("username {name:?}"), &["already exists"]);
        // The look-alike logs in to the same account.
        let (status, body) = json(app.login(name, PASSWORD).await).await;
        assert_eq!(status, 200, "login as {name:?}: {body}");
    }
    for email in [
        "ADMIN@EXAMPLE.COM",
        "ａｄｍｉｎ@example.com",
        "ａｄｍｉｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",
        "admin\u{fe6b}example.com", // small commercial at
    ] {
        let answer = Answer::from(app.register("other_name", email, None, PASSWORD).await).await;
        answer.expect(409, &format!("email {email:?}"), &["already exists"]);
        let (status, body) = json(app.login(email, PASSWORD).await).await;
        assert_eq!(status, 200, "login as {email:?}: {body}");
    }
    // Look-alikes NFKC does not fold are refused outright in usernames.
    for name in [
        "\u{430}dmin",   // Cyrillic а
        "adm\u{131}n",   // dotless ı
        "admin\u{200b}", // zero-width space
        "ad\u{301}min",  // combining acute
        "\u{202e}nimda", // right-to-left override
    ] {
        Answer::from(app.register(name, "x.y@example.com", None, PASSWORD).await)
            .await
            .expect(422, &format!("username {name:?}"), &["username"]);
    }
    // Only the one account exists.
    let (status, me) = json(app.login("Admin", PASSWORD).await).await;
    assert_eq!(status, 200, "{me}");
    still_works(&app, "after_lookalikes").await;
}

// ---------------------------------------------------------------------------------------
// SQL and header injection
// ---------------------------------------------------------------------------------------

const SQL: [&str; 8] = [
    "' OR 1=1 --",
    "admin'--",
    "\"; DROP TABLE users; --",
    "'; DROP TABLE users; --",
    "1' UNION SELECT password_hash FROM users --",
    "' OR ''='",
    "\\'; DELETE FROM sessions; --",
    "%27%20OR%201%3D1",
];

#[tokio::test]
async fn sql_injection_strings_in_every_field_are_inert() {
    let app = TestApp::spawn().await;
    // A real account, so that a successful injection would have something to return.
    let (status, _) = json(
        app.register(
            "victim",
            "victim@example.com",
            Some("+14155550199"),
            PASSWORD,
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);

    for (path, body) in valid_bodies() {
        for field in fields(&body) {
            for sql in SQL {
                let mut hostile = body.clone();
                hostile[&field] = json!(sql);
                let answer = post_json(&app, path, &hostile).await;
                let what = format!("{sql:?} in {field} on {path}");
                match (path, field.as_str()) {
                    ("/register", "password") => {
                        // Any printable text is a fine password; it is only ever hashed.
                        // (The first one creates `valid_user`; then the name is taken.)
                        assert!(
                            [201, 409].contains(&answer.status),
                            "{what}: {} {:?}",
                            answer.status,
                            String::from_utf8_lossy(&answer.body)
                        );
                    }
                    ("/login", "password") if sql == SQL[0] => {
                        // `valid_user`'s password, as just registered: data, not code.
                        assert_eq!(answer.status, 200, "{what}");
                    }
                    ("/login", "password") => {
                        answer.expect(401, &what, &["Invalid credentials"]);
                    }
                    ("/reset-password", "reset_token" | "new_password") => {
                        answer.expect(401, &what, &["reset token"]);
                    }
                    _ => {
                        answer.expect(422, &what, &[&field]);
                    }
                }
            }
        }
        // Every field hostile at once.
        let mut hostile = body.clone();
        for field in fields(&body) {
            hostile[&field] = json!("' OR 1=1 --");
        }
        post_json(&app, path, &hostile)
            .await
            .error(&format!("all fields on {path}"), &[]);
    }
    // Injection strings as passwords against the real account are just wrong passwords.
    for id in ["victim", "victim@example.com", "+14155550199"] {
        for sql in SQL {
            post_json(&app, "/login", &json!({"identifier": id, "password": sql}))
                .await
                .expect(
                    401,
                    &format!("password {sql:?} for {id}"),
                    &["Invalid credentials"],
                );
        }
    }

    // Quotes that are legal in an address are stored and returned as data, verbatim.
    let email = "o'brien'--@example.com";
    let password = "' OR '1'='1' -- ; DROP TABLE users";
    let (status, body) = json(app.register("obrien", email, None, password).await).await;
    assert_eq!(status, 201, "{body}");
    let resp = app.login(email, password).await;
    assert_eq!(resp.status(), 200);
    let token = common::session_cookie(&resp).expect("a session");
    let (status, me) = json(app.me(&token).await).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], email);
    assert_eq!(me["username"], "obrien");

    // The tables are intact: everyone still logs in, and new users register.
    for (id, pw) in [("victim", PASSWORD), ("obrien", password)] {
        let (status, body) = json(app.login(id, pw).await).await;
        assert_eq!(status, 200, "{id}: {body}");
    }
    still_works(&app, "after_sql").await;
}

#[tokio::test]
async fn header_injection_in_every_field_is_refused() {
    let app = TestApp::spawn().await;
    let payloads = [
        "\r\nX-Injected: 1",
        "\r\nSet-Cookie: session=evil; Path=/",
        "\nLocation: http://evil.example/",
        "\r\n\r\n<html>injected</html>",
        "%0d%0aX-Injected:%201",
        "\u{2028}X-Injected: 1",
        "\u{85}X-Injected: 1",
    ];
    for (path, body) in valid_bodies() {
        for field in fields(&body) {
            for (i, payload) in payloads.iter().enumerate() {
                let mut hostile = body.clone();
                let value = format!("{}{payload}", body[&field].as_str().unwrap());
                hostile[&field] = json!(value);
                if (path, field.as_str()) == ("/register", "password") {
                    // An account of its own, so `valid_user` never gets this password.
                    hostile["username"] = json!(format!("hdr_pw_{i}"));
                    hostile["email"] = json!(format!("pw{i}@example.com"));
                    hostile["phone"] = json!(format!("+1415555020{i}"));
                }
                let answer = post_json(&app, path, &hostile).await;
                let what = format!("{payload:?} in {field} on {path}");
                // Every answer is free of injected headers, success or not.
                answer.no_injected_headers(&what);
                match (path, field.as_str()) {
                    ("/reset-password", "reset_token" | "new_password") => {
                        // The token is checked first, and this one is not well-formed.
                        answer.expect(401, &what, &["reset token"]);
                    }
                    ("/register" | "/login", "password")
                        if !payload.contains(['\r', '\n', '\u{85}']) =>
                    {
                        // Printable text is a fine password: no injection possible.
                        assert!(answer.status < 500, "{what}: {}", answer.status);
                    }
                    _ => {
                        answer.expect(422, &what, &[&field]);
                    }
                }
            }
        }
    }
    // An address with a line break can never reach an SMTP header.
    let answer = post_json(
        &app,
        "/forgot-password",
        &json!({"identifier": "victim@example.com\r\nBcc: all@example.com"}),
    )
    .await;
    answer.expect(422, "Bcc injection", &["identifier"]);
    assert!(app.smtp.messages().is_empty());
    still_works(&app, "after_headers").await;
}

// ---------------------------------------------------------------------------------------
// Framing: lying Content-Length, chunked bodies, Content-Type
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_content_length_shorter_than_the_body_cuts_the_json() {
    let app = TestApp::spawn().await;
    let body = br#"{"identifier":"admin","password":"correct horse battery"}"#;
    let req = post("/login", &[JSON, &content_length(20)].concat(), body);
    raw(&app, &req, Then::Wait)
        .await
        .expect(400, "Content-Length 20", &["Malformed JSON"]);
    // Zero: an empty body.
    let req = post("/login", &[JSON, &content_length(0)].concat(), body);
    raw(&app, &req, Then::Wait)
        .await
        .expect(400, "Content-Length 0", &["empty"]);
    // The bytes after the declared length are not smuggled in as a second request.
    let smuggled = b"{}GET /nowhere-smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let req = post("/login", &[JSON, &content_length(2)].concat(), smuggled);
    raw(&app, &req, Then::Wait)
        .await
        .expect(400, "smuggling tail", &["Missing field"]);
    still_works(&app, "after_short").await;
}

#[tokio::test]
async fn a_content_length_longer_than_the_body_still_gets_an_answer() {
    let app = TestApp::spawn().await;
    let body = br#"{"identifier":"admin","password":"x"}"#;
    let header = [JSON, &content_length(body.len() + 100)].concat();

    // The client stops sending but keeps the connection open: answered after the
    // server's own timeout, with a 4xx that says why.
    let started = Instant::now();
    let answer = raw(&app, &post("/login", &header, body), Then::Wait).await;
    answer.expect(
        400,
        "Content-Length + 100, connection open",
        &["Timed out", "request body", "Content-Length"],
    );
    assert!(started.elapsed() < RAW_TIMEOUT);

    // The client closes its sending side: answered at once.
    let started = Instant::now();
    raw(&app, &post("/login", &header, body), Then::HalfClose)
        .await
        .expect(
            400,
            "Content-Length + 100, half-closed",
            &["request body", "ended early"],
        );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A length far over the limit is refused without waiting for the bytes.
    let started = Instant::now();
    let header = [JSON, &content_length(1 << 30)].concat();
    raw(&app, &post("/login", &header, body), Then::Wait)
        .await
        .expect(413, "Content-Length 1 GiB", &["too large"]);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Nonsense lengths are refused by the HTTP layer (hyper) before any handler runs:
    // a bare 400 with an empty body, never a hang. (hyper writes that response itself;
    // it cannot be given our JSON shape.)
    for bad in ["-1", "abc", "1, 2", "99999999999999999999999"] {
        let header = [JSON, format!("Content-Length: {bad}\r\n").as_bytes()].concat();
        let answer = raw(&app, &post("/login", &header, body), Then::Wait).await;
        assert!(
            (400..500).contains(&answer.status),
            "Content-Length {bad}: {}",
            answer.status
        );
    }
    still_works(&app, "after_long").await;
}

#[tokio::test]
async fn chunked_bodies_are_ordinary_http() {
    let app = TestApp::spawn().await;
    let te = b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n";
    let register = serde_json::to_vec(&json!({
        "username": "chunky", "email": "chunky@example.com", "password": PASSWORD
    }))
    .unwrap();
    let answer = raw(
        &app,
        &post("/register", te, &chunked(&register, 7)),
        Then::Wait,
    )
    .await;
    assert_eq!(
        answer.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.json(),
        json!({"message": "User registered successfully"})
    );

    // One byte a chunk, with chunk extensions and a trailer.
    let login = serde_json::to_vec(&json!({"identifier": "chunky", "password": PASSWORD})).unwrap();
    let mut framed = Vec::new();
    for b in &login {
        framed.extend_from_slice(b"1;ext=yes\r\n");
        framed.push(*b);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\nX-Trailer: ok\r\n\r\n");
    let answer = raw(&app, &post("/login", te, &framed), Then::Wait).await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(answer
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("session=")));

    // Malformed framing is a 4xx, never a hang or a 5xx.
    let cases: [(&str, Vec<u8>); 4] = [
        ("bad chunk size", b"zz\r\n{}\r\n0\r\n\r\n".to_vec()),
        (
            "chunk longer than declared",
            b"2\r\n{\"identifier\"\r\n0\r\n\r\n".to_vec(),
        ),
        ("no final chunk", chunked(&login, 5)[..20].to_vec()),
        (
            "huge chunk size",
            b"ffffffffffffffffff\r\n{}\r\n0\r\n\r\n".to_vec(),
        ),
    ];
    for (name, framed) in cases {
        let then = if name == "no final chunk" {
            Then::HalfClose
        } else {
            Then::Wait
        };
        let answer = raw(&app, &post("/login", te, &framed), then).await;
        answer.expect(400, name, &["request body"]);
    }

    // Chunked with a Content-Length as well (a request-smuggling shape) is not
    // mis-framed: either refused, or read as chunked.
    let both =
        b"Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n";
    let answer = raw(
        &app,
        &post("/login", both, &chunked(&login, 16)),
        Then::Wait,
    )
    .await;
    assert!(
        answer.status == 200 || (400..500).contains(&answer.status),
        "CL + TE: {} {:?}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    still_works(&app, "after_chunked").await;
}

#[tokio::test]
async fn a_wrong_content_type_is_refused() {
    let app = TestApp::spawn().await;
    let body = serde_json::to_vec(&json!({"identifier": "admin", "password": PASSWORD})).unwrap();
    for ct in [
        Some("text/plain"),
        Some("text/json"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=xyz"),
        Some("application/xml"),
        Some("application/jsonp"),
        Some("application/json-seq"),
        Some("json"),
        Some(""),
        Some("*/*"),
        None,
    ] {
        Answer::from(app.post_raw("/login", ct, body.clone()).await)
            .await
            .expect(415, &format!("Content-Type {ct:?}"), &["application/json"]);
    }
    // Accepted spellings of JSON.
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
    ] {
        let answer = Answer::from(app.post_raw("/login", Some(ct), body.clone()).await).await;
        answer.expect(401, ct, &["Invalid credentials"]);
    }
    // Declared JSON, but a form body.
    Answer::from(
        app.post_raw(
            "/login",
            Some("application/json"),
            b"identifier=admin&password=x".to_vec(),
        )
        .await,
    )
    .await
    .expect(400, "form body as JSON", &["JSON object"]);
    // Two Content-Type headers that disagree.
    let header =
        b"Content-Type: text/plain\r\nContent-Type: application/json\r\nContent-Length: 2\r\n";
    let answer = raw(&app, &post("/login", header, b"{}"), Then::Wait).await;
    answer.error("two Content-Types", &[]);
    still_works(&app, "after_content_type").await;
}
