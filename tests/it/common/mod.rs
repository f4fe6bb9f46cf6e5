//! Shared harness for black-box tests: starts the real `gatehouse serve` binary against a
//! fresh database in a temporary directory, with a local SMTP sink (`smtp`) and a Twilio
//! mock (`twilio`, wiremock) standing in for the outside world, and talks HTTP to it.
//!
//! The mocks answer from threads of their own, so they keep answering whatever runtime
//! flavour a test uses and even while a test thread blocks. Everything listens on
//! 127.0.0.1 only, and every wait is bounded.

#![allow(dead_code)]

pub mod authenticator;
pub mod db;
pub mod seed;
mod smtp;
mod twilio;

pub use smtp::SmtpSink;
pub use twilio::{TwilioMock, TWILIO_PHONE, TWILIO_SID, TWILIO_TOKEN};

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long `TestApp::spawn` waits for the "listening on" line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A sensible default for `wait_for` calls on the mocks.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(20);
const LISTENING_MARKER: &str = "listening on http://";
/// The operations listener's line (`ADMIN_LISTEN_ADDR`: `/metrics`, the detailed `/readyz`).
const OPERATIONS_MARKER: &str = "operations endpoints (/metrics, /readyz) on http://";

// ---------------------------------------------------------------------------------------
// Background runtime for the SMTP sink
// ---------------------------------------------------------------------------------------

/// One runtime, shared by every SMTP sink in this test process and never shut down.
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

/// Binds 127.0.0.1:`port` (0: any) synchronously, so the port is known before anything
/// is spawned.
fn bind_loopback(port: u16) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
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

/// `method path` with `Authorization: Bearer <token>` and, if given, a JSON body.
pub async fn authed(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let what = format!("{method} {path}");
    let mut req = app.request(method, path).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    app.send(req, &what).await
}

/// `authed`, answered: status and body.
pub async fn authed_json(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    json(authed(app, method, path, token, body).await).await
}

/// GET /me, asserting a 200.
pub async fn me(app: &TestApp, token: &str) -> Value {
    let (status, body) = json(app.me(token).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `gatehouse ARGS` against the app's database, with cheap hashing: its output.
pub fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    cli_with_stdin(app, args, None)
}

/// `cli`, with `stdin` (if any) written to the command's standard input, then closed.
pub fn cli_with_stdin(app: &TestApp, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.db_url())
        .env("ARGON2_MEMORY_KIB", "1024")
        .env("ARGON2_ITERATIONS", "1")
        .current_dir(app.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gatehouse");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("write to gatehouse");
    }
    drop(input);
    child.wait_with_output().expect("gatehouse output")
}

/// `cli`, asserting success; its standard output.
pub fn cli_ok(app: &TestApp, args: &[&str]) -> String {
    let out = cli(app, args);
    assert!(
        out.status.success(),
        "gatehouse {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of the audit events `gatehouse audit --user <identifier> --json` prints.
pub fn audit_events(app: &TestApp, identifier: &str) -> Vec<String> {
    let out = cli_ok(app, &["audit", "--user", identifier, "--json"]);
    let events: Value = serde_json::from_str(&out).expect("JSON output");
    events
        .as_array()
        .expect("an array of events")
        .iter()
        .map(|e| e["event"].as_str().expect("an event name").to_owned())
        .collect()
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

const RATE_LIMIT_VARS: [&str; 24] = [
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
    "RATE_SEND_VERIFICATION_PER_ACCOUNT",
    "RATE_SEND_VERIFICATION_PER_IP",
    "RATE_VERIFY_PER_ACCOUNT",
    "RATE_VERIFY_PER_IP",
    "RATE_ACCOUNT_PER_USER",
    "RATE_ACCOUNT_PER_IP",
    "RATE_MFA_PER_ACCOUNT",
    "RATE_MFA_PER_IP",
    "RATE_LOGIN_CODE_PER_ACCOUNT",
    "RATE_LOGIN_CODE_PER_IP",
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
        let twilio = TwilioMock::start().await;
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
