//! Black-box tests of the second factors: enrolling an authenticator app (TOTP) with its
//! recovery codes, the second step of a login (`/login/mfa` and its `mfa_token`), step-up
//! and `/reauthenticate`, sign-in by code (CODE_LOGIN), the assurance level of sessions,
//! and the operator's `gatehouse user reset-mfa`.
//!
//! TOTP codes are computed here from the secret the API hands out, as an authenticator app
//! would. The server accepts each 30-second step at most once per user and only a step
//! newer than the last it accepted, so each test keeps the last step it used
//! (`Authenticator`) and waits for the clock only when it needs a third step.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{
    audit_events, authed, authed_json, cli, cli_ok, cookie_value, extract_code, json, me,
    session_cookie, set_cookie_header, TestApp, DELIVERY_TIMEOUT,
};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";
const NOT_LOGGED_IN: &str = "Not logged in, or the session has expired";

/// Mail subjects the contract fixes.
const TOTP_ENABLED: &str = "Two-factor authentication enabled";
const TOTP_DISABLED: &str = "Two-factor authentication disabled";
const NEW_RECOVERY_CODES: &str = "New recovery codes";
const RECOVERY_CODE_USED: &str = "A recovery code was used";
const SIGN_IN_CODE: &str = "Your sign-in code";
const RESET_CODE: &str = "Your password reset code";
const FACTORS_RESET: &str = "Your second factors were reset";

/// Seconds per TOTP step.
const TOTP_STEP: u64 = 30;
/// Crockford's base32, lower case: the characters of a recovery code.
const RECOVERY_ALPHABET: &str = "0123456789abcdefghjkmnpqrstvwxyz";

// ---------------------------------------------------------------------------------------
// Answers the contract fixes
// ---------------------------------------------------------------------------------------

/// A wrong second factor at /login/mfa or /reauthenticate.
fn invalid_second_factor() -> (u16, Value) {
    (
        401,
        json!({"error": "Invalid code", "code": "invalid_second_factor"}),
    )
}

/// An `mfa_token` that is unknown, expired, used or out of tries.
fn sign_in_expired() -> (u16, Value) {
    (
        401,
        json!({"error": "The sign-in has expired; log in again", "code": "sign_in_expired"}),
    )
}

/// A wrong code at /mfa/totp/confirm, DELETE /mfa/totp and /login/code.
fn invalid_or_expired() -> (u16, Value) {
    (
        400,
        json!({"error": "Invalid or expired code", "code": "invalid_code"}),
    )
}

/// Step-up refused.
fn reauth_required() -> (u16, Value) {
    (
        403,
        json!({"error": "Re-authentication required", "code": "reauth_required", "reauth_required": true}),
    )
}

fn login_successful() -> Value {
    json!({"message": "Login successful"})
}

/// Asserts a 422 whose error names `field`.
fn assert_names_field(got: &(u16, Value), field: &str) {
    let (status, body) = got;
    assert_eq!(*status, 422, "{body}");
    let error = body["error"].as_str().expect("an error message");
    assert!(error.contains(field), "{error:?} does not name {field}");
}

// ---------------------------------------------------------------------------------------
// TOTP as an authenticator app computes it
// ---------------------------------------------------------------------------------------

fn unix_millis() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("a sane clock")
}

/// The TOTP time step the clock is in (also used by `errors`).
pub(crate) fn current_step() -> u64 {
    unix_millis() / 1000 / TOTP_STEP
}

/// The code of time step `step` for the base32 `secret` (SHA-1, 6 digits, 30 s).
pub(crate) fn code_at_step(secret: &str, step: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("a base32 secret");
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        TOTP_STEP,
        bytes,
        Some("x".into()),
        "x".into(),
    )
    .expect("a valid TOTP")
    .generate(step * TOTP_STEP)
}

/// Waits until the clock is in `step` or later (a second into it); never more than one
/// step.
async fn wait_for_step(step: u64) {
    let target = (step * TOTP_STEP + 1) * 1000;
    let now = unix_millis();
    if now >= target {
        return;
    }
    let wait = Duration::from_millis(target - now);
    assert!(
        wait <= Duration::from_secs(TOTP_STEP + 1),
        "step {step} is more than one step away ({wait:?})"
    );
    tokio::time::sleep(wait).await;
    assert!(
        current_step() >= step,
        "the clock did not reach step {step}"
    );
}

/// One account's authenticator app: the secret, and the last time step the server has
/// accepted from it.
struct Authenticator {
    secret: String,
    last_step: u64,
}

impl Authenticator {
    /// A code the server has not taken: the current step's, or the step after the last
    /// one used when that is newer (accepted as the next step, one step of skew). When
    /// that step is two ahead of the clock, waits until it is only one ahead.
    async fn next_code(&mut self) -> String {
        let step = current_step().max(self.last_step + 1);
        wait_for_step(step - 1).await;
        self.last_step = step;
        code_at_step(&self.secret, step)
    }

    /// Six digits that are the code of no step near now.
    fn wrong_code(&self) -> String {
        let now = current_step();
        let near: Vec<String> = (now - 2..=now + 3)
            .map(|s| code_at_step(&self.secret, s))
            .collect();
        (0..)
            .map(|n| format!("{n:06}"))
            .find(|c| !near.contains(c))
            .expect("a code that is not near")
    }
}

/// Checks a `/mfa/totp/setup` answer; returns the secret.
fn check_setup(body: &Value, issuer: &str, username: &str) -> String {
    let secret = body["secret"].as_str().expect("a secret").to_owned();
    assert_eq!(secret.len(), 32, "160 bits in base32: {secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "base32: {secret}"
    );
    let uri = body["otpauth_uri"].as_str().expect("an otpauth_uri");
    assert!(
        uri.starts_with(&format!("otpauth://totp/{issuer}:{username}?")),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains(&format!("issuer={issuer}")), "{uri}");
    let svg = body["qr_svg"].as_str().expect("a qr_svg");
    assert!(svg.contains("<svg"), "not an SVG: {svg}");
    secret
}

/// Checks ten distinct recovery codes `xxxxx-xxxxx` in lower-case Crockford base32.
fn recovery_codes(body: &Value) -> Vec<String> {
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .expect("recovery_codes")
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    for code in &codes {
        let (a, b) = code.split_once('-').expect("two groups");
        assert!(
            a.len() == 5
                && b.len() == 5
                && a.chars()
                    .chain(b.chars())
                    .all(|c| RECOVERY_ALPHABET.contains(c)),
            "not a recovery code: {code}"
        );
    }
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10, "{codes:?}");
    codes
}

/// Turns TOTP on for the session `token` (setup, then confirm with the current code):
/// the app and the recovery codes. The session is then aal2.
async fn enable_totp(app: &TestApp, token: &str) -> (Authenticator, Vec<String>) {
    let (status, body) = authed_json(app, Method::POST, "/mfa/totp/setup", token, None).await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().expect("a secret").to_owned();
    let step = current_step();
    let otp = code_at_step(&secret, step);
    let (status, body) = authed_json(
        app,
        Method::POST,
        "/mfa/totp/confirm",
        token,
        Some(json!({"otp": otp})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], TOTP_ENABLED, "{body}");
    let codes = recovery_codes(&body);
    (
        Authenticator {
            secret,
            last_step: step,
        },
        codes,
    )
}

// ---------------------------------------------------------------------------------------
// Accounts, sessions and logins
// ---------------------------------------------------------------------------------------

/// Registers `name` with `name@example.com`, asserting a 201; the email.
async fn register(app: &TestApp, name: &str) -> String {
    let email = format!("{name}@example.com");
    let (status, body) = json(app.register(name, &email, None, PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    email
}

/// A password login that opens a session at once; the session token.
async fn login_token(app: &TestApp, identifier: &str, password: &str) -> String {
    let resp = app.login(identifier, password).await;
    assert_eq!(resp.status(), 200, "login as {identifier}");
    let token = session_cookie(&resp).expect("a session cookie");
    assert_eq!(json(resp).await.1, login_successful());
    token
}

/// Checks the 401 that asks for the second factor; returns its `mfa_token`.
fn expect_mfa_required(got: &(u16, Value), methods: &[&str]) -> String {
    let (status, body) = got;
    assert_eq!(*status, 401, "{body}");
    assert_eq!(body["error"], "Second factor required", "{body}");
    assert_eq!(body["code"], "mfa_required", "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    assert_eq!(body["methods"], json!(methods), "{body}");
    let token = body["mfa_token"].as_str().expect("an mfa_token");
    assert_eq!(token.len(), 43, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url: {token}"
    );
    token.to_owned()
}

/// The right password on an account with TOTP and recovery codes: no session, and the
/// `mfa_token`.
async fn mfa_token(app: &TestApp, identifier: &str, password: &str) -> String {
    let resp = app.login(identifier, password).await;
    assert!(
        session_cookie(&resp).is_none(),
        "no session before the factor"
    );
    expect_mfa_required(&json(resp).await, &["totp", "recovery_code"])
}

/// POST /login/mfa with the token in the body.
async fn second_factor(app: &TestApp, token: &str, method: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/login/mfa",
        &json!({"mfa_token": token, "method": method, "code": code}),
    )
    .await
}

async fn second_factor_json(app: &TestApp, token: &str, method: &str, code: &str) -> (u16, Value) {
    json(second_factor(app, token, method, code).await).await
}

/// A response that opened a session: its token.
async fn opened(resp: reqwest::Response) -> String {
    let token = session_cookie(&resp);
    let (status, body) = json(resp).await;
    assert_eq!((status, body), (200, login_successful()));
    token.expect("a session cookie")
}

/// Both steps of a login; the session token.
async fn login_with(app: &TestApp, identifier: &str, method: &str, code: &str) -> String {
    let token = mfa_token(app, identifier, PASSWORD).await;
    opened(second_factor(app, &token, method, code).await).await
}

/// The status GET /me answers `token` with, and checks the 401's body when it is one.
async fn me_status(app: &TestApp, token: &str) -> u16 {
    let (status, body) = json(app.me(token).await).await;
    if status == 401 {
        assert_eq!(
            body,
            json!({"error": NOT_LOGGED_IN, "code": "not_logged_in"})
        );
    }
    status
}

fn mfa_summary(totp: bool, recovery_codes_left: u32) -> Value {
    json!({"totp": totp, "passkeys": 0, "recovery_codes_left": recovery_codes_left})
}

/// POST /reauthenticate with `body`.
async fn reauthenticate(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    authed_json(app, Method::POST, "/reauthenticate", token, Some(body)).await
}

/// POST /change-password; status and body (the session's new token is not kept).
async fn change_password(app: &TestApp, token: &str, current: &str, new: &str) -> (u16, Value) {
    authed_json(
        app,
        Method::POST,
        "/change-password",
        token,
        Some(json!({"current_password": current, "new_password": new})),
    )
    .await
}

/// GET /sessions with `token`: the list, asserting a 200.
async fn sessions(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = authed_json(app, Method::GET, "/sessions", token, None).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"]
        .as_array()
        .expect("a sessions array")
        .clone()
}

/// The current session in `token`'s list.
async fn current_session(app: &TestApp, token: &str) -> Value {
    let list = sessions(app, token).await;
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list:?}");
    current[0].clone()
}

/// A session's `authenticated_at`, parsed as RFC 3339.
fn authenticated_at(session: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let at = session["authenticated_at"]
        .as_str()
        .unwrap_or_else(|| panic!("authenticated_at: {session}"));
    chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------------------

/// The texts of the mails to `to` with exactly `subject`, once at least `n` have come;
/// panics, listing the subjects that did arrive, after DELIVERY_TIMEOUT.
async fn mails_with_subject(app: &TestApp, to: &str, subject: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let mails = app.smtp.all_messages_to(to);
        let texts: Vec<String> = mails
            .iter()
            .filter(|m| m.subject() == subject)
            .map(|m| m.text())
            .collect();
        if texts.len() >= n {
            return texts;
        }
        if Instant::now() >= deadline {
            let subjects: Vec<String> = mails.iter().map(|m| m.subject()).collect();
            panic!(
                "expected {n} mail(s) to {to} with subject {subject:?} within \
                 {DELIVERY_TIMEOUT:?}; subjects that arrived: {subjects:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many mails to `to` with exactly `subject` have arrived so far.
fn count_with_subject(app: &TestApp, to: &str, subject: &str) -> usize {
    app.smtp
        .all_messages_to(to)
        .iter()
        .filter(|m| m.subject() == subject)
        .count()
}

/// The code of the latest mail to `to` with `subject`, once at least `n` have come.
async fn code_by_mail(app: &TestApp, to: &str, subject: &str, n: usize) -> String {
    let texts = mails_with_subject(app, to, subject, n).await;
    extract_code(texts.last().expect("at least one mail"))
}

/// Gives anything still queued time to be delivered, before asserting it was not sent.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A six-digit code that is not `code`.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().expect("six digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

// ---------------------------------------------------------------------------------------
// The admin CLI
// ---------------------------------------------------------------------------------------

fn assert_audited(names: &[String], expected: &[&str]) {
    for event in expected {
        assert!(
            names.iter().any(|n| n == event),
            "{event} missing from {names:?}"
        );
    }
}

fn times_audited(names: &[String], event: &str) -> usize {
    names.iter().filter(|n| *n == event).count()
}

// ---------------------------------------------------------------------------------------
// Enrolling, and logging in with the second factor
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn enrolling_totp_changes_nothing_until_confirmed_and_then_login_asks_for_the_second_factor()
{
    let app = TestApp::spawn_with(&[("MFA_ISSUER", "Acme")]).await;
    let email = register(&app, "ursula").await;
    let token = login_token(&app, "ursula", PASSWORD).await;
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(false, 0));

    // Nothing to confirm before a setup.
    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/mfa/totp/confirm",
        &token,
        Some(json!({"otp": "123456"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = authed_json(&app, Method::POST, "/mfa/totp/setup", &token, None).await;
    assert_eq!(status, 200, "{body}");
    let abandoned = check_setup(&body, "Acme", "ursula");
    // Until confirmed, nothing changes: the password alone still signs in.
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(false, 0));
    login_token(&app, "ursula", PASSWORD).await;

    // A new setup replaces the one never confirmed.
    let (status, body) = authed_json(&app, Method::POST, "/mfa/totp/setup", &token, None).await;
    assert_eq!(status, 200, "{body}");
    let secret = check_setup(&body, "Acme", "ursula");
    assert_ne!(secret, abandoned);
    let app_totp = Authenticator {
        secret: secret.clone(),
        last_step: 0,
    };
    let confirm = |otp: String| {
        authed_json(
            &app,
            Method::POST,
            "/mfa/totp/confirm",
            &token,
            Some(json!({"otp": otp})),
        )
    };
    assert_eq!(confirm(app_totp.wrong_code()).await, invalid_or_expired());
    let step = current_step();
    let stale = code_at_step(&abandoned, step);
    if stale != code_at_step(&secret, step) {
        assert_eq!(
            confirm(stale).await,
            invalid_or_expired(),
            "the replaced secret's code"
        );
    }
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(false, 0));
    login_token(&app, "ursula", PASSWORD).await;

    let (status, body) = confirm(code_at_step(&secret, step)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Two-factor authentication enabled");
    recovery_codes(&body);
    let mut app_totp = Authenticator {
        secret,
        last_step: step,
    };
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(true, 10));
    let notice = mails_with_subject(&app, &email, TOTP_ENABLED, 1).await;
    assert!(notice[0].contains("ursula"), "{}", notice[0]);

    let enabled = (
        409,
        json!({"error": "Two-factor authentication is already enabled", "code": "totp_already_enabled"}),
    );
    assert_eq!(
        authed_json(&app, Method::POST, "/mfa/totp/setup", &token, None).await,
        enabled
    );
    assert_eq!(confirm(app_totp.wrong_code()).await, enabled);

    // Now the password earns no session, only the token for the second step.
    let resp = app.login("ursula", PASSWORD).await;
    assert!(session_cookie(&resp).is_none(), "no session cookie");
    let cookie = set_cookie_header(&resp, "mfa_token").expect("an mfa_token cookie");
    let mfa = expect_mfa_required(&json(resp).await, &["totp", "recovery_code"]);
    assert_eq!(
        cookie,
        format!("mfa_token={mfa}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=300")
    );
    // A wrong password is the usual refusal, with no token.
    let resp = app.login("ursula@example.com", "not my password").await;
    assert!(set_cookie_header(&resp, "mfa_token").is_none());
    assert_eq!(
        json(resp).await,
        (
            401,
            json!({"error": "Invalid credentials", "code": "invalid_credentials"})
        )
    );

    // The code that confirmed the enrolment took its step: it does not sign in.
    assert_eq!(
        second_factor_json(&app, &mfa, "totp", &code_at_step(&app_totp.secret, step)).await,
        invalid_second_factor()
    );
    let code = app_totp.next_code().await;
    let session = opened(second_factor(&app, &mfa, "totp", &code).await).await;
    assert_eq!(me(&app, &session).await["username"], "ursula");
    assert_eq!(current_session(&app, &session).await["aal"], "aal2");
    assert_audited(
        &audit_events(&app, "ursula"),
        &["totp_enabled", "mfa_required", "mfa_failed"],
    );
}

#[tokio::test]
async fn a_totp_code_is_refused_the_second_time() {
    let app = TestApp::spawn().await;
    register(&app, "victor").await;
    let token = login_token(&app, "victor", PASSWORD).await;
    let (mut app_totp, _) = enable_totp(&app, &token).await;
    let enrolment_code = code_at_step(&app_totp.secret, app_totp.last_step);

    let code = app_totp.next_code().await;
    login_with(&app, "victor", "totp", &code).await;

    // The same code again, on another login: its step is taken.
    let mfa = mfa_token(&app, "victor", PASSWORD).await;
    assert_eq!(
        second_factor_json(&app, &mfa, "totp", &code).await,
        invalid_second_factor()
    );
    // So is the older step the enrolment used, though it is still within the skew.
    if enrolment_code != code {
        assert_eq!(
            second_factor_json(&app, &mfa, "totp", &enrolment_code).await,
            invalid_second_factor()
        );
    }
    // The code of a later step is taken, on the same token (it has tries left).
    let later = app_totp.next_code().await;
    let session = opened(second_factor(&app, &mfa, "totp", &later).await).await;
    assert_eq!(me(&app, &session).await["username"], "victor");
    assert!(times_audited(&audit_events(&app, "victor"), "mfa_failed") >= 1);
}

#[tokio::test]
async fn the_sixth_wrong_code_kills_the_mfa_token() {
    let app = TestApp::spawn().await;
    register(&app, "wendy").await;
    let token = login_token(&app, "wendy", PASSWORD).await;
    let (mut app_totp, codes) = enable_totp(&app, &token).await;
    let mfa = mfa_token(&app, "wendy", PASSWORD).await;

    // A method that is none is refused before anything, and takes no try.
    let got = json(
        app.post_json(
            "/login/mfa",
            &json!({"mfa_token": mfa, "method": "sms", "code": "123456"}),
        )
        .await,
    )
    .await;
    assert_names_field(&got, "method");

    let wrong_code = app_totp.wrong_code();
    for attempt in 1..=5 {
        assert_eq!(
            second_factor_json(&app, &mfa, "totp", &wrong_code).await,
            invalid_second_factor(),
            "wrong code {attempt}"
        );
    }
    // Out of tries: even the right code, or an unused recovery code, is refused.
    let code = app_totp.next_code().await;
    assert_eq!(
        second_factor_json(&app, &mfa, "totp", &code).await,
        sign_in_expired()
    );
    assert_eq!(
        second_factor_json(&app, &mfa, "recovery_code", &codes[0]).await,
        sign_in_expired()
    );

    // A fresh login starts afresh, and the code refused above was never taken.
    let session = login_with(&app, "wendy", "totp", &code).await;
    assert_eq!(me(&app, &session).await["mfa"], mfa_summary(true, 10));
    let names = audit_events(&app, "wendy");
    assert!(times_audited(&names, "mfa_failed") >= 5, "{names:?}");
}

#[tokio::test]
async fn the_mfa_token_works_from_the_cookie_alone_and_only_once() {
    // With Secure cookies, the token's cookie carries the __Secure- prefix.
    let app = TestApp::spawn_with(&[("COOKIE_SECURE", "true")]).await;
    register(&app, "xena").await;
    let token = login_token(&app, "xena", PASSWORD).await;
    let (mut app_totp, codes) = enable_totp(&app, &token).await;

    let name = "__Secure-mfa_token";
    let resp = app.login("xena", PASSWORD).await;
    assert!(session_cookie(&resp).is_none());
    let header = set_cookie_header(&resp, name).expect("the mfa_token cookie");
    let value = cookie_value(&resp, name).expect("a value");
    let from_body = expect_mfa_required(&json(resp).await, &["totp", "recovery_code"]);
    assert_eq!(value, from_body);
    assert_eq!(
        header,
        format!("{name}={value}; Path=/login; Secure; HttpOnly; SameSite=Strict; Max-Age=300")
    );

    let code = app_totp.next_code().await;
    // A cookie without the prefix is not ours: no token at all.
    let req = app
        .request(Method::POST, "/login/mfa")
        .header("cookie", format!("mfa_token={value}"))
        .json(&json!({"method": "totp", "code": code}));
    assert_names_field(
        &json(app.send(req, "POST /login/mfa").await).await,
        "mfa_token",
    );

    // The cookie alone carries the token.
    let with_cookie = |body: Value| {
        let req = app
            .request(Method::POST, "/login/mfa")
            .header("cookie", format!("{name}={value}"))
            .json(&body);
        app.send(req, "POST /login/mfa with the cookie")
    };
    let resp = with_cookie(json!({"method": "totp", "code": code})).await;
    let cleared = set_cookie_header(&resp, name).expect("the used token's cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let session = opened(resp).await;
    assert_eq!(me(&app, &session).await["username"], "xena");

    // Only once: neither the cookie nor the body brings the used token back.
    let again = with_cookie(json!({"method": "recovery_code", "code": codes[0]})).await;
    assert!(session_cookie(&again).is_none());
    assert_eq!(json(again).await, sign_in_expired());
    assert_eq!(
        second_factor_json(&app, &value, "recovery_code", &codes[0]).await,
        sign_in_expired()
    );
    // Nor does a token nobody was given.
    assert_eq!(
        second_factor_json(&app, &"A".repeat(43), "recovery_code", &codes[0]).await,
        sign_in_expired()
    );
    assert_eq!(me(&app, &session).await["mfa"], mfa_summary(true, 10));
}

#[tokio::test]
async fn twenty_parallel_uses_of_one_recovery_code_succeed_once() {
    let app = TestApp::spawn().await;
    let email = register(&app, "yusuf").await;
    let token = login_token(&app, "yusuf", PASSWORD).await;
    let (_, codes) = enable_totp(&app, &token).await;
    let mut tokens = Vec::with_capacity(20);
    for _ in 0..20 {
        tokens.push(mfa_token(&app, "yusuf", PASSWORD).await);
    }

    let code = &codes[3];
    let attempts = tokens
        .iter()
        .map(|t| second_factor(&app, t, "recovery_code", code));
    let responses = futures::future::join_all(attempts).await;
    let mut sessions = Vec::new();
    for resp in responses {
        let session = session_cookie(&resp);
        let (status, body) = json(resp).await;
        match status {
            200 => {
                assert_eq!(body, login_successful());
                sessions.push(session.expect("a session cookie"));
            }
            401 => assert_eq!((status, body), invalid_second_factor()),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(sessions.len(), 1, "exactly one use of the code signs in");
    assert_eq!(me(&app, &sessions[0]).await["mfa"], mfa_summary(true, 9));

    mails_with_subject(&app, &email, RECOVERY_CODE_USED, 1).await;
    settle().await;
    assert_eq!(count_with_subject(&app, &email, RECOVERY_CODE_USED), 1);
    assert_eq!(
        times_audited(&audit_events(&app, "yusuf"), "recovery_code_used"),
        1
    );
}

#[tokio::test]
async fn twenty_parallel_uses_of_one_totp_code_succeed_once() {
    let app = TestApp::spawn().await;
    register(&app, "lars").await;
    let token = login_token(&app, "lars", PASSWORD).await;
    let (mut app_totp, _) = enable_totp(&app, &token).await;
    let mut tokens = Vec::with_capacity(20);
    for _ in 0..20 {
        tokens.push(mfa_token(&app, "lars", PASSWORD).await);
    }

    let code = app_totp.next_code().await;
    let attempts = tokens.iter().map(|t| second_factor(&app, t, "totp", &code));
    let responses = futures::future::join_all(attempts).await;
    let mut sessions = Vec::new();
    for resp in responses {
        let session = session_cookie(&resp);
        let (status, body) = json(resp).await;
        match status {
            200 => {
                assert_eq!(body, login_successful());
                sessions.push(session.expect("a session cookie"));
            }
            401 => assert_eq!((status, body), invalid_second_factor()),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(sessions.len(), 1, "exactly one use of the step signs in");
    assert_eq!(me(&app, &sessions[0]).await["username"], "lars");
}

#[tokio::test]
async fn fresh_mfa_tokens_do_not_refill_the_accounts_budget_of_second_factor_attempts() {
    let app = TestApp::spawn_with(&[("RATE_MFA_PER_ACCOUNT", "4/1h")]).await;
    register(&app, "kurt").await;
    register(&app, "lena").await;
    let token = login_token(&app, "kurt", PASSWORD).await;
    let bystander = login_token(&app, "lena", PASSWORD).await;
    let (mut app_totp, codes) = enable_totp(&app, &token).await;
    let (mut bystander_totp, _) = enable_totp(&app, &bystander).await;

    // Four wrong codes, two on each of two tokens: each token has tries left…
    let wrong_code = app_totp.wrong_code();
    for round in 0..2 {
        let mfa = mfa_token(&app, "kurt", PASSWORD).await;
        for attempt in 0..2 {
            assert_eq!(
                second_factor_json(&app, &mfa, "totp", &wrong_code).await,
                invalid_second_factor(),
                "token {round}, attempt {attempt}"
            );
        }
    }
    // …but the account's budget is spent: a fresh token with the right code is refused,
    // and so is re-authenticating.
    let mfa = mfa_token(&app, "kurt", PASSWORD).await;
    let code = app_totp.next_code().await;
    for (method, code) in [
        ("totp", code.as_str()),
        ("recovery_code", codes[0].as_str()),
    ] {
        let resp = second_factor(&app, &mfa, method, code).await;
        assert_eq!(resp.status(), 429, "{method}");
        assert!(resp.headers().get("retry-after").is_some(), "{method}");
        assert!(session_cookie(&resp).is_none());
    }
    let (status, body) = reauthenticate(
        &app,
        &token,
        json!({"method": "recovery_code", "code": codes[0]}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(true, 10));

    // Another account's budget is its own.
    let code = bystander_totp.next_code().await;
    login_with(&app, "lena", "totp", &code).await;
}

#[tokio::test]
async fn a_login_waiting_for_its_second_factor_dies_with_a_disabled_account() {
    let app = TestApp::spawn().await;
    register(&app, "mona").await;
    let token = login_token(&app, "mona", PASSWORD).await;
    let (mut app_totp, codes) = enable_totp(&app, &token).await;
    let mfa = mfa_token(&app, "mona", PASSWORD).await;

    cli_ok(&app, &["user", "disable", "mona"]);
    let code = app_totp.next_code().await;
    assert_eq!(
        second_factor_json(&app, &mfa, "totp", &code).await,
        sign_in_expired()
    );
    assert_eq!(
        second_factor_json(&app, &mfa, "recovery_code", &codes[0]).await,
        sign_in_expired()
    );

    cli_ok(&app, &["user", "enable", "mona"]);
    let session = login_with(&app, "mona", "totp", &code).await;
    assert_eq!(me(&app, &session).await["mfa"], mfa_summary(true, 10));
}

#[tokio::test]
async fn a_password_reset_leaves_totp_on_and_logs_nobody_in() {
    let app = TestApp::spawn().await;
    let email = register(&app, "zara").await;
    let token = login_token(&app, "zara", PASSWORD).await;
    let (mut app_totp, _) = enable_totp(&app, &token).await;
    let earned_by_old_password = mfa_token(&app, "zara", PASSWORD).await;

    assert_eq!(app.forgot(&email).await.status(), 200);
    let code = code_by_mail(&app, &email, RESET_CODE, 1).await;
    let resp = app.validate(&email, &code).await;
    assert!(session_cookie(&resp).is_none(), "validating logs nobody in");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    let reset_token = body["reset_token"].as_str().expect("a reset_token");
    let resp = app.reset(&email, NEW_PASSWORD, Some(reset_token)).await;
    assert!(session_cookie(&resp).is_none(), "resetting logs nobody in");
    assert_eq!(
        json(resp).await,
        (200, json!({"message": "Password reset successful"}))
    );
    assert_eq!(me_status(&app, &token).await, 401);

    let code = app_totp.next_code().await;
    // The token the old password earned died with it.
    assert_eq!(
        second_factor_json(&app, &earned_by_old_password, "totp", &code).await,
        sign_in_expired()
    );
    assert_eq!(
        json(app.login("zara", PASSWORD).await).await,
        (
            401,
            json!({"error": "Invalid credentials", "code": "invalid_credentials"})
        )
    );
    // The new password alone is not enough: TOTP is still on.
    let mfa = mfa_token(&app, "zara", NEW_PASSWORD).await;
    let session = opened(second_factor(&app, &mfa, "totp", &code).await).await;
    assert_eq!(me(&app, &session).await["mfa"], mfa_summary(true, 10));
}

// ---------------------------------------------------------------------------------------
// Sign-in by code
// ---------------------------------------------------------------------------------------

async fn request_code(app: &TestApp, identifier: &str) -> (u16, Value) {
    json(
        app.post_json("/login/code/request", &json!({"identifier": identifier}))
            .await,
    )
    .await
}

async fn login_code(app: &TestApp, identifier: &str, otp: &str) -> reqwest::Response {
    app.post_json(
        "/login/code",
        &json!({"identifier": identifier, "otp": otp}),
    )
    .await
}

#[tokio::test]
async fn code_login_on_an_mfa_account_still_asks_for_the_factor() {
    // Off (the default), both routes are not there.
    {
        let off = TestApp::spawn().await;
        let email = register(&off, "abel").await;
        let calls = [
            ("/login/code/request", json!({"identifier": "abel"})),
            (
                "/login/code",
                json!({"identifier": "abel", "otp": "123456"}),
            ),
        ];
        for (path, body) in calls {
            assert_eq!(
                json(off.post_json(path, &body).await).await,
                (404, json!({"error": "Not found", "code": "not_found"})),
                "{path}"
            );
        }
        settle().await;
        assert_eq!(count_with_subject(&off, &email, SIGN_IN_CODE), 0);
    }

    let app = TestApp::spawn_with(&[("CODE_LOGIN", "true")]).await;
    let sent = (200, json!({"message": "OTP sent successfully"}));

    // Without a second factor, the code signs in, at aal1.
    let plain = register(&app, "abel").await;
    assert_eq!(request_code(&app, &plain).await, sent);
    let code = code_by_mail(&app, &plain, SIGN_IN_CODE, 1).await;
    assert_eq!(
        json(login_code(&app, &plain, &wrong(&code)).await).await,
        invalid_or_expired()
    );
    let session = opened(login_code(&app, &plain, &code).await).await;
    assert_eq!(me(&app, &session).await["username"], "abel");
    assert_eq!(current_session(&app, &session).await["aal"], "aal1");
    assert_eq!(
        json(login_code(&app, &plain, &code).await).await,
        invalid_or_expired(),
        "a code works once"
    );

    // Nobody's identifier gets the same answer, and nothing is sent.
    assert_eq!(request_code(&app, "nobody@example.com").await, sent);
    assert_eq!(request_code(&app, "nobody").await, sent);

    // With a second factor, the code (asked for by username) is only the first step.
    let email = register(&app, "bella").await;
    let token = login_token(&app, "bella", PASSWORD).await;
    let (mut app_totp, _) = enable_totp(&app, &token).await;
    assert_eq!(request_code(&app, "bella").await, sent);
    let code = code_by_mail(&app, &email, SIGN_IN_CODE, 1).await;
    let resp = login_code(&app, "bella", &code).await;
    assert!(
        session_cookie(&resp).is_none(),
        "no session before the factor"
    );
    assert!(set_cookie_header(&resp, "mfa_token").is_some());
    let mfa = expect_mfa_required(&json(resp).await, &["totp", "recovery_code"]);
    let otp = app_totp.next_code().await;
    let session = opened(second_factor(&app, &mfa, "totp", &otp).await).await;
    assert_eq!(me(&app, &session).await["username"], "bella");
    assert_eq!(current_session(&app, &session).await["aal"], "aal2");

    settle().await;
    assert!(app.smtp.all_messages_to("nobody@example.com").is_empty());
    assert_audited(
        &audit_events(&app, "bella"),
        &["login_code_requested", "login_code_used", "mfa_required"],
    );
}

// ---------------------------------------------------------------------------------------
// Step-up and re-authentication
// ---------------------------------------------------------------------------------------

/// Every change that needs a recent proof, with a body it would otherwise accept.
fn sensitive_changes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/change-password",
            Some(json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
        ),
        (
            Method::POST,
            "/change-email",
            Some(json!({"new_email": "elsewhere@example.com", "current_password": PASSWORD})),
        ),
        (
            Method::POST,
            "/change-phone",
            Some(json!({"new_phone": "+14155550140", "current_password": PASSWORD})),
        ),
        (
            Method::DELETE,
            "/me",
            Some(json!({"current_password": PASSWORD})),
        ),
        (Method::POST, "/mfa/totp/setup", None),
        (
            Method::POST,
            "/mfa/totp/confirm",
            Some(json!({"otp": "123456"})),
        ),
        (Method::DELETE, "/mfa/totp", Some(json!({"otp": "123456"}))),
        (Method::POST, "/mfa/recovery-codes", None),
        (Method::POST, "/passkeys/register/start", None),
        (Method::DELETE, "/passkeys/AAAAAAAAAAAAAAAAAAAAAA", None),
    ]
}

#[tokio::test]
async fn an_old_session_must_reauthenticate_with_its_second_factor_before_a_sensitive_change() {
    let mut app = TestApp::spawn().await;
    let email = register(&app, "carl").await;
    let before_totp = login_token(&app, "carl", PASSWORD).await;
    let token = login_token(&app, "carl", PASSWORD).await;
    let (mut app_totp, codes) = enable_totp(&app, &token).await;

    // A recent proof without the second factor is not enough once the account has one.
    assert_eq!(
        change_password(&app, &before_totp, PASSWORD, NEW_PASSWORD).await,
        reauth_required()
    );
    assert_eq!(
        authed_json(
            &app,
            Method::POST,
            "/mfa/recovery-codes",
            &before_totp,
            None
        )
        .await,
        reauth_required()
    );

    // Later: every proof is older than REAUTH_MAX_AGE.
    app.restart_with(&[("REAUTH_MAX_AGE", "2s")]).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    for (method, path, body) in sensitive_changes() {
        let what = format!("{method} {path}");
        assert_eq!(
            authed_json(&app, method, path, &token, body).await,
            reauth_required(),
            "{what}"
        );
    }
    // Nothing was changed by any of them.
    let body = me(&app, &token).await;
    assert_eq!(body["email"], email.as_str(), "{body}");
    assert_eq!(body["mfa"], mfa_summary(true, 10), "{body}");
    assert_eq!(
        json(app.login("carl", NEW_PASSWORD).await).await,
        (
            401,
            json!({"error": "Invalid credentials", "code": "invalid_credentials"})
        )
    );

    // The password alone does not re-authenticate an account with a second factor…
    assert_names_field(
        &reauthenticate(&app, &token, json!({"password": PASSWORD})).await,
        "method",
    );
    // …nor does a wrong code…
    assert_eq!(
        reauthenticate(
            &app,
            &token,
            json!({"method": "totp", "code": app_totp.wrong_code()})
        )
        .await,
        invalid_second_factor()
    );
    assert_eq!(
        change_password(&app, &token, PASSWORD, NEW_PASSWORD).await,
        reauth_required()
    );
    // …but the second factor does: a recovery code on the session from before TOTP…
    assert_eq!(
        reauthenticate(
            &app,
            &before_totp,
            json!({"method": "recovery_code", "code": codes[0]})
        )
        .await,
        (200, json!({"message": "Re-authenticated"}))
    );
    assert_eq!(current_session(&app, &before_totp).await["aal"], "aal2");
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(true, 9));
    // …and a TOTP code on the old one, which may then change the password.
    let code = app_totp.next_code().await;
    assert_eq!(
        reauthenticate(&app, &token, json!({"method": "totp", "code": code})).await,
        (200, json!({"message": "Re-authenticated"}))
    );
    let resp = authed(
        &app,
        Method::POST,
        "/change-password",
        &token,
        Some(json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
    )
    .await;
    let rotated = session_cookie(&resp).expect("the session's new token");
    assert_eq!(
        json(resp).await,
        (200, json!({"message": "Password changed"}))
    );
    // The session goes on under its new token, with its proof.
    assert_eq!(current_session(&app, &rotated).await["aal"], "aal2");
    mfa_token(&app, "carl", NEW_PASSWORD).await;
    let names = audit_events(&app, "carl");
    assert!(times_audited(&names, "reauthenticated") >= 2, "{names:?}");
}

#[tokio::test]
async fn a_session_without_a_recent_proof_cannot_change_the_password_until_it_reauthenticates() {
    let app = TestApp::spawn_with(&[("REAUTH_MAX_AGE", "2s")]).await;
    let email = register(&app, "dora").await;
    let token = login_token(&app, "dora", PASSWORD).await;
    let at_login = authenticated_at(&current_session(&app, &token).await);

    tokio::time::sleep(Duration::from_millis(3100)).await;
    for (method, path, body) in sensitive_changes() {
        let what = format!("{method} {path}");
        assert_eq!(
            authed_json(&app, method, path, &token, body).await,
            reauth_required(),
            "{what}"
        );
    }
    assert_eq!(me(&app, &token).await["email"], email.as_str());
    assert_eq!(app.login("dora", NEW_PASSWORD).await.status(), 401);

    assert_names_field(&reauthenticate(&app, &token, json!({})).await, "password");
    assert_eq!(
        reauthenticate(&app, &token, json!({"password": "not my password"})).await,
        (
            401,
            json!({"error": "Invalid credentials", "code": "invalid_credentials"})
        )
    );
    assert_eq!(
        change_password(&app, &token, PASSWORD, NEW_PASSWORD).await,
        reauth_required()
    );
    assert_eq!(
        reauthenticate(&app, &token, json!({"password": PASSWORD})).await,
        (200, json!({"message": "Re-authenticated"}))
    );
    let session = current_session(&app, &token).await;
    assert_eq!(session["aal"], "aal1", "a password is one factor");
    assert!(
        authenticated_at(&session) >= at_login + chrono::Duration::seconds(3),
        "the proof is fresh: {session}"
    );

    // A current password in the body is still checked.
    assert_eq!(
        change_password(&app, &token, "not my password", NEW_PASSWORD).await,
        (
            401,
            json!({"error": "Invalid credentials", "code": "invalid_credentials"})
        )
    );
    assert_eq!(
        change_password(&app, &token, PASSWORD, NEW_PASSWORD).await,
        (200, json!({"message": "Password changed"}))
    );
    login_token(&app, "dora", NEW_PASSWORD).await;
    assert_audited(&audit_events(&app, "dora"), &["reauthenticated"]);
}

// ---------------------------------------------------------------------------------------
// Removing TOTP, recovery codes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn removing_totp_needs_a_code_and_takes_the_recovery_codes_with_it() {
    let app = TestApp::spawn().await;
    let email = register(&app, "erik").await;
    let token = login_token(&app, "erik", PASSWORD).await;
    let (app_totp, codes) = enable_totp(&app, &token).await;
    let remove = |otp: String| {
        authed_json(
            &app,
            Method::DELETE,
            "/mfa/totp",
            &token,
            Some(json!({"otp": otp})),
        )
    };

    assert_eq!(remove(app_totp.wrong_code()).await, invalid_or_expired());
    assert_eq!(
        remove(code_at_step(&app_totp.secret, app_totp.last_step)).await,
        invalid_or_expired(),
        "the step the enrolment took"
    );
    assert_eq!(
        remove("zzzzz-zzzzz".into()).await,
        invalid_or_expired(),
        "not one of the account's recovery codes"
    );
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(true, 10));

    assert_eq!(
        remove(codes[4].clone()).await,
        (
            200,
            json!({"message": "Two-factor authentication disabled"})
        )
    );
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(false, 0));
    mails_with_subject(&app, &email, TOTP_DISABLED, 1).await;
    mails_with_subject(&app, &email, RECOVERY_CODE_USED, 1).await;

    // The password alone signs in again.
    login_token(&app, "erik", PASSWORD).await;
    assert_eq!(
        remove(codes[5].clone()).await,
        (
            404,
            json!({"error": "Two-factor authentication is not enabled", "code": "totp_not_enabled"})
        )
    );
    let (status, body) = authed_json(&app, Method::POST, "/mfa/recovery-codes", &token, None).await;
    assert_eq!(status, 409, "no second factor to stand in for: {body}");
    assert_audited(
        &audit_events(&app, "erik"),
        &["totp_enabled", "totp_disabled", "recovery_code_used"],
    );
}

#[tokio::test]
async fn new_recovery_codes_replace_the_old_ones() {
    let app = TestApp::spawn().await;
    let email = register(&app, "fiona").await;
    let token = login_token(&app, "fiona", PASSWORD).await;
    let (_, old) = enable_totp(&app, &token).await;

    let (status, body) = authed_json(&app, Method::POST, "/mfa/recovery-codes", &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Recovery codes replaced", "{body}");
    let new = recovery_codes(&body);
    assert!(new.iter().all(|c| !old.contains(c)), "{old:?} {new:?}");
    mails_with_subject(&app, &email, NEW_RECOVERY_CODES, 1).await;
    assert_eq!(me(&app, &token).await["mfa"], mfa_summary(true, 10));

    // An old code no longer signs in; a new one does, once.
    let mfa = mfa_token(&app, "fiona", PASSWORD).await;
    assert_eq!(
        second_factor_json(&app, &mfa, "recovery_code", &old[0]).await,
        invalid_second_factor()
    );
    let session = opened(second_factor(&app, &mfa, "recovery_code", &new[0]).await).await;
    assert_eq!(me(&app, &session).await["mfa"], mfa_summary(true, 9));
    let mfa = mfa_token(&app, "fiona", PASSWORD).await;
    assert_eq!(
        second_factor_json(&app, &mfa, "recovery_code", &new[0]).await,
        invalid_second_factor()
    );
    mails_with_subject(&app, &email, RECOVERY_CODE_USED, 1).await;

    // An account without a second factor has nothing for recovery codes to stand in for.
    register(&app, "gus").await;
    let other = login_token(&app, "gus", PASSWORD).await;
    let (status, body) = authed_json(&app, Method::POST, "/mfa/recovery-codes", &other, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(me(&app, &other).await["mfa"], mfa_summary(false, 0));
    assert_audited(
        &audit_events(&app, "fiona"),
        &["recovery_codes_replaced", "recovery_code_used"],
    );
}

// ---------------------------------------------------------------------------------------
// Sessions, and the operator
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sessions_show_their_assurance_level() {
    let app = TestApp::spawn().await;
    register(&app, "hana").await;
    let confirming = login_token(&app, "hana", PASSWORD).await;
    let bystander = login_token(&app, "hana", PASSWORD).await;
    for session in sessions(&app, &confirming).await {
        assert_eq!(session["aal"], "aal1", "{session}");
        authenticated_at(&session);
    }

    let (mut app_totp, _) = enable_totp(&app, &confirming).await;
    let code = app_totp.next_code().await;
    let second_step = login_with(&app, "hana", "totp", &code).await;

    let list = sessions(&app, &second_step).await;
    assert_eq!(list.len(), 3, "{list:?}");
    for session in &list {
        authenticated_at(session);
    }
    for (token, aal) in [
        (&confirming, "aal2"),
        (&bystander, "aal1"),
        (&second_step, "aal2"),
    ] {
        let own = current_session(&app, token).await;
        assert_eq!(own["aal"], aal, "{own}");
        // Another session of the account's sees it the same.
        let seen = list
            .iter()
            .find(|s| s["id"] == own["id"])
            .unwrap_or_else(|| panic!("{own} missing from {list:?}"));
        assert_eq!(seen["aal"], aal, "{seen}");
    }
}

#[tokio::test]
async fn an_operator_reset_of_mfa_ends_sessions_and_lets_the_password_alone_sign_in() {
    let app = TestApp::spawn().await;
    let email = register(&app, "ivo").await;
    let token = login_token(&app, "ivo", PASSWORD).await;
    let (mut app_totp, _) = enable_totp(&app, &token).await;
    let code = app_totp.next_code().await;
    let second = login_with(&app, "ivo", "totp", &code).await;

    let refused = cli(&app, &["user", "reset-mfa", "nobody"]);
    assert!(!refused.status.success(), "an unknown user is an error");
    cli_ok(&app, &["user", "reset-mfa", "ivo"]);

    assert_eq!(me_status(&app, &token).await, 401);
    assert_eq!(me_status(&app, &second).await, 401);
    // The notice the command queued is sent by the server's outbox worker.
    mails_with_subject(&app, &email, FACTORS_RESET, 1).await;
    let session = login_token(&app, "ivo", PASSWORD).await;
    assert_eq!(me(&app, &session).await["mfa"], mfa_summary(false, 0));
    assert_eq!(current_session(&app, &session).await["aal"], "aal1");
    // And a second factor can be set up again.
    let (status, body) = authed_json(&app, Method::POST, "/mfa/totp/setup", &session, None).await;
    assert_eq!(status, 200, "{body}");
    assert_audited(&audit_events(&app, "ivo"), &["mfa_reset"]);
}
