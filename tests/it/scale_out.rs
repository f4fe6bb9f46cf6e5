//! Scale-out: two server processes on one PostgreSQL database and one Redis must behave
//! as one server — shared rate limits, sessions, codes and outbox, TOTP steps and passkey
//! ceremonies — and an instance whose
//! Redis goes away keeps serving on local limits and returns to Redis when it is back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::db::TestDatabase;
use crate::common::{extract_code, json, session_cookie, TestApp, DELIVERY_TIMEOUT};
use rand::Rng;

const PASSWORD: &str = "correct horse battery";

fn redis_url() -> String {
    std::env::var("GATEHOUSE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn random_prefix() -> String {
    format!("gh-test-{:016x}:", rand::thread_rng().gen::<u64>())
}

/// Two instances sharing one fresh PostgreSQL database, one Redis (under a key prefix of
/// their own), one secret, one SMTP sink and one Twilio endpoint.
struct Pair {
    a: TestApp,
    b: TestApp,
    _db: TestDatabase,
    _dir: tempfile::TempDir,
}

async fn pair(extra: &[(&str, &str)]) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create_on("postgres", dir.path());
    let prefix = random_prefix();
    let redis = redis_url();
    let mut shared = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    shared.extend_from_slice(extra);
    let a = TestApp::spawn_with(&shared).await;
    let smtp = a.smtp.url();
    let twilio = a.twilio.base_url();
    let mut with_a_providers = shared.clone();
    with_a_providers.push(("SMTP_URL", &smtp));
    with_a_providers.push(("TWILIO_API_BASE", &twilio));
    let b = TestApp::spawn_with(&with_a_providers).await;
    Pair {
        a,
        b,
        _db: db,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_fourth_forgot_password_is_refused_even_on_the_other_instance() {
    let p = pair(&[("RATE_FORGOT_PER_ACCOUNT", "3/1m")]).await;
    assert_eq!(
        p.a.register("alice", "alice@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    for _ in 0..3 {
        assert_eq!(p.a.forgot("alice").await.status(), 200);
    }
    let resp = p.b.forgot("alice").await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // The same for an identifier that does not exist.
    for _ in 0..3 {
        assert_eq!(p.b.forgot("ghost").await.status(), 200);
    }
    assert_eq!(p.a.forgot("ghost").await.status(), 429);
}

#[tokio::test]
async fn a_session_from_one_instance_works_on_the_other_and_logout_kills_it_on_both() {
    let p = pair(&[]).await;
    assert_eq!(
        p.a.register("bob", "bob@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    let resp = p.a.login("bob", PASSWORD).await;
    let token = session_cookie(&resp).unwrap();
    assert_eq!(p.b.me(&token).await.status(), 200);
    assert_eq!(p.b.logout(&token).await.status(), 200);
    assert_eq!(p.a.me(&token).await.status(), 401);
    assert_eq!(p.b.me(&token).await.status(), 401);
}

#[tokio::test]
async fn a_code_from_one_instance_validates_on_the_other_exactly_once() {
    let p = pair(&[]).await;
    assert_eq!(
        p.a.register("carol", "carol@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    assert_eq!(p.a.forgot("carol").await.status(), 200);
    let mail =
        p.a.smtp
            .wait_for("carol@example.com", 1, DELIVERY_TIMEOUT)
            .await;
    let code = extract_code(&mail[0].text());
    let (status, body) = json(p.b.validate("carol", &code).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(p.a.validate("carol", &code).await.status(), 400);
    assert_eq!(p.b.validate("carol", &code).await.status(), 400);
}

#[tokio::test]
async fn each_message_is_delivered_once_although_both_workers_run() {
    let p = pair(&[]).await;
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        let app = if i % 2 == 0 { &p.a } else { &p.b };
        let email = format!("{u}@example.com");
        assert_eq!(app.register(u, &email, None, PASSWORD).await.status(), 201);
    }
    // Both instances queue; both workers race for every message.
    let requests = users.iter().enumerate().map(|(i, u)| {
        let app = if i % 2 == 0 { &p.a } else { &p.b };
        async move { app.forgot(u).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for u in &users {
        p.a.smtp
            .wait_for(&format!("{u}@example.com"), 1, DELIVERY_TIMEOUT)
            .await;
    }
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for u in &users {
        let n = p.a.smtp.messages_to(&format!("{u}@example.com")).len();
        assert_eq!(n, 1, "{u} got {n} messages");
    }
    assert!(p.b.smtp.messages().is_empty(), "b's own sink is unused");
}

/// A Redis server of this test's own, on a free port, that the test can stop and start.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/services.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRedis {
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn rate_limit_status(app: &TestApp) -> String {
    let (status, body) = json(app.admin_get("/readyz").await).await;
    assert_eq!(status, 200, "{body}");
    body["checks"]["rate_limits"]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_instance_keeps_serving_when_redis_goes_away_and_returns_to_it() {
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let app =
        TestApp::spawn_with(&[("REDIS_URL", &url), ("RATE_FORGOT_PER_ACCOUNT", "3/1m")]).await;
    assert_eq!(
        app.register("dave", "dave@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    assert_eq!(app.forgot("dave").await.status(), 200);
    assert_eq!(rate_limit_status(&app).await, "ok");

    redis.stop();
    // Requests keep succeeding, quickly, on the local limiter.
    let started = Instant::now();
    assert_eq!(app.login("dave", PASSWORD).await.status(), 200);
    assert_eq!(app.forgot("erin").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rate_limit_status(&app).await, "degraded");
    // Limits still apply, locally.
    for _ in 0..3 {
        app.forgot("frank").await;
    }
    assert_eq!(app.forgot("frank").await.status(), 429);
    assert!(app.logs().contains("Redis unreachable"));

    let _redis = OwnRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        app.forgot("grace").await; // any check may bring Redis back
        if rate_limit_status(&app).await == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "never returned to Redis");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(app.logs().contains("Redis is reachable again"));
}

/// The code of TOTP time step `step` for the base32 `secret`.
fn totp_code(secret: &str, step: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("a base32 secret");
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some("x".into()),
        "x".into(),
    )
    .expect("a valid TOTP")
    .generate(step * 30)
}

/// `POST path` with the bearer `token` and a JSON body: status and body.
async fn authed_post(
    app: &TestApp,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let req = app
        .request(reqwest::Method::POST, path)
        .bearer_auth(token)
        .json(&body);
    json(app.send(req, path).await).await
}

/// Logs in on `app` with the password: the `mfa_token` of the 401 that asks for the second
/// factor.
async fn mfa_token(app: &TestApp, identifier: &str) -> String {
    let (status, body) = json(app.login(identifier, PASSWORD).await).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    body["mfa_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_totp_code_used_on_one_instance_is_refused_on_the_other() {
    let p = pair(&[]).await;
    assert_eq!(
        p.a.register("alice", "alice@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    let session = session_cookie(&p.a.login("alice", PASSWORD).await).unwrap();
    let (status, setup) =
        authed_post(&p.a, "/mfa/totp/setup", &session, serde_json::json!({})).await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let step = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30;
    let (status, body) = authed_post(
        &p.b,
        "/mfa/totp/confirm",
        &session,
        serde_json::json!({"otp": totp_code(&secret, step)}),
    )
    .await;
    assert_eq!(
        status, 200,
        "enrolment started on a, confirmed on b: {body}"
    );

    // Two sign-ins waiting for their second factor, one on each instance; the next step's
    // code (one step of skew) works once, on whichever instance is first.
    let on_a = mfa_token(&p.a, "alice").await;
    let on_b = mfa_token(&p.b, "alice").await;
    let code = totp_code(&secret, step + 1);
    let mfa = |token: &str| serde_json::json!({"mfa_token": token, "method": "totp", "code": code});
    let (status, body) = json(p.a.post_json("/login/mfa", &mfa(&on_a)).await).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = json(p.b.post_json("/login/mfa", &mfa(&on_b)).await).await;
    assert_eq!(
        (status, body),
        (
            401,
            serde_json::json!({"error": "Invalid code", "code": "invalid_second_factor"})
        )
    );
}

#[tokio::test]
async fn a_passkey_ceremony_started_on_one_instance_finishes_on_the_other_once() {
    use crate::common::authenticator;
    let p = pair(&[]).await;
    assert_eq!(
        p.a.register("alice", "alice@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    let session = session_cookie(&p.a.login("alice", PASSWORD).await).unwrap();
    let (status, options) = authed_post(
        &p.a,
        "/passkeys/register/start",
        &session,
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{options}");
    let (credential, key) = authenticator::create(&options);
    let finish = serde_json::json!({"credential": credential, "name": "Laptop"});
    let (status, body) =
        authed_post(&p.b, "/passkeys/register/finish", &session, finish.clone()).await;
    assert_eq!(status, 201, "{body}");
    // Replayed on the other instance it adds nothing (this aal1 session now meets
    // step-up first, since the account has a factor: 403 or 401, never a second passkey).
    let (status, _) = authed_post(&p.a, "/passkeys/register/finish", &session, finish).await;
    assert!(status == 401 || status == 403, "{status}");
    let req =
        p.a.request(reqwest::Method::GET, "/passkeys")
            .bearer_auth(&session);
    let (status, listed) = json(p.a.send(req, "GET /passkeys").await).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["passkeys"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // Passwordless: options from b, the assertion to a; replayed to b, refused.
    let (status, options) = json(
        p.b.post_json("/passkeys/login/start", &serde_json::json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{options}");
    let assertion = serde_json::json!({"credential": authenticator::get(&options, &key)});
    let resp = p.a.post_json("/passkeys/login/finish", &assertion).await;
    assert_eq!(resp.status(), 200);
    assert!(session_cookie(&resp).is_some());
    let (status, body) = json(p.b.post_json("/passkeys/login/finish", &assertion).await).await;
    assert_eq!(
        (status, body),
        (
            401,
            serde_json::json!({"error": "Invalid code", "code": "invalid_second_factor"})
        )
    );
}
