//! Attacks on what a signed-in user can do to their account (issue 16): a stolen session
//! that guesses the password behind it, an anonymous client that makes us send codes, and
//! a client that floods the session list.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{json, session_cookie, TestApp};

const PASSWORD: &str = "correct horse battery";

async fn signed_in(app: &TestApp) -> String {
    let resp = app
        .register("alice", "alice@example.com", None, PASSWORD)
        .await;
    assert_eq!(resp.status(), 201);
    let resp = app.login("alice", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    session_cookie(&resp).expect("a session cookie")
}

async fn with_session(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.request(method, path).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    json(app.send(req, path).await).await
}

#[tokio::test]
async fn a_stolen_session_guesses_the_current_password_no_faster_than_a_login() {
    let app = TestApp::spawn_with(&[
        ("RATE_LOGIN_PER_ACCOUNT", "3/1m"),
        ("RATE_LOGIN_PER_ACCOUNT_LONG", "100/1h"),
    ])
    .await;
    let token = signed_in(&app).await;
    // The login above spent one of the three and, succeeding, cleared it.
    for guess in ["guess one", "guess two", "guess three"] {
        let body = json!({"current_password": guess, "new_password": "a brand new passphrase"});
        let (status, body) =
            with_session(&app, Method::POST, "/change-password", &token, Some(body)).await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": "Invalid credentials", "code": "invalid_credentials"})
            )
        );
    }
    // The budget is the account's login budget: spent for /login too, and for every
    // other check of the password.
    let body = json!({"current_password": PASSWORD});
    let (status, _) = with_session(&app, Method::DELETE, "/me", &token, Some(body)).await;
    assert_eq!(status, 429);
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);
    // And the account is still there, its session too.
    assert_eq!(app.me(&token).await.status(), 200);
}

#[tokio::test]
async fn send_verification_is_limited_per_client_and_per_identifier() {
    let app = TestApp::spawn_with(&[
        ("RATE_SEND_VERIFICATION_PER_IP", "1000/1m"),
        ("RATE_SEND_VERIFICATION_PER_ACCOUNT", "2/1m"),
    ])
    .await;
    let ask = |who: &'static str| {
        let app = &app;
        async move {
            let body = json!({"identifier": who});
            json(app.post_json("/send-verification", &body).await).await
        }
    };
    // Alike for an identifier with an account and one without.
    for who in ["alice@example.com", "nobody@example.com"] {
        for _ in 0..2 {
            assert_eq!(
                ask(who).await,
                (200, json!({"message": "Verification code sent"}))
            );
        }
        assert_eq!(ask(who).await.0, 429, "{who}");
    }

    let app = TestApp::spawn_with(&[
        ("RATE_SEND_VERIFICATION_PER_IP", "3/1m"),
        ("RATE_SEND_VERIFICATION_PER_ACCOUNT", "1000/1m"),
    ])
    .await;
    for i in 0..3 {
        let body = json!({"identifier": format!("someone{i}@example.com")});
        assert_eq!(
            app.post_json("/send-verification", &body).await.status(),
            200
        );
    }
    let body = json!({"identifier": "someone9@example.com"});
    assert_eq!(
        app.post_json("/send-verification", &body).await.status(),
        429
    );
}

#[tokio::test]
async fn self_service_requests_are_limited_per_account() {
    let app = TestApp::spawn_with(&[("RATE_ACCOUNT_PER_USER", "3/1m")]).await;
    let token = signed_in(&app).await;
    for _ in 0..3 {
        let (status, _) = with_session(&app, Method::GET, "/sessions", &token, None).await;
        assert_eq!(status, 200);
    }
    let (status, body) = with_session(&app, Method::DELETE, "/sessions", &token, None).await;
    assert_eq!(status, 429, "{body}");
    // The session itself is untouched: /me is not a self-service change.
    assert_eq!(app.me(&token).await.status(), 200);
}

#[tokio::test]
async fn a_verification_code_is_no_way_into_an_account_by_recovery_or_by_login() {
    let app = TestApp::spawn().await;
    let resp = app
        .register("alice", "alice@example.com", None, PASSWORD)
        .await;
    assert_eq!(resp.status(), 201);
    let mail = app
        .smtp
        .wait_for_subject(
            "alice@example.com",
            "Verify your email address",
            crate::common::DELIVERY_TIMEOUT,
        )
        .await;
    let code = crate::common::extract_code(&mail.text());
    // Not a recovery code, not a password.
    let (status, body) = json(app.validate("alice@example.com", &code).await).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired OTP", "code": "invalid_otp"})
        )
    );
    assert_eq!(app.login("alice", &code).await.status(), 401);
    // Still good for what it is for, once.
    let body = json!({"identifier": "alice", "otp": code});
    let (status, _) = json(app.post_json("/verify", &body).await).await;
    assert_eq!(status, 200);
    let (status, _) = json(app.post_json("/verify", &body).await).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn any_session_id_that_is_not_the_callers_is_the_same_404() {
    let app = TestApp::spawn().await;
    let token = signed_in(&app).await;
    let long = format!("/sessions/{}", "A".repeat(5000));
    for path in [
        "/sessions/%FF",
        "/sessions/%00",
        "/sessions/x'%20OR%201=1--",
        &long,
    ] {
        let (status, body) = with_session(&app, Method::DELETE, path, &token, None).await;
        assert_eq!(
            (status, body),
            (
                404,
                json!({"error": "Session not found", "code": "session_not_found"})
            ),
            "{path}"
        );
    }
    // Without a session, 401 comes first, whatever the id.
    let req = app.request(Method::DELETE, "/sessions/%FF");
    let (status, _) = json(app.send(req, "no session").await).await;
    assert_eq!(status, 401);
    assert_eq!(app.me(&token).await.status(), 200);
}
