//! Attacks that lock an owner out on purpose, and code guessing that adds up over time:
//! login budgets per account, device cookies (the owner's browser keeps its own budgets),
//! and the account's budget of compared code guesses.

use serde_json::{json, Value};

use crate::common::{cookie_value, extract_code, json, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";

async fn post_with_device(
    app: &TestApp,
    path: &str,
    body: &Value,
    device: &str,
) -> reqwest::Response {
    let req = app
        .request(reqwest::Method::POST, path)
        .header("cookie", format!("device={device}"))
        .json(body);
    app.send(req, path).await
}

/// Registers alice and logs her in once, returning the device cookie her browser keeps.
async fn alice_with_a_device(app: &TestApp) -> String {
    let resp = app
        .register("alice", "alice@example.com", Some("+14155550100"), PASSWORD)
        .await;
    assert_eq!(resp.status(), 201);
    let resp = app.login("alice", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    cookie_value(&resp, "device").expect("a device cookie on login")
}

fn wrong(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

#[tokio::test]
async fn login_limits_are_per_account_not_per_identifier() {
    let app = TestApp::spawn_with(&[("RATE_LOGIN_PER_ACCOUNT", "3/1h")]).await;
    alice_with_a_device(&app).await;
    // Three failures spread over the account's three identifiers spend its one budget.
    for who in ["alice", "alice@example.com", "+14155550100"] {
        assert_eq!(app.login(who, "not the password").await.status(), 401);
    }
    for who in ["alice", "ALICE@example.com", "+14155550100"] {
        assert_eq!(app.login(who, PASSWORD).await.status(), 429, "{who}");
    }
}

#[tokio::test]
async fn a_login_from_a_known_device_is_not_slowed_by_an_attackers_failures() {
    let app = TestApp::spawn_with(&[("RATE_LOGIN_PER_ACCOUNT", "3/1h")]).await;
    let device = alice_with_a_device(&app).await;
    for _ in 0..5 {
        app.login("alice", "an attacker's guess").await;
    }
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);
    let body = json!({"identifier": "alice", "password": PASSWORD});
    let resp = post_with_device(&app, "/login", &body, &device).await;
    assert_eq!(resp.status(), 200, "the owner's browser is locked out");
    // A device cookie minted for another account buys nothing against alice.
    app.register("mallory", "mallory@example.com", None, PASSWORD)
        .await;
    let resp = app.login("mallory", PASSWORD).await;
    let mallorys = cookie_value(&resp, "device").unwrap();
    let resp = post_with_device(&app, "/login", &body, &mallorys).await;
    assert_eq!(resp.status(), 429);
    // A forged one neither.
    let resp = post_with_device(&app, "/login", &body, &"A".repeat(54)).await;
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn a_recovery_from_the_owners_device_survives_an_attackers_guesses() {
    let app = TestApp::spawn().await;
    let device = alice_with_a_device(&app).await;
    let forgot = json!({"identifier": "alice@example.com"});
    let resp = post_with_device(&app, "/forgot-password", &forgot, &device).await;
    assert_eq!(resp.status(), 200);
    let mail = app
        .smtp
        .wait_for("alice@example.com", 1, DELIVERY_TIMEOUT)
        .await;
    let code = extract_code(&mail[0].text());
    // The attacker's five wrong guesses would have killed the code.
    for _ in 0..6 {
        assert_eq!(
            app.validate("alice@example.com", wrong(&code))
                .await
                .status(),
            400
        );
    }
    assert_eq!(app.validate("alice@example.com", &code).await.status(), 400);
    let body = json!({"identifier": "alice@example.com", "otp": code});
    let (status, answer) =
        json(post_with_device(&app, "/validate-otp", &body, &device).await).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn an_attackers_forgot_password_calls_do_not_stop_the_owners_codes() {
    let app = TestApp::spawn_with(&[
        ("RATE_CODES_PER_ACCOUNT", "3/1h"),
        ("RATE_FORGOT_PER_ACCOUNT", "3/1h"),
    ])
    .await;
    let device = alice_with_a_device(&app).await;
    for _ in 0..5 {
        app.forgot("alice@example.com").await;
    }
    app.smtp
        .wait_for("alice@example.com", 3, DELIVERY_TIMEOUT)
        .await;
    assert_eq!(app.forgot("alice@example.com").await.status(), 429);
    let forgot = json!({"identifier": "alice@example.com"});
    let resp = post_with_device(&app, "/forgot-password", &forgot, &device).await;
    assert_eq!(resp.status(), 200);
    let mail = app
        .smtp
        .wait_for("alice@example.com", 4, DELIVERY_TIMEOUT)
        .await;
    let code = extract_code(&mail[3].text());
    let body = json!({"identifier": "alice@example.com", "otp": code});
    let (status, answer) =
        json(post_with_device(&app, "/validate-otp", &body, &device).await).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn failed_guesses_add_up_across_codes_and_the_owner_is_told() {
    let app = TestApp::spawn_with(&[
        ("RATE_CODE_FAILURES_PER_ACCOUNT", "7/1d"),
        ("OTP_MAX_ATTEMPTS", "5"),
    ])
    .await;
    alice_with_a_device(&app).await;
    let mut mails = 0;
    let mut last_code = String::new();
    // Two codes, five wrong guesses at the first and two at the second: seven in all.
    for guesses in [5, 2] {
        assert_eq!(app.forgot("alice@example.com").await.status(), 200);
        mails += 1;
        let mail = app
            .smtp
            .wait_for("alice@example.com", mails, DELIVERY_TIMEOUT)
            .await;
        last_code = extract_code(&mail.last().unwrap().text());
        for _ in 0..guesses {
            let resp = app.validate("alice@example.com", wrong(&last_code)).await;
            assert_eq!(resp.status(), 400);
        }
        if guesses == 5 {
            // The first code died of wrong guesses: the owner hears of it.
            mails += 1;
            let got = app
                .smtp
                .wait_for("alice@example.com", mails, DELIVERY_TIMEOUT)
                .await;
            assert!(
                got.last().unwrap().subject().contains("trying to guess"),
                "{}",
                got.last().unwrap().subject()
            );
        }
    }
    // The account's budget is spent: even the right code is no longer compared.
    let (status, body) = json(app.validate("alice@example.com", &last_code).await).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired OTP", "code": "invalid_otp"})
        )
    );
}
