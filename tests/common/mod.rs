//! Shared harness for black-box tests: starts the real `gatehouse serve` binary against a
//! fresh SQLite database in a temporary directory, with a local SMTP sink and a Twilio
//! mock standing in for the outside world, and talks HTTP to it.
//!
//! The mocks run on one small background runtime of their own, so they keep answering
//! whatever runtime flavour a test uses and even while a test thread blocks.
//! Everything listens on 127.0.0.1 only, and every wait is bounded.

#![allow(dead_code)]

pub mod db;
pub mod seed;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How long `TestApp::spawn` waits for the "listening on" line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A sensible default for `wait_for` calls on the mocks.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(20);
const LISTENING_MARKER: &str = "listening on http://";
/// The operations listener's line (`ADMIN_LISTEN_ADDR`: `/metrics`, the detailed `/readyz`).
const OPERATIONS_MARKER: &str = "operations endpoints (/metrics, /readyz) on http://";

// ---------------------------------------------------------------------------------------
// Background runtime for the mocks
// ---------------------------------------------------------------------------------------

/// One runtime, shared by every mock in this test binary and never shut down.
fn mock_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-mocks")
            .enable_all()
            .build()
            .expect("build the mock runtime")
    })
}

/// Binds 127.0.0.1:0 synchronously, so the port is known before anything is spawned.
fn bind_loopback() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("set the listener non-blocking");
    listener
}

/// Aborts the background task serving a mock when the last handle to the mock goes.
struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `check` until it returns `Some` or `timeout` passes.
async fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// SMTP sink
// ---------------------------------------------------------------------------------------

/// One message the SMTP sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The MAIL FROM address, without angle brackets.
    pub from: String,
    /// The RCPT TO addresses, without angle brackets, in order.
    pub to: Vec<String>,
    /// The raw message (headers and body) as sent after DATA, dot-unstuffed, CRLF kept.
    pub data: String,
}

impl Mail {
    /// True if `addr` is one of the envelope recipients (ASCII case-insensitive).
    pub fn is_to(&self, addr: &str) -> bool {
        self.to.iter().any(|t| t.eq_ignore_ascii_case(addr))
    }

    /// The first header called `name` (case-insensitive), unfolded, with RFC 2047 encoded
    /// words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_head_body(&self.data);
        parse_headers(headers)
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_encoded_words(&v))
    }

    /// The decoded Subject header, or "" if there is none.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The raw body after the header block, still transfer-encoded.
    pub fn raw_body(&self) -> &str {
        split_head_body(&self.data).1
    }

    /// The readable text of the message: the body with its Content-Transfer-Encoding
    /// (quoted-printable or base64) undone, the text/plain parts of a multipart message
    /// (or any text/* part when there is no text/plain), and CRLF turned into LF.
    pub fn text(&self) -> String {
        mime_text(&self.data).replace("\r\n", "\n")
    }
}

struct SmtpShared {
    mails: Mutex<Vec<Mail>>,
}

/// A real SMTP server on 127.0.0.1 that accepts everything and keeps it in memory.
/// Cheap to clone; the listener closes when the last clone is dropped.
#[derive(Clone)]
pub struct SmtpSink {
    port: u16,
    shared: Arc<SmtpShared>,
    _task: Arc<TaskGuard>,
}

impl SmtpSink {
    /// Binds 127.0.0.1:0 and starts accepting connections in the background.
    pub fn start() -> SmtpSink {
        SmtpSink::from_listener(bind_loopback())
    }

    /// A sink on a given port (to bring a "mail provider" back where it used to be).
    pub fn start_on(port: u16) -> SmtpSink {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the SMTP port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        SmtpSink::from_listener(listener)
    }

    fn from_listener(listener: std::net::TcpListener) -> SmtpSink {
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(SmtpShared {
            mails: Mutex::new(Vec::new()),
        });
        let task_shared = shared.clone();
        let handle = mock_runtime().spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("register SMTP listener");
            // Connections live in this set, so aborting the accept loop ends them too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            conns.spawn(smtp_session(stream, task_shared.clone()));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        SmtpSink {
            port,
            shared,
            _task: Arc::new(TaskGuard(handle.abort_handle())),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT`, the value for SMTP_URL.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, in arrival order.
    pub fn messages(&self) -> Vec<Mail> {
        lock(&self.shared.mails).clone()
    }

    /// The mails received so far with `to` among their recipients (case-insensitive).
    pub fn messages_to(&self, to: &str) -> Vec<Mail> {
        lock(&self.shared.mails)
            .iter()
            .filter(|m| m.is_to(to))
            .cloned()
            .collect()
    }

    /// Forgets every mail received so far.
    pub fn clear(&self) {
        lock(&self.shared.mails).clear();
    }

    /// Waits until at least `n` mails to `to` (case-insensitive) have arrived and returns
    /// all of them; panics, listing what did arrive, after `timeout`.
    pub async fn wait_for(&self, to: &str, n: usize, timeout: Duration) -> Vec<Mail> {
        let found = poll_until(timeout, || {
            let mails = self.messages_to(to);
            (mails.len() >= n).then_some(mails)
        })
        .await;
        match found {
            Some(mails) => mails,
            None => {
                let got: Vec<_> = self.messages().into_iter().map(|m| m.to).collect();
                panic!(
                    "SMTP sink: expected {n} mail(s) to {to} within {timeout:?}, got {}; \
                     recipients of everything received: {got:?}",
                    self.messages_to(to).len()
                )
            }
        }
    }
}

async fn smtp_reply(w: &mut (impl AsyncWriteExt + Unpin), text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.flush().await
}

/// The address inside `<…>` of a MAIL FROM / RCPT TO argument (parameters ignored).
fn smtp_path(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(start), Some(end)) if start < end => arg[start + 1..end].to_string(),
        _ => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

async fn smtp_session(stream: TcpStream, shared: Arc<SmtpShared>) {
    // Errors only mean the client went away.
    let _ = smtp_session_inner(stream, shared).await;
}

async fn smtp_session_inner(stream: TcpStream, shared: Arc<SmtpShared>) -> std::io::Result<()> {
    const IDLE: Duration = Duration::from_secs(300);
    const MAX_MESSAGE: usize = 10 * 1024 * 1024;

    let (r, mut w) = stream.into_split();
    let mut r = TokioBufReader::new(r);
    smtp_reply(&mut w, "220 gatehouse-test-sink ESMTP ready\r\n").await?;

    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match tokio::time::timeout(IDLE, r.read_until(b'\n', &mut line)).await {
            Err(_) => {
                smtp_reply(&mut w, "421 idle too long, closing\r\n").await?;
                return Ok(());
            }
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a),
            None => (text.to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" => {
                from = None;
                rcpts.clear();
                smtp_reply(&mut w, "250-gatehouse-test-sink greets you\r\n250 HELP\r\n").await?;
            }
            "HELO" => {
                from = None;
                rcpts.clear();
                smtp_reply(&mut w, "250 gatehouse-test-sink\r\n").await?;
            }
            "MAIL" => {
                let arg = arg.trim();
                if !arg
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("FROM:"))
                {
                    smtp_reply(&mut w, "501 syntax: MAIL FROM:<address>\r\n").await?;
                    continue;
                }
                from = Some(smtp_path(&arg[5..]));
                rcpts.clear();
                smtp_reply(&mut w, "250 OK\r\n").await?;
            }
            "RCPT" => {
                let arg = arg.trim();
                if !arg.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("TO:")) {
                    smtp_reply(&mut w, "501 syntax: RCPT TO:<address>\r\n").await?;
                } else if from.is_none() {
                    smtp_reply(&mut w, "503 MAIL first\r\n").await?;
                } else {
                    rcpts.push(smtp_path(&arg[3..]));
                    smtp_reply(&mut w, "250 OK\r\n").await?;
                }
            }
            "DATA" => {
                if from.is_none() || rcpts.is_empty() {
                    smtp_reply(&mut w, "503 MAIL and RCPT first\r\n").await?;
                    continue;
                }
                smtp_reply(&mut w, "354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data: Vec<u8> = Vec::new();
                loop {
                    line.clear();
                    let n = tokio::time::timeout(IDLE, r.read_until(b'\n', &mut line))
                        .await
                        .map_err(|_| std::io::Error::other("idle in DATA"))??;
                    if n == 0 {
                        return Ok(()); // Client left mid-message: nothing is stored.
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
                    if data.len() + unstuffed.len() <= MAX_MESSAGE {
                        data.extend_from_slice(unstuffed);
                    }
                }
                let mail = Mail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut rcpts),
                    data: String::from_utf8_lossy(&data).into_owned(),
                };
                lock(&shared.mails).push(mail);
                smtp_reply(&mut w, "250 OK queued\r\n").await?;
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                smtp_reply(&mut w, "250 OK\r\n").await?;
            }
            "NOOP" => smtp_reply(&mut w, "250 OK\r\n").await?,
            "QUIT" => {
                smtp_reply(&mut w, "221 bye\r\n").await?;
                return Ok(());
            }
            _ => smtp_reply(&mut w, "502 command not implemented\r\n").await?,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Minimal MIME decoding, enough to read what lettre sends
// ---------------------------------------------------------------------------------------

/// Splits a message or MIME part at the first empty line.
fn split_head_body(data: &str) -> (&str, &str) {
    let crlf = data.find("\r\n\r\n").map(|i| (i, 4));
    let lf = data.find("\n\n").map(|i| (i, 2));
    let cut = match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    match cut {
        Some((i, len)) => (&data[..i], &data[i + len..]),
        None => (data, ""),
    }
}

/// Header lines as (name, value), continuation lines unfolded.
fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A parameter such as `boundary` from a header value like `multipart/alternative; boundary="x"`.
fn header_param(value: &str, param: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(param)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Undoes quoted-printable: soft line breaks (`=` at the end of a line) and `=XX` escapes.
pub fn decode_quoted_printable(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if b[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn decode_base64_lenient(s: &str) -> Vec<u8> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT
        .decode(compact)
        .unwrap_or_else(|_| s.as_bytes().to_vec())
}

/// The body of one (non-multipart) part with its transfer encoding undone.
fn decode_transfer(headers: &[(String, String)], body: &str) -> String {
    let encoding = header_of(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => decode_base64_lenient(body),
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The text of a message or part, walking into multipart bodies.
fn mime_text(data: &str) -> String {
    let (head, body) = split_head_body(data);
    let headers = parse_headers(head);
    let content_type = header_of(&headers, "Content-Type")
        .unwrap_or("text/plain")
        .to_string();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !mime.starts_with("multipart/") {
        return decode_transfer(&headers, body);
    }
    let Some(boundary) = header_param(&content_type, "boundary") else {
        return body.to_string();
    };
    let delimiter = format!("--{boundary}");
    let parts: Vec<&str> = body
        .split(delimiter.as_str())
        .skip(1) // the preamble
        .take_while(|p| !p.starts_with("--")) // the closing delimiter and epilogue
        .map(|p| p.strip_prefix("\r\n").or(p.strip_prefix('\n')).unwrap_or(p))
        .collect();
    let part_type = |p: &str| {
        let headers = parse_headers(split_head_body(p).0);
        header_of(&headers, "Content-Type")
            .unwrap_or("text/plain")
            .to_ascii_lowercase()
    };
    let plain: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| {
            let t = part_type(p);
            t.starts_with("text/plain") || t.starts_with("multipart/")
        })
        .collect();
    let chosen = if plain.is_empty() {
        parts
            .iter()
            .copied()
            .filter(|p| part_type(p).starts_with("text/"))
            .collect()
    } else {
        plain
    };
    chosen
        .into_iter()
        .map(mime_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) in a header value.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = rest[start + 2..]
            .split_once('?')
            .and_then(|(_charset, tail)| {
                let (enc, tail) = tail.split_once('?')?;
                let end = tail.find("?=")?;
                let text = &tail[..end];
                let bytes = match enc.to_ascii_lowercase().as_str() {
                    "b" => decode_base64_lenient(text),
                    "q" => decode_quoted_printable(&text.replace('_', " ")),
                    _ => return None,
                };
                let consumed = start + 2 + (rest[start + 2..].len() - tail.len()) + end + 2;
                Some((String::from_utf8_lossy(&bytes).into_owned(), consumed))
            });
        match decoded {
            Some((text, consumed)) => {
                let between = &rest[..start];
                // Whitespace between two adjacent encoded words is not part of the text.
                if !(last_was_word && between.trim().is_empty()) {
                    out.push_str(between);
                }
                out.push_str(&text);
                rest = &rest[consumed..];
                last_was_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Twilio mock
// ---------------------------------------------------------------------------------------

/// Credentials the harness gives the server; `Sms::auth_ok` compares against them.
pub const TWILIO_SID: &str = "ACtest";
pub const TWILIO_TOKEN: &str = "test-token";
pub const TWILIO_PHONE: &str = "+15550000000";

/// One message posted to the Twilio mock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    /// The account SID from the URL path.
    pub sid: String,
    /// Whether HTTP basic auth was exactly `ACtest:test-token`.
    pub auth_ok: bool,
    pub to: String,
    pub from: String,
    pub body: String,
}

struct TwilioShared {
    messages: Mutex<Vec<Sms>>,
}

/// A stand-in for Twilio's Messages API on 127.0.0.1. It records every
/// `POST /2010-04-01/Accounts/{sid}/Messages.json` and always answers 201 (whatever the
/// credentials: check `Sms::auth_ok`). Cheap to clone.
#[derive(Clone)]
pub struct TwilioMock {
    port: u16,
    shared: Arc<TwilioShared>,
    _task: Arc<TaskGuard>,
}

fn basic_auth_ok(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map(|raw| raw == format!("{TWILIO_SID}:{TWILIO_TOKEN}").as_bytes())
        .unwrap_or(false)
}

async fn twilio_create_message(
    axum::extract::State(shared): axum::extract::State<Arc<TwilioShared>>,
    axum::extract::Path(sid): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let sms = Sms {
        sid: sid.clone(),
        auth_ok: basic_auth_ok(&headers),
        to: field("To"),
        from: field("From"),
        body: field("Body"),
    };
    let message_sid = {
        let mut messages = lock(&shared.messages);
        messages.push(sms.clone());
        format!("SM{:032x}", messages.len())
    };
    let now = "Thu, 01 Jan 2026 00:00:00 +0000";
    let reply = json!({
        "sid": message_sid,
        "account_sid": sid,
        "to": sms.to,
        "from": sms.from,
        "body": sms.body,
        "status": "queued",
        "num_segments": "1",
        "num_media": "0",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "price": null,
        "price_unit": "USD",
        "error_code": null,
        "error_message": null,
        "date_created": now,
        "date_updated": now,
        "date_sent": null,
        "uri": format!("/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json"),
    });
    (axum::http::StatusCode::CREATED, axum::Json(reply))
}

impl TwilioMock {
    /// Binds 127.0.0.1:0 and starts serving in the background.
    pub fn start() -> TwilioMock {
        let listener = bind_loopback();
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(TwilioShared {
            messages: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                axum::routing::post(twilio_create_message),
            )
            .with_state(shared.clone());
        let handle = mock_runtime().spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("register Twilio listener");
            let _ = axum::serve(listener, app).await;
        });
        TwilioMock {
            port,
            shared,
            _task: Arc::new(TaskGuard(handle.abort_handle())),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the value for TWILIO_API_BASE.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<Sms> {
        lock(&self.shared.messages).clone()
    }

    /// The messages received so far whose `To` is exactly `to`.
    pub fn messages_to(&self, to: &str) -> Vec<Sms> {
        lock(&self.shared.messages)
            .iter()
            .filter(|m| m.to == to)
            .cloned()
            .collect()
    }

    /// Forgets every message received so far.
    pub fn clear(&self) {
        lock(&self.shared.messages).clear();
    }

    /// Waits until at least `n` messages to `to` have arrived and returns all of them;
    /// panics, listing what did arrive, after `timeout`.
    pub async fn wait_for(&self, to: &str, n: usize, timeout: Duration) -> Vec<Sms> {
        let found = poll_until(timeout, || {
            let messages = self.messages_to(to);
            (messages.len() >= n).then_some(messages)
        })
        .await;
        match found {
            Some(messages) => messages,
            None => {
                let got: Vec<_> = self.messages().into_iter().map(|m| m.to).collect();
                panic!(
                    "Twilio mock: expected {n} message(s) to {to} within {timeout:?}, got {}; \
                     recipients of everything received: {got:?}",
                    self.messages_to(to).len()
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// The first run of exactly six ASCII digits with no digit on either side.
/// Panics, showing `text`, when there is none.
pub fn extract_code(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return text[start..i].to_string();
            }
        } else {
            i += 1;
        }
    }
    panic!("no 6-digit code in:\n{text}")
}

/// The whole `Set-Cookie` header that sets cookie `name`, if the response has one.
pub fn set_cookie_header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| {
            v.split(';')
                .next()
                .and_then(|pair| pair.split_once('='))
                .is_some_and(|(k, _)| k.trim() == name)
        })
        .map(str::to_string)
}

/// The value the response's `Set-Cookie` gives cookie `name` (attributes stripped).
pub fn cookie_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    let header = set_cookie_header(resp, name)?;
    let pair = header.split(';').next()?;
    let (_, value) = pair.split_once('=')?;
    Some(value.trim().trim_matches('"').to_string())
}

/// The value of the `session` cookie the response sets, if any.
pub fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    cookie_value(resp, "session").or_else(|| cookie_value(resp, "__Host-session"))
}

/// Status and body. An empty body is `Value::Null`; a body that is not JSON comes back
/// as `Value::String` holding its text, so an assertion message can show it.
pub async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("read the response body");
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return (status, Value::Null);
    }
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// Removes ANSI escape sequences (colours) from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The text after the last `max` bytes boundary of `s`, on a char boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// ---------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------

const RATE_LIMIT_VARS: [&str; 14] = [
    "RATE_FORGOT_PER_ACCOUNT",
    "RATE_FORGOT_PER_IP",
    "RATE_CODES_PER_ACCOUNT",
    "RATE_VALIDATE_PER_ACCOUNT",
    "RATE_VALIDATE_PER_IP",
    "RATE_LOGIN_PER_ACCOUNT",
    "RATE_LOGIN_PER_ACCOUNT_LONG",
    "RATE_LOGIN_PER_IP",
    "RATE_REGISTER_PER_IP",
    "RATE_RESET_PER_IP",
    "RATE_CODE_FAILURES_PER_ACCOUNT",
    "SMS_BUDGET_PER_HOUR",
    "SMS_BUDGET_PER_DAY",
    "SMS_BUDGET_PER_PREFIX",
];

/// Variables passed through from the test's own environment; everything else is cleared
/// so nothing stray (DATABASE_URL, SMTP_URL, EMAIL_USER, SECRET_KEY, proxies…) leaks in.
const PASSTHROUGH_VARS: [&str; 5] = [
    "PATH",
    "HOME",
    "TMPDIR",
    "RUST_BACKTRACE",
    "LLVM_PROFILE_FILE",
];

/// A running `gatehouse serve` with its own database, SMTP sink and Twilio mock.
/// Dropping it kills the process (and waits for it) before the temporary directory goes.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT` of the operations listener, when it is on.
    pub admin_addr: Option<String>,
    /// No cookie store, no redirects followed, no proxy, 30 s timeout.
    pub client: reqwest::Client,
    pub smtp: SmtpSink,
    pub twilio: TwilioMock,
    env: Vec<(String, String)>,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    readers: Vec<JoinHandle<()>>,
    logs: Arc<Mutex<String>>,
    /// Declared last so it is removed after the process is gone.
    /// Dropped after the process is killed, then the directory.
    database: db::TestDatabase,
    dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts the server with the harness defaults.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// Starts the server with the defaults, each overridden by `overrides` (later wins).
    /// Panics with the server's output if it exits or does not listen within 30 s.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        match TestApp::try_spawn(overrides, &[]).await {
            Ok(app) => app,
            Err(output) => panic!("gatehouse did not start:\n{output}"),
        }
    }

    /// Like `spawn_with`, and also leaves the variables in `unset` out altogether.
    /// Returns the server's output as the error if it exits or does not listen within
    /// 30 s, for tests of start-up validation.
    pub async fn try_spawn(overrides: &[(&str, &str)], unset: &[&str]) -> Result<TestApp, String> {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-test-")
            .tempdir()
            .expect("create a temporary directory");
        let smtp = SmtpSink::start();
        let twilio = TwilioMock::start();
        let database = db::TestDatabase::create(dir.path());

        let mut env: Vec<(String, String)> = vec![
            ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
            ("ADMIN_LISTEN_ADDR".into(), "127.0.0.1:0".into()),
            ("DATABASE_URL".into(), database.url.clone()),
            ("COOKIE_SECURE".into(), "false".into()),
            ("ARGON2_MEMORY_KIB".into(), "1024".into()),
            ("ARGON2_ITERATIONS".into(), "1".into()),
            ("ARGON2_PARALLELISM".into(), "1".into()),
            ("SMTP_URL".into(), smtp.url()),
            ("EMAIL_FROM".into(), "gatehouse@test.invalid".into()),
            ("TWILIO_SID".into(), TWILIO_SID.into()),
            ("TWILIO_TOKEN".into(), TWILIO_TOKEN.into()),
            ("TWILIO_PHONE".into(), TWILIO_PHONE.into()),
            ("TWILIO_API_BASE".into(), twilio.base_url()),
            ("OUTBOX_POLL_INTERVAL".into(), "100ms".into()),
            ("OUTBOX_RETRY_BASE".into(), "100ms".into()),
            ("RUST_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        env.extend(
            RATE_LIMIT_VARS
                .iter()
                .map(|k| (k.to_string(), "100000/1m".to_string())),
        );
        // Likewise every test client is 127.0.0.1, and some hold hundreds of connections.
        env.push(("MAX_CONNECTIONS_PER_IP".into(), "0".into()));
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), value.to_string()));
        }
        env.retain(|(k, _)| !unset.contains(&k.as_str()));

        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build the HTTP client");

        let mut app = TestApp {
            addr: String::new(),
            admin_addr: None,
            client,
            smtp,
            twilio,
            env,
            child: None,
            exit: None,
            readers: Vec::new(),
            logs: Arc::new(Mutex::new(String::new())),
            database,
            dir,
        };
        app.start_process().await?;
        Ok(app)
    }

    /// Starts the binary with `self.env` and waits for its "listening on" line.
    async fn start_process(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        cmd.arg("serve")
            .current_dir(self.dir.path()) // so no `.env` is found
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for key in PASSTHROUGH_VARS {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        // Belt and braces (env_clear already dropped them); an override still sets them.
        for key in ["EMAIL_USER", "EMAIL_PASS", "SECRET_KEY", "REDIS_URL"] {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));

        let start = lock(&self.logs).len();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", env!("CARGO_BIN_EXE_gatehouse")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        self.readers = vec![
            spawn_reader(stdout, self.logs.clone()),
            spawn_reader(stderr, self.logs.clone()),
        ];
        self.child = Some(child);
        self.exit = None;

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let (found, admin) = {
                let logs = lock(&self.logs);
                (
                    parse_after(&logs[start..], LISTENING_MARKER),
                    parse_after(&logs[start..], OPERATIONS_MARKER),
                )
            };
            let admin_off = self
                .env_value("ADMIN_LISTEN_ADDR")
                .is_none_or(|v| v.eq_ignore_ascii_case("off") || v.is_empty());
            if let Some(addr) = found.filter(|_| admin.is_some() || admin_off) {
                self.addr = format!("http://{addr}");
                self.admin_addr = admin.map(|a| format!("http://{a}"));
                return Ok(());
            }
            if let Some(status) = self.try_wait() {
                self.join_readers(Duration::from_secs(5));
                return Err(format!(
                    "gatehouse exited ({status}) before listening; output:\n{}",
                    &lock(&self.logs)[start..]
                ));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "gatehouse did not log `{LISTENING_MARKER}` within {:?}; output:\n{}",
                    STARTUP_TIMEOUT,
                    &lock(&self.logs)[start..]
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills the process if it is running and starts it again with the same settings,
    /// database, mocks and log buffer (a new port, unless LISTEN_ADDR pins one).
    pub async fn restart(&mut self) {
        self.kill();
        lock(&self.logs).push_str("\n----- gatehouse restarted by the test harness -----\n");
        if let Err(output) = self.start_process().await {
            panic!("gatehouse did not restart:\n{output}");
        }
    }

    /// `restart`, with `overrides` applied to the settings first (later wins), e.g. to
    /// raise `ARGON2_ITERATIONS` over a database hashed under the old value.
    pub async fn restart_with(&mut self, overrides: &[(&str, &str)]) {
        for (key, value) in overrides {
            self.env.retain(|(k, _)| k != key);
            self.env.push((key.to_string(), value.to_string()));
        }
        self.restart().await;
    }

    /// Non-blocking check whether the process has exited; remembers the status.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exit = child.try_wait().ok().flatten();
            }
        }
        self.exit
    }

    /// Waits (bounded) for the output reader threads to see end of file.
    fn join_readers(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.readers.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for handle in std::mem::take(&mut self.readers) {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// The exit status, once the process has exited (None while it runs).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.try_wait()
    }

    /// SIGKILLs the process (only the child this harness started, by its handle), reaps
    /// it, and lets the output readers drain. Does nothing if it already exited.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = child.kill();
                self.exit = child.wait().ok();
            }
        }
        self.join_readers(Duration::from_secs(5));
    }

    /// The server process's id while it runs (for signals sent from another task; the
    /// process stays our unreaped child, so the id cannot be reused meanwhile).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM to the process (by its pid, while it is still our unreaped child)
    /// for graceful-shutdown tests; follow with `wait_exit`.
    pub fn terminate(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        if let Some(child) = self.child.as_ref() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "could not send SIGTERM to gatehouse"
            );
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or None if it
    /// is still running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.join_readers(Duration::from_secs(5));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The DATABASE_URL the server was given.
    pub fn db_url(&self) -> String {
        self.env_value("DATABASE_URL").unwrap_or_default()
    }

    /// The value the harness gave the server for an environment variable.
    pub fn env_value(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The temporary directory the server runs in (its working directory).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything the process has written to stdout and stderr so far (ANSI colours
    /// removed; lines from the two streams interleaved as they were read).
    pub fn logs(&self) -> String {
        lock(&self.logs).clone()
    }

    /// Waits until the logs contain `needle`; panics with the logs after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let found = poll_until(timeout, || lock(&self.logs).contains(needle).then_some(())).await;
        if found.is_none() {
            panic!(
                "`{needle}` did not appear in the logs within {timeout:?}; logs:\n{}",
                self.logs()
            );
        }
    }

    // ----- HTTP -----

    /// The absolute URL for `path` (which starts with `/`).
    /// GET `path` on the operations listener (`/metrics`, the detailed `/readyz`).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        let base = self
            .admin_addr
            .as_deref()
            .expect("the operations listener is on (ADMIN_LISTEN_ADDR)");
        self.client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the operations listener: {e}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.addr, path)
    }

    /// A request builder on the harness client, for anything the helpers don't cover.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends `req`; panics (with the server's recent output) if no response came back.
    pub async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> reqwest::Response {
        match req.send().await {
            Ok(resp) => resp,
            Err(e) => panic!(
                "{what}: request failed: {e:?}\n----- gatehouse output (tail) -----\n{}",
                tail(&self.logs(), 20_000)
            ),
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        let req = self.request(reqwest::Method::POST, path).json(body);
        self.send(req, &format!("POST {path}")).await
    }

    /// POST with an arbitrary body and, if given, Content-Type (for malformed-input tests).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self.request(reqwest::Method::POST, path).body(body);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send(req, &format!("POST {path}")).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut req = self.request(reqwest::Method::GET, path);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        self.send(req, &format!("GET {path}")).await
    }

    /// POST /register; `phone: None` leaves the field out.
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        phone: Option<&str>,
        password: &str,
    ) -> reqwest::Response {
        let mut body = json!({ "username": username, "email": email, "password": password });
        if let Some(phone) = phone {
            body["phone"] = json!(phone);
        }
        self.post_json("/register", &body).await
    }

    pub async fn login(&self, identifier: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/login",
            &json!({ "identifier": identifier, "password": password }),
        )
        .await
    }

    /// GET /me with `Authorization: Bearer <token>`.
    pub async fn me(&self, token: &str) -> reqwest::Response {
        self.get("/me", Some(token)).await
    }

    /// POST /logout with `Authorization: Bearer <token>` and no body.
    pub async fn logout(&self, token: &str) -> reqwest::Response {
        let req = self
            .request(reqwest::Method::POST, "/logout")
            .bearer_auth(token);
        self.send(req, "POST /logout").await
    }

    pub async fn forgot(&self, identifier: &str) -> reqwest::Response {
        self.post_json("/forgot-password", &json!({ "identifier": identifier }))
            .await
    }

    /// POST /forgot-password with a `channel` ("email" or "sms").
    pub async fn forgot_via(&self, identifier: &str, channel: &str) -> reqwest::Response {
        self.post_json(
            "/forgot-password",
            &json!({ "identifier": identifier, "channel": channel }),
        )
        .await
    }

    pub async fn validate(&self, identifier: &str, otp: &str) -> reqwest::Response {
        self.post_json(
            "/validate-otp",
            &json!({ "identifier": identifier, "otp": otp }),
        )
        .await
    }

    /// POST /reset-password; `reset_token: None` leaves the field out.
    pub async fn reset(
        &self,
        identifier: &str,
        new_password: &str,
        reset_token: Option<&str>,
    ) -> reqwest::Response {
        let mut body = json!({ "identifier": identifier, "new_password": new_password });
        if let Some(token) = reset_token {
            body["reset_token"] = json!(token);
        }
        self.post_json("/reset-password", &body).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = child.kill();
                self.exit = child.wait().ok();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- gatehouse output (tail) -----\n{}\n----- end of gatehouse output -----",
                tail(&lock(&self.logs), 30_000)
            );
        }
    }
}

/// Finds `listening on http://ADDR` and returns ADDR (host and port).
fn parse_after(logs: &str, marker: &str) -> Option<String> {
    let at = logs.find(marker)? + marker.len();
    let addr: String = logs[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-'))
        .collect();
    // Only a complete line is trusted, so a half-written port is never taken.
    let rest = &logs[at + addr.len()..];
    (rest.contains('\n') && addr.contains(':')).then_some(addr)
}

/// Copies one output stream of the child into `logs`, line by line, until end of file.
fn spawn_reader(stream: impl Read + Send + 'static, logs: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let mut text = strip_ansi(&String::from_utf8_lossy(&line));
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                    lock(&logs).push_str(&text);
                }
            }
        }
    })
}
