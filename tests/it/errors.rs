//! The error bodies as a client sees them: beside the human `error`, worded byte for byte
//! as before (older clients match on it), a stable machine-readable `code`; and beside a
//! field that fails validation, the `field`. Black-box, the real binary.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{authed_json, json, session_cookie, TestApp};
use crate::mfa::{code_at_step, current_step};

const PASSWORD: &str = "correct horse battery";
const NOT_LOGGED_IN: &str = "Not logged in, or the session has expired";

/// The whole body of an error: `{"error": message, "code": code}`.
fn error(status: u16, code: &str, message: &str) -> (u16, Value) {
    (status, json!({"error": message, "code": code}))
}

async fn login_token(app: &TestApp, identifier: &str) -> String {
    let resp = app.login(identifier, PASSWORD).await;
    assert_eq!(resp.status(), 200, "login as {identifier}");
    session_cookie(&resp).expect("a session cookie")
}

/// POST /login/mfa with a TOTP `code`.
async fn second_factor(app: &TestApp, mfa_token: &str, code: &str) -> (u16, Value) {
    let body = json!({"mfa_token": mfa_token, "method": "totp", "code": code});
    json(app.post_json("/login/mfa", &body).await).await
}

#[tokio::test]
async fn every_error_body_carries_a_stable_code_beside_the_unchanged_message() {
    let app = TestApp::spawn().await;
    let (status, body) = json(
        app.register("dora", "dora@example.com", None, PASSWORD)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // The body: malformed, missing a field, of the wrong type, too large, not JSON.
    assert_eq!(
        json(
            app.post_raw("/login", Some("application/json"), b"{not json".to_vec())
                .await
        )
        .await
        .1["code"],
        "bad_request"
    );
    assert_eq!(
        json(
            app.post_json("/login", &json!({"identifier": "dora"}))
                .await
        )
        .await,
        error(400, "bad_request", "Missing field: password")
    );
    let (status, body) = json(
        app.post_json("/login", &json!({"identifier": "dora", "password": 12345}))
            .await,
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (422, &json!("unprocessable")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("password: invalid type"),
        "{body}"
    );
    let big = format!(
        r#"{{"identifier": "dora", "password": "{}"}}"#,
        "a".repeat(17_000)
    );
    assert_eq!(
        json(
            app.post_raw("/login", Some("application/json"), big.into_bytes())
                .await
        )
        .await,
        error(
            413,
            "payload_too_large",
            "Request body is too large (limit 16384 bytes)"
        )
    );
    let form = b"identifier=dora&password=x".to_vec();
    assert_eq!(
        json(app.post_raw("/login", Some("text/plain"), form).await).await,
        error(
            415,
            "unsupported_media_type",
            "Content-Type must be application/json"
        )
    );

    // A field that fails validation is named twice: in the message and as `field`.
    assert_eq!(
        json(app.register("erin", "erin@localhost", None, PASSWORD).await).await,
        (
            422,
            json!({
                "error": "email: is not a valid email address",
                "code": "invalid_field",
                "field": "email",
            })
        )
    );

    // Routes and methods.
    assert_eq!(
        json(app.get("/nowhere", None).await).await,
        error(404, "not_found", "Not found")
    );
    assert_eq!(
        json(app.get("/login", None).await).await,
        error(405, "method_not_allowed", "Method not allowed")
    );

    // Accounts, sessions and recovery.
    let invalid_credentials = error(401, "invalid_credentials", "Invalid credentials");
    assert_eq!(
        json(app.login("dora", "not the password").await).await,
        invalid_credentials
    );
    assert_eq!(
        json(app.login("nobody", PASSWORD).await).await,
        invalid_credentials
    );
    assert_eq!(
        json(
            app.register("dora", "dora2@example.com", None, PASSWORD)
                .await
        )
        .await,
        error(409, "user_exists", "User already exists")
    );
    assert_eq!(
        json(app.get("/me", None).await).await,
        error(401, "not_logged_in", NOT_LOGGED_IN)
    );
    assert_eq!(
        json(app.me("no-such-session").await).await,
        error(401, "not_logged_in", NOT_LOGGED_IN)
    );
    assert_eq!(
        json(app.validate("dora", "000000").await).await,
        error(400, "invalid_otp", "Invalid or expired OTP")
    );
    assert_eq!(
        json(app.reset("dora", "another fine passphrase", None).await).await,
        error(
            401,
            "reset_token_required",
            "A reset token is required: validate the OTP first"
        )
    );
    let forged = "A".repeat(43);
    assert_eq!(
        json(
            app.reset("dora", "another fine passphrase", Some(&forged))
                .await
        )
        .await,
        error(401, "invalid_reset_token", "Invalid or expired reset token")
    );
    let before_totp = login_token(&app, "dora").await;
    let token = login_token(&app, "dora").await;
    assert_eq!(
        authed_json(&app, Method::DELETE, "/sessions/no-such-id", &token, None).await,
        error(404, "session_not_found", "Session not found")
    );

    // Second factors: each refusal has its own code.
    assert_eq!(
        authed_json(
            &app,
            Method::POST,
            "/mfa/totp/confirm",
            &token,
            Some(json!({"otp": "123456"}))
        )
        .await,
        error(
            404,
            "totp_enrolment_not_found",
            "No two-factor enrolment to confirm: start one with POST /mfa/totp/setup"
        )
    );
    assert_eq!(
        authed_json(
            &app,
            Method::DELETE,
            "/mfa/totp",
            &token,
            Some(json!({"otp": "123456"}))
        )
        .await,
        error(
            404,
            "totp_not_enabled",
            "Two-factor authentication is not enabled"
        )
    );
    assert_eq!(
        authed_json(&app, Method::POST, "/mfa/recovery-codes", &token, None).await,
        error(
            409,
            "no_second_factor",
            "Recovery codes stand in for a second factor: turn on TOTP or add a passkey first"
        )
    );
    let (status, body) = authed_json(&app, Method::POST, "/mfa/totp/setup", &token, None).await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().expect("a secret").to_owned();
    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/mfa/totp/confirm",
        &token,
        Some(json!({"otp": code_at_step(&secret, current_step())})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        authed_json(&app, Method::POST, "/mfa/totp/setup", &token, None).await,
        error(
            409,
            "totp_already_enabled",
            "Two-factor authentication is already enabled"
        )
    );
    // A session without the second factor must step up first.
    assert_eq!(
        authed_json(
            &app,
            Method::POST,
            "/mfa/recovery-codes",
            &before_totp,
            None
        )
        .await,
        (
            403,
            json!({
                "error": "Re-authentication required",
                "code": "reauth_required",
                "reauth_required": true,
            })
        )
    );

    // The password alone now asks for the second factor.
    let (status, body) = json(app.login("dora", PASSWORD).await).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "Second factor required", "{body}");
    assert_eq!(body["code"], "mfa_required", "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    let mfa_token = body["mfa_token"].as_str().expect("an mfa_token").to_owned();
    let now = current_step();
    let near: Vec<String> = (now - 2..=now + 3)
        .map(|s| code_at_step(&secret, s))
        .collect();
    let wrong = (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap();
    assert_eq!(
        second_factor(&app, &mfa_token, &wrong).await,
        error(401, "invalid_second_factor", "Invalid code")
    );
    assert_eq!(
        second_factor(&app, &"A".repeat(43), &wrong).await,
        error(
            401,
            "sign_in_expired",
            "The sign-in has expired; log in again"
        )
    );
}
