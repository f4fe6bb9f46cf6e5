//! The router and its middleware in process: `gatehouse::startup::app()` driven with
//! `tower::ServiceExt::oneshot`, no socket and no server process, over a fresh SQLite
//! file. What it covers needs no provider and no second request to be interesting: the
//! JSON extractor's rejections, the JSON 404/405, the security headers on every answer,
//! and request ids. Each test takes milliseconds; the black-box suites cover the flows.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request};
use clap::Parser;
use gatehouse::auth::keys::Keys;
use gatehouse::auth::password::PasswordHasher;
use gatehouse::cli::{Cli, Command};
use gatehouse::limit::memory::MemoryLimiter;
use gatehouse::state::{now, AppState, BACKGROUND_SLOTS};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// `app()` over its own temporary SQLite database (kept as long as this lives).
struct InProcess {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

/// One answer: status, headers, and the body as JSON (`Value::Null` when empty).
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl InProcess {
    /// The settings `gatehouse serve` would read from these flags (cheap argon2, HTTP
    /// cookies unless `cookie_secure`), and the state `Application::build` makes from
    /// them, minus the listeners and the outbox worker.
    async fn start(cookie_secure: bool) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
        let secure = cookie_secure.to_string();
        let cli = Cli::try_parse_from([
            "gatehouse",
            "serve",
            "--database-url",
            &database,
            "--cookie-secure",
            &secure,
            "--argon2-memory-kib",
            "1024",
            "--argon2-iterations",
            "1",
            "--admin-listen-addr",
            "off",
        ])
        .unwrap();
        let Command::Serve(settings) = cli.command else {
            unreachable!("parsed a serve command")
        };
        let webauthn = Arc::new(
            gatehouse::auth::passkey::relying_party(&settings.factors, &settings.public_url)
                .unwrap(),
        );
        let state = AppState {
            store: gatehouse::store::connect(&settings.database).await.unwrap(),
            hasher: Arc::new(PasswordHasher::new(&settings.hashing).unwrap()),
            keys: Arc::new(Keys::from_secret("in-process tests: a secret of 32+ chars").unwrap()),
            limiter: Arc::new(MemoryLimiter::default()),
            settings: Arc::new(*settings),
            outbox_wake: Arc::default(),
            outbox_heartbeat: Arc::new(AtomicI64::new(now())),
            background: Default::default(),
            background_slots: Arc::new(tokio::sync::Semaphore::new(BACKGROUND_SLOTS)),
            webauthn,
        };
        InProcess {
            router: gatehouse::startup::app(state),
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&bytes)))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// POST `path` with `body` as it is, declared as `content_type` when given.
    async fn post(&self, path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Answer {
        let mut request = Request::post(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    async fn post_json(&self, path: &str, body: &str) -> Answer {
        self.post(path, Some("application/json"), body.to_owned())
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }
}

impl Answer {
    /// Asserts the status and the exact `{"error": …, "code": …}` body.
    fn is_error(&self, status: u16, code: &str, message: &str) {
        assert_eq!(
            (self.status, &self.body),
            (status, &json!({ "error": message, "code": code })),
        );
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_a_415() {
    let app = InProcess::start(false).await;
    let body = r#"{"identifier":"a","password":"b"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        app.post("/login", content_type, body).await.is_error(
            415,
            "unsupported_media_type",
            "Content-Type must be application/json",
        );
    }
    // Parameters and +json types are JSON too: these get past the media type.
    for content_type in [
        "application/json; charset=utf-8",
        "application/problem+json",
    ] {
        let answer = app.post("/login", Some(content_type), "[]").await;
        answer.is_error(400, "bad_request", "The request body must be a JSON object");
    }
}

#[tokio::test]
async fn malformed_json_is_a_400_that_says_so() {
    let app = InProcess::start(false).await;
    app.post_json("/login", "").await.is_error(
        400,
        "bad_request",
        "Malformed JSON: the body is empty",
    );
    app.post_json("/login", "[1, 2]").await.is_error(
        400,
        "bad_request",
        "The request body must be a JSON object",
    );
    for bad in [
        "{not json",
        r#"{"identifier": "a", "password": "b"} trailing"#,
        r#"{"identifier": "a", "identifier": "b", "password": "c"}"#,
    ] {
        let answer = app.post_json("/login", bad).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        let error = answer.body["error"].as_str().unwrap();
        assert!(error.starts_with("Malformed JSON: "), "{bad}: {error}");
    }
}

#[tokio::test]
async fn a_missing_field_is_a_400_naming_it() {
    let app = InProcess::start(false).await;
    app.post_json("/login", r#"{"identifier": "alice"}"#)
        .await
        .is_error(400, "bad_request", "Missing field: password");
    app.post_json("/register", r#"{"username": "alice", "password": "x"}"#)
        .await
        .is_error(400, "bad_request", "Missing field: email");
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_a_422_naming_it() {
    let app = InProcess::start(false).await;
    let answer = app
        .post_json("/login", r#"{"identifier": "alice", "password": 12345}"#)
        .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    let error = answer.body["error"].as_str().unwrap();
    assert!(error.starts_with("password: invalid type"), "{error}");
}

#[tokio::test]
async fn a_body_over_16_kib_is_a_413_whether_declared_or_not() {
    let app = InProcess::start(false).await;
    let limit = "Request body is too large (limit 16384 bytes)";
    let big = format!(
        r#"{{"identifier": "{}", "password": "x"}}"#,
        "a".repeat(16 * 1024)
    );
    // No Content-Length: refused while reading.
    app.post_json("/login", &big)
        .await
        .is_error(413, "payload_too_large", limit);
    // A Content-Length over the limit: refused on the header alone.
    let request = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, (1u64 << 30).to_string())
        .body(Body::empty())
        .unwrap();
    app.send(request)
        .await
        .is_error(413, "payload_too_large", limit);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_404_and_405() {
    let app = InProcess::start(false).await;
    app.get("/nowhere")
        .await
        .is_error(404, "not_found", "Not found");
    app.post_json("/login/extra", "{}")
        .await
        .is_error(404, "not_found", "Not found");
    app.get("/login")
        .await
        .is_error(405, "method_not_allowed", "Method not allowed");
    app.post_json("/me", "{}")
        .await
        .is_error(405, "method_not_allowed", "Method not allowed");
    // A method HTTP does not define is refused before routing, with the same answer.
    let brew = Method::from_bytes(b"BREW").unwrap();
    let request = Request::builder()
        .method(brew)
        .uri("/login")
        .body(Body::empty())
        .unwrap();
    app.send(request)
        .await
        .is_error(405, "method_not_allowed", "Method not allowed");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = InProcess::start(false).await;
    let answers = [
        app.get("/healthz").await,
        app.get("/nowhere").await,
        app.get("/login").await,
        app.post("/login", None, "x").await,
        app.post_json("/login", "{").await,
    ];
    for answer in &answers {
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            answer.header("content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'")
        );
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        // Plain-HTTP cookies (COOKIE_SECURE=false): no HSTS.
        assert_eq!(answer.header("strict-transport-security"), None);
    }
    assert_eq!(answers[0].status, 200);
}

#[tokio::test]
async fn hsts_is_sent_when_cookies_are_secure() {
    let app = InProcess::start(true).await;
    for answer in [app.get("/healthz").await, app.get("/nowhere").await] {
        assert_eq!(
            answer.header("strict-transport-security"),
            Some("max-age=63072000; includeSubDomains")
        );
    }
}

#[tokio::test]
async fn a_well_formed_request_id_comes_back_and_any_other_is_replaced() {
    let app = InProcess::start(false).await;
    let with_ids = |ids: &[&str]| {
        let mut request = Request::get("/healthz");
        for id in ids {
            request = request.header("x-request-id", *id);
        }
        request.body(Body::empty()).unwrap()
    };
    let kept = app.send(with_ids(&["abc-123.X_y"])).await;
    assert_eq!(kept.header("x-request-id"), Some("abc-123.X_y"));

    let too_long = "a".repeat(65);
    let cases: [&[&str]; 5] = [
        &[],
        &["has space"],
        &["key=value"],
        &[too_long.as_str()],
        &["one", "two"],
    ];
    for ids in cases {
        let answer = app.send(with_ids(ids)).await;
        let minted: Vec<_> = answer.headers.get_all("x-request-id").iter().collect();
        assert_eq!(minted.len(), 1, "{ids:?}");
        let minted = minted[0].to_str().unwrap();
        assert!(
            is_uuid(minted),
            "{ids:?} should get a fresh UUID, got {minted:?}"
        );
    }
}

/// Whether `s` is a UUID in its hyphenated lower-case form (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}
