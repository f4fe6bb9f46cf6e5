//! Black-box tests of the public API: the real binary on a random port, a real SMTP
//! listener and a Twilio-speaking endpoint on loopback. Codes are read from what those
//! received, exactly as a user would read them.

use std::time::Duration;

use crate::common::{self, extract_code, json, session_cookie, TestApp, DELIVERY_TIMEOUT};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// Registers `name` with `name@example.com` and the given phone, asserting a 201.
async fn register(app: &TestApp, name: &str, phone: Option<&str>) -> String {
    let email = format!("{name}@example.com");
    let (status, body) = json(app.register(name, &email, phone, PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, json!({"message": "User registered successfully"}));
    email
}

async fn login_token(app: &TestApp, identifier: &str, password: &str) -> String {
    let resp = app.login(identifier, password).await;
    assert_eq!(resp.status(), 200);
    let token = session_cookie(&resp).expect("a session cookie");
    assert_eq!(json(resp).await.1, json!({"message": "Login successful"}));
    token
}

/// Asks for a code by email and returns it as delivered.
async fn code_by_email(app: &TestApp, identifier: &str, email: &str) -> String {
    let before = app.smtp.messages_to(email).len();
    let (status, body) = json(app.forgot(identifier).await).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "OTP sent successfully"}))
    );
    // The code's mail, not a notice that may arrive around it (after five wrong guesses
    // the owner is told someone is guessing).
    let deadline = std::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let mails = app.smtp.messages_to(email);
        if let Some(mail) = mails[before.min(mails.len())..]
            .iter()
            .find(|m| m.subject().contains("reset code"))
        {
            return extract_code(&mail.text());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no code mail to {email}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn reset_token(app: &TestApp, identifier: &str, code: &str) -> String {
    let (status, body) = json(app.validate(identifier, code).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "OTP verified. Proceed to reset password.");
    body["reset_token"]
        .as_str()
        .expect("reset_token")
        .to_owned()
}

/// The server's own database, opened the way the server opens it.
async fn open_store(app: &TestApp) -> std::sync::Arc<dyn gatehouse::store::Store> {
    gatehouse::store::connect(&gatehouse::config::DatabaseSettings {
        database_url: app.db_url(),
        database_max_connections: 2,
        database_read_connections: 2,
        database_timeout: Duration::from_secs(5),
    })
    .await
    .expect("open the test database")
}

fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

#[tokio::test]
async fn the_whole_recovery_flow_works_by_email() {
    let app = TestApp::spawn().await;
    let email = register(&app, "alice", Some("+14155550101")).await;
    let session = login_token(&app, "alice", PASSWORD).await;

    let (status, me) = json(app.me(&session).await).await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["email"], email);
    assert_eq!(me["phone"], "+14155550101");
    assert!(me["id"].is_i64() && me["created_at"].is_string(), "{me}");

    let code = code_by_email(&app, &email, &email).await;
    let token = reset_token(&app, &email, &code).await;
    let (status, body) = json(app.reset(&email, NEW_PASSWORD, Some(&token)).await).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Password reset successful"}))
    );

    assert_eq!(
        app.me(&session).await.status(),
        401,
        "old session must be dead"
    );
    assert_eq!(app.login("alice", PASSWORD).await.status(), 401);
    let fresh = login_token(&app, "alice", NEW_PASSWORD).await;
    assert_eq!(app.me(&fresh).await.status(), 200);

    // The user is told their password changed.
    let mails = app.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await;
    assert!(
        mails[1].subject().contains("password was changed"),
        "{}",
        mails[1].subject()
    );
}

#[tokio::test]
async fn the_whole_recovery_flow_works_by_sms() {
    let app = TestApp::spawn().await;
    register(&app, "bob", Some("+14155550102")).await;
    let session = login_token(&app, "+14155550102", PASSWORD).await;

    let (status, _) = json(app.forgot("+1 415 555 0102").await).await;
    assert_eq!(status, 200);
    let sms = app
        .twilio
        .wait_for("+14155550102", 1, DELIVERY_TIMEOUT)
        .await;
    assert!(sms[0].auth_ok, "Twilio basic auth must carry SID and token");
    assert_eq!(sms[0].from, common::TWILIO_PHONE);
    let code = extract_code(&sms[0].body);

    // The code is bound to the user: it validates with any of their identifiers.
    let token = reset_token(&app, "BOB", &code).await;
    let (status, _) = json(
        app.reset("bob@example.com", NEW_PASSWORD, Some(&token))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.me(&session).await.status(), 401);
    login_token(&app, "bob", NEW_PASSWORD).await;
}

#[tokio::test]
async fn channel_sms_sends_the_code_by_sms_for_an_email_identifier() {
    let app = TestApp::spawn().await;
    let email = register(&app, "carol", Some("+14155550103")).await;
    let (status, _) = json(app.forgot_via(&email, "sms").await).await;
    assert_eq!(status, 200);
    let sms = app
        .twilio
        .wait_for("+14155550103", 1, DELIVERY_TIMEOUT)
        .await;
    reset_token(&app, &email, &extract_code(&sms[0].body)).await;
    assert!(app.smtp.messages_to(&email).is_empty());
}

#[tokio::test]
async fn reset_without_a_token_is_refused() {
    let app = TestApp::spawn().await;
    let email = register(&app, "dave", None).await;
    let (status, body) = json(app.reset(&email, NEW_PASSWORD, None).await).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("reset token"),
        "{body}"
    );
    let (status, _) = json(app.reset(&email, NEW_PASSWORD, Some("forged-token")).await).await;
    assert_eq!(status, 401);
    // The password is unchanged.
    login_token(&app, &email, PASSWORD).await;
    assert_eq!(app.login(&email, NEW_PASSWORD).await.status(), 401);
}

#[tokio::test]
async fn a_reset_token_works_once() {
    let app = TestApp::spawn().await;
    let email = register(&app, "erin", None).await;
    let code = code_by_email(&app, "erin", &email).await;
    let token = reset_token(&app, "erin", &code).await;
    assert_eq!(
        app.reset("erin", NEW_PASSWORD, Some(&token)).await.status(),
        200
    );
    let (status, body) = json(
        app.reset("erin", "yet another passphrase", Some(&token))
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "Invalid or expired reset token", "code": "invalid_reset_token"})
        )
    );
    login_token(&app, "erin", NEW_PASSWORD).await;
}

#[tokio::test]
async fn a_reset_token_is_only_good_for_its_own_user() {
    let app = TestApp::spawn().await;
    let email = register(&app, "frank", None).await;
    register(&app, "grace", None).await;
    let code = code_by_email(&app, "frank", &email).await;
    let token = reset_token(&app, "frank", &code).await;
    assert_eq!(
        app.reset("grace", NEW_PASSWORD, Some(&token))
            .await
            .status(),
        401
    );
    login_token(&app, "grace", PASSWORD).await;
}

#[tokio::test]
async fn the_reset_token_cookie_from_validate_otp_is_accepted() {
    let app = TestApp::spawn().await;
    let email = register(&app, "heidi", None).await;
    let code = code_by_email(&app, "heidi", &email).await;
    let resp = app.validate("heidi", &code).await;
    let cookie = common::set_cookie_header(&resp, "reset_token").expect("reset_token cookie");
    assert!(cookie.contains("Path=/reset-password"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(cookie.contains("Max-Age=900"), "{cookie}");
    let value = common::cookie_value(&resp, "reset_token").unwrap();
    let resp = app
        .send(
            app.request(reqwest::Method::POST, "/reset-password")
                .header("cookie", format!("reset_token={value}"))
                .json(&json!({"identifier": "heidi", "new_password": NEW_PASSWORD})),
            "reset with cookie",
        )
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_code_works_once() {
    let app = TestApp::spawn().await;
    let email = register(&app, "ivan", None).await;
    let code = code_by_email(&app, "ivan", &email).await;
    reset_token(&app, "ivan", &code).await;
    let (status, body) = json(app.validate("ivan", &code).await).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired OTP", "code": "invalid_otp"})
        )
    );
}

#[tokio::test]
async fn the_sixth_guess_fails_after_five_wrong_ones_even_when_right() {
    let app = TestApp::spawn().await;
    let email = register(&app, "judy", None).await;
    let code = code_by_email(&app, "judy", &email).await;
    for _ in 0..5 {
        assert_eq!(app.validate("judy", &wrong(&code)).await.status(), 400);
    }
    let (status, body) = json(app.validate("judy", &code).await).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired OTP", "code": "invalid_otp"})
        )
    );
    // A new code works again.
    let code = code_by_email(&app, "judy", &email).await;
    reset_token(&app, "judy", &code).await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let app = TestApp::spawn_with(&[("OTP_TTL", "1s")]).await;
    let email = register(&app, "ken", None).await;
    let code = code_by_email(&app, "ken", &email).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.validate("ken", &code).await.status(), 400);
}

#[tokio::test]
async fn a_new_code_cancels_the_older_one() {
    let app = TestApp::spawn().await;
    let email = register(&app, "leo", None).await;
    let first = code_by_email(&app, "leo", &email).await;
    let second = code_by_email(&app, "leo", &email).await;
    if first != second {
        assert_eq!(app.validate("leo", &first).await.status(), 400);
    }
    reset_token(&app, "leo", &second).await;
}

#[tokio::test]
async fn forgot_password_answers_the_same_for_an_unknown_identifier() {
    let app = TestApp::spawn().await;
    let email = register(&app, "mallory", Some("+14155550104")).await;
    let known = app.forgot(&email).await;
    let unknown = app.forgot("nobody@example.com").await;
    let unknown_phone = app.forgot("+14155550199").await;
    assert_eq!(known.status(), unknown.status());
    let (_, a) = json(known).await;
    let (_, b) = json(unknown).await;
    let (_, c) = json(unknown_phone).await;
    assert_eq!(a, b);
    assert_eq!(a, c);
    app.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.smtp.messages_to("nobody@example.com").is_empty());
    assert!(app.twilio.messages_to("+14155550199").is_empty());
}

#[tokio::test]
async fn forgot_password_is_limited_per_account_whether_or_not_it_exists() {
    let app = TestApp::spawn_with(&[("RATE_FORGOT_PER_ACCOUNT", "3/1m")]).await;
    register(&app, "nina", None).await;
    for id in ["nina", "ghost"] {
        for _ in 0..3 {
            assert_eq!(app.forgot(id).await.status(), 200);
        }
        let resp = app.forgot(id).await;
        assert_eq!(resp.status(), 429, "{id}");
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(json(resp).await.1["error"].is_string());
    }
}

#[tokio::test]
async fn login_failures_look_the_same_for_unknown_users_and_wrong_passwords() {
    let app = TestApp::spawn().await;
    register(&app, "oscar", None).await;
    let (s1, b1) = json(app.login("oscar", "wrong password!").await).await;
    let (s2, b2) = json(app.login("nobody", "wrong password!").await).await;
    assert_eq!(
        (s1, &b1),
        (
            401,
            &json!({"error": "Invalid credentials", "code": "invalid_credentials"})
        )
    );
    assert_eq!((s2, &b2), (s1, &b1));
}

#[tokio::test]
async fn failed_logins_on_one_account_are_slowed_down() {
    let app = TestApp::spawn_with(&[("RATE_LOGIN_PER_ACCOUNT", "5/1m")]).await;
    register(&app, "peggy", None).await;
    for _ in 0..5 {
        assert_eq!(app.login("peggy", "wrong password!").await.status(), 401);
    }
    let resp = app.login("peggy", PASSWORD).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // Other accounts are unaffected.
    assert_eq!(
        app.login("someone-else", "wrong password!").await.status(),
        401
    );
}

#[tokio::test]
async fn a_legacy_bcrypt_hash_logs_in_and_is_rehashed() {
    let app = TestApp::spawn().await;
    let store = open_store(&app).await;
    let legacy = bcrypt::hash("Secure@123", 4).unwrap();
    let username = gatehouse::domain::Username::parse("legacy").unwrap();
    let email = gatehouse::domain::Email::parse("legacy@example.com").unwrap();
    store
        .create_user(
            &gatehouse::store::NewUser {
                username: &username,
                email: &email,
                phone: None,
                password_hash: &legacy,
                now: 1_700_000_000,
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(app.login("legacy", "Secure@124").await.status(), 401);
    let ident = gatehouse::domain::Identifier::parse("legacy").unwrap();
    assert!(store
        .find_user(&ident)
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .starts_with("$2"));

    login_token(&app, "legacy@example.com", "Secure@123").await;
    let stored = store
        .find_user(&ident)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    login_token(&app, "legacy", "Secure@123").await;
}

#[tokio::test]
async fn every_character_of_a_long_password_counts() {
    let app = TestApp::spawn().await;
    let password: String = (0..100).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let resp = app
        .register("quinn", "quinn@example.com", None, &password)
        .await;
    assert_eq!(resp.status(), 201);
    let mut changed = password.clone().into_bytes();
    changed[79] = b'#';
    let changed = String::from_utf8(changed).unwrap();
    assert_eq!(app.login("quinn", &changed).await.status(), 401);
    login_token(&app, "quinn", &password).await;
}

#[tokio::test]
async fn concurrent_duplicate_registrations_give_one_success() {
    let app = TestApp::spawn().await;
    let attempts = (0..50).map(|i| {
        let app = &app;
        async move {
            app.register("rupert", &format!("rupert{i}@example.com"), None, PASSWORD)
                .await
        }
    });
    let responses = futures::future::join_all(attempts).await;
    let mut created = 0;
    for resp in responses {
        match resp.status().as_u16() {
            201 => created += 1,
            409 => assert_eq!(
                json(resp).await.1,
                json!({"error": "User already exists", "code": "user_exists"})
            ),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test]
async fn names_and_emails_are_unique_ignoring_case_and_width() {
    let app = TestApp::spawn().await;
    register(&app, "admin", None).await;
    for (name, email) in [
        ("ADMIN", "other1@example.com"),
        ("ａｄｍｉｎ", "other2@example.com"),
        ("someone", "ADMIN@example.com"),
    ] {
        let (status, _) = json(app.register(name, email, None, PASSWORD).await).await;
        assert_eq!(status, 409, "{name} {email}");
    }
}

#[tokio::test]
async fn weak_passwords_are_refused_with_the_reason() {
    let app = TestApp::spawn().await;
    for (password, why) in [
        ("short", "8 to 256"),
        ("password1", "common"),
        ("victor123", "username"),
    ] {
        let (status, body) = json(
            app.register("victor123", "v@example.com", None, password)
                .await,
        )
        .await;
        assert_eq!(status, 422, "{password}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.starts_with("password:") && msg.contains(why), "{msg}");
    }
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    register(&app, "wendy", None).await;
    let token = login_token(&app, "wendy", PASSWORD).await;
    let other = login_token(&app, "wendy", PASSWORD).await;
    let resp = app.logout(&token).await;
    assert_eq!(resp.status(), 200);
    assert!(common::set_cookie_header(&resp, "session")
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(app.me(&token).await.status(), 401);
    assert_eq!(app.me(&other).await.status(), 200, "other sessions live on");
    assert_eq!(app.logout(&token).await.status(), 401);
}

#[tokio::test]
async fn the_session_cookie_is_secure_http_only_and_strict() {
    let app = TestApp::spawn_with(&[("COOKIE_SECURE", "true")]).await;
    register(&app, "xavier", None).await;
    let resp = app.login("xavier", PASSWORD).await;
    // Secure: the name carries the __Host- prefix (no Domain, Path=/).
    let cookie = common::set_cookie_header(&resp, "__Host-session").unwrap();
    for flag in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=",
    ] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(resp.headers().contains_key("strict-transport-security"));
    // The cookie works as a cookie, too.
    let token = session_cookie(&resp).unwrap();
    let resp = app
        .send(
            app.request(reqwest::Method::GET, "/me")
                .header("cookie", format!("__Host-session={token}")),
            "me by cookie",
        )
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let app = TestApp::spawn_with(&[("SESSION_IDLE_TIMEOUT", "1s")]).await;
    register(&app, "yvonne", None).await;
    let token = login_token(&app, "yvonne", PASSWORD).await;
    assert_eq!(app.me(&token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.me(&token).await.status(), 401);
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let app = TestApp::spawn().await;
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (app.post_raw("/login", Some("application/json"), b"{not json".to_vec()).await, 400, "Malformed JSON"),
        (app.post_json("/login", &json!({"identifier": "x@example.com"})).await, 400, "password"),
        (app.post_raw("/login", Some("text/plain"), b"{}".to_vec()).await, 415, "application/json"),
        (app.post_raw("/login", None, b"{}".to_vec()).await, 415, "application/json"),
        (app.post_raw("/register", Some("application/json"), vec![b' '; 20_000]).await, 413, "too large"),
        (app.post_json("/register", &json!({"username": 5, "email": "a@b.co", "password": "x"})).await, 422, "username"),
        (app.post_json("/register", &json!({"username": "okname", "email": "nope", "password": PASSWORD})).await, 422, "email"),
        (app.post_json("/register", &json!({"username": "okname", "email": "a@example.com", "phone": "555", "password": PASSWORD})).await, 422, "phone"),
        (app.post_json("/validate-otp", &json!({"identifier": "okname", "otp": "12ab"})).await, 422, "otp"),
        (app.post_json("/forgot-password", &json!({"identifier": "okname", "channel": "fax"})).await, 422, "channel"),
        (app.get("/nowhere", None).await, 404, "Not found"),
        (app.get("/login", None).await, 405, "Method not allowed"),
        (app.get("/me", None).await, 401, "Not logged in"),
        (app.get("/me", Some("garbage")).await, 401, "Not logged in"),
    ];
    for (resp, status, needle) in cases {
        assert_eq!(resp.status().as_u16(), status, "{needle}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{needle}"
        );
        let (_, body) = json(resp).await;
        let msg = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {body}"));
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
}

#[tokio::test]
async fn every_response_has_a_request_id_and_no_store() {
    let app = TestApp::spawn().await;
    let resp = app
        .send(
            app.request(reqwest::Method::GET, "/healthz")
                .header("x-request-id", "abc-123"),
            "healthz",
        )
        .await;
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let resp = app.get("/readyz", None).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
}

async fn forgot_from(app: &TestApp, forwarded_for: &str) -> u16 {
    let req = app
        .request(reqwest::Method::POST, "/forgot-password")
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"identifier": format!("someone{}@example.com", forwarded_for.len())}));
    app.send(req, "forgot with X-Forwarded-For")
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    // Untrusted peer: the header is ignored, so every "client" shares the socket's limit.
    let app = TestApp::spawn_with(&[("RATE_FORGOT_PER_IP", "2/1m")]).await;
    assert_eq!(forgot_from(&app, "198.51.100.1").await, 200);
    assert_eq!(forgot_from(&app, "198.51.100.2").await, 200);
    assert_eq!(forgot_from(&app, "198.51.100.3").await, 429);

    // Behind a trusted proxy, each forwarded client has its own budget.
    let app = TestApp::spawn_with(&[
        ("RATE_FORGOT_PER_IP", "2/1m"),
        ("TRUSTED_PROXIES", "127.0.0.1/32,10.0.0.0/8"),
    ])
    .await;
    assert_eq!(forgot_from(&app, "198.51.100.1").await, 200);
    assert_eq!(forgot_from(&app, "198.51.100.1, 10.0.0.5").await, 200);
    assert_eq!(forgot_from(&app, "198.51.100.1").await, 429);
    assert_eq!(forgot_from(&app, "198.51.100.2").await, 200);
}
