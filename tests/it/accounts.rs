//! Black-box tests of the self-service account features: proving an email or phone with a
//! code, changing the password, email and phone, the session list and its revocations,
//! deleting the account, REQUIRE_VERIFIED_EMAIL, and the admin commands and audit events
//! that go with them. Codes are read from what the SMTP sink and the Twilio mock received,
//! exactly as a user would read them.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::common::{
    audit_events, authed, authed_json, cli, cli_ok, extract_code, json, me, session_cookie,
    set_cookie_header, TestApp, DELIVERY_TIMEOUT,
};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";
const NOT_LOGGED_IN: &str = "Not logged in, or the session has expired";

/// The harness raises every rate limit it knows of; these are the ones the account
/// features added, raised the same way so no test here trips over one.
const GENEROUS_LIMITS: [(&str, &str); 6] = [
    ("RATE_SEND_VERIFICATION_PER_ACCOUNT", "100000/1m"),
    ("RATE_SEND_VERIFICATION_PER_IP", "100000/1m"),
    ("RATE_VERIFY_PER_ACCOUNT", "100000/1m"),
    ("RATE_VERIFY_PER_IP", "100000/1m"),
    ("RATE_ACCOUNT_PER_USER", "100000/1m"),
    ("RATE_ACCOUNT_PER_IP", "100000/1m"),
];

/// Mail subjects and the SMS wording the contract fixes.
const VERIFY_EMAIL: &str = "Verify your email address";
const RESET_CODE: &str = "Your password reset code";
const PHONE_VERIFICATION: &str = "confirm that this phone number belongs";

async fn spawn() -> TestApp {
    spawn_with(&[]).await
}

async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
    let mut env = GENEROUS_LIMITS.to_vec();
    env.extend_from_slice(overrides);
    TestApp::spawn_with(&env).await
}

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
    assert_eq!(resp.status(), 200, "login as {identifier}");
    let token = session_cookie(&resp).expect("a session cookie");
    assert_eq!(json(resp).await.1, json!({"message": "Login successful"}));
    token
}

/// Logs in with a `User-Agent` of the caller's choosing.
async fn login_as_agent(app: &TestApp, identifier: &str, agent: &str) -> String {
    let req = app
        .request(Method::POST, "/login")
        .header("user-agent", agent)
        .json(&json!({"identifier": identifier, "password": PASSWORD}));
    let resp = app.send(req, "POST /login").await;
    assert_eq!(resp.status(), 200);
    session_cookie(&resp).expect("a session cookie")
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

async fn verify(app: &TestApp, identifier: &str, otp: &str, channel: Option<&str>) -> (u16, Value) {
    let mut body = json!({"identifier": identifier, "otp": otp});
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    json(app.post_json("/verify", &body).await).await
}

async fn send_verification(app: &TestApp, identifier: &str, channel: Option<&str>) -> (u16, Value) {
    let mut body = json!({"identifier": identifier});
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    json(app.post_json("/send-verification", &body).await).await
}

/// POST /change-password with the session `token`; the response, unread.
async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
    sign_out_others: Option<bool>,
) -> reqwest::Response {
    let mut body = json!({"current_password": current, "new_password": new});
    if let Some(sign_out) = sign_out_others {
        body["sign_out_other_sessions"] = json!(sign_out);
    }
    authed(app, Method::POST, "/change-password", token, Some(body)).await
}

/// A successful password change: returns the session's new token.
async fn rotate_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
    sign_out_others: Option<bool>,
) -> String {
    let resp = change_password(app, token, current, new, sign_out_others).await;
    let fresh = session_cookie(&resp);
    let (status, body) = json(resp).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Password changed"}))
    );
    let fresh = fresh.expect("a new session cookie");
    assert_ne!(fresh, token, "the session gets a new token");
    fresh
}

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

/// The code in a code message, which starts "Your one-time code is NNNNNN.".
fn code_in(text: &str) -> String {
    let code = extract_code(text);
    assert!(
        text.trim_start()
            .starts_with(&format!("Your one-time code is {code}.")),
        "a code message starts with the code:\n{text}"
    );
    code
}

/// The code of the latest mail to `to` with `subject`, once at least `n` have come.
async fn code_by_mail(app: &TestApp, to: &str, subject: &str, n: usize) -> String {
    let texts = mails_with_subject(app, to, subject, n).await;
    code_in(texts.last().expect("at least one mail"))
}

/// The bodies of the SMS to `to` that contain `needle`, once at least `n` have come.
async fn texts_containing(app: &TestApp, to: &str, needle: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let bodies: Vec<String> = app
            .twilio
            .all_messages_to(to)
            .into_iter()
            .map(|m| m.body)
            .filter(|b| b.contains(needle))
            .collect();
        if bodies.len() >= n {
            return bodies;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} SMS to {to} containing {needle:?} within {DELIVERY_TIMEOUT:?}; \
             got {:?}",
            app.twilio.all_messages_to(to)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The code of the latest SMS to `to` containing `needle`, once at least `n` have come.
async fn code_by_sms(app: &TestApp, to: &str, needle: &str, n: usize) -> String {
    let bodies = texts_containing(app, to, needle, n).await;
    code_in(bodies.last().expect("at least one SMS"))
}

/// Gives anything still queued time to be delivered, before asserting it was not sent.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A code that is not `code`.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
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

/// The `id` of the current session in `token`'s list.
async fn current_session_id(app: &TestApp, token: &str) -> String {
    let list = sessions(app, token).await;
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list:?}");
    current[0]["id"].as_str().expect("an id").to_owned()
}

// ---------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn registration_sends_a_code_that_verifies_the_email_and_me_shows_it() {
    let app = spawn().await;
    let email = register(&app, "alice", None).await;
    let token = login_token(&app, "alice", PASSWORD).await;
    let before = me(&app, &token).await;
    assert_eq!(
        (&before["email_verified"], &before["phone_verified"]),
        (&json!(false), &json!(false)),
        "{before}"
    );

    let code = code_by_mail(&app, &email, VERIFY_EMAIL, 1).await;
    let (status, body) = verify(&app, &email, &wrong(&code), None).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired code", "code": "invalid_code"})
        )
    );
    let (status, body) = verify(&app, &email, &code, None).await;
    assert_eq!((status, body), (200, json!({"message": "Verified"})));

    let after = me(&app, &token).await;
    assert_eq!(after["email_verified"], true, "{after}");
    assert_eq!(after["phone_verified"], false, "{after}");
    // A code works once.
    let (status, body) = verify(&app, "alice", &code, Some("email")).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired code", "code": "invalid_code"})
        )
    );
    // No phone, no SMS.
    assert!(app.twilio.all_messages().is_empty());
}

#[tokio::test]
async fn a_texted_code_verifies_the_phone() {
    let app = spawn().await;
    let phone = "+14155550121";
    let email = register(&app, "bob", Some(phone)).await;
    let token = login_token(&app, "bob", PASSWORD).await;

    let sms = texts_containing(&app, phone, PHONE_VERIFICATION, 1).await;
    let code = code_in(&sms[0]);
    let email_code = code_by_mail(&app, &email, VERIFY_EMAIL, 1).await;

    // The texted code proves the phone, not the email.
    if code != email_code {
        let (status, _) = verify(&app, &email, &code, None).await;
        assert_eq!(status, 400);
    }
    let (status, body) = verify(&app, phone, &code, None).await;
    assert_eq!((status, body), (200, json!({"message": "Verified"})));
    let body = me(&app, &token).await;
    assert_eq!(body["phone_verified"], true, "{body}");
    assert_eq!(body["email_verified"], false, "{body}");
    assert_eq!(body["phone"], phone);

    // The email's own code still proves the email.
    let (status, _) = verify(&app, &email, &email_code, None).await;
    assert_eq!(status, 200);
    assert_eq!(me(&app, &token).await["email_verified"], true);
}

#[tokio::test]
async fn send_verification_answers_alike_for_unknown_and_verified_accounts() {
    let app = spawn().await;
    let verified = register(&app, "carol", None).await;
    let code = code_by_mail(&app, &verified, VERIFY_EMAIL, 1).await;
    assert_eq!(verify(&app, &verified, &code, None).await.0, 200);
    let phone = "+14155550122";
    let pending = register(&app, "dave", Some(phone)).await;
    mails_with_subject(&app, &pending, VERIFY_EMAIL, 1).await;
    texts_containing(&app, phone, PHONE_VERIFICATION, 1).await;

    let sent = (200, json!({"message": "Verification code sent"}));
    assert_eq!(send_verification(&app, &verified, None).await, sent);
    assert_eq!(send_verification(&app, "carol", Some("email")).await, sent);
    assert_eq!(
        send_verification(&app, "nobody@example.com", None).await,
        sent
    );
    assert_eq!(send_verification(&app, "+14155550199", None).await, sent);
    assert_eq!(send_verification(&app, "nobody", Some("sms")).await, sent);

    // The unverified account gets a fresh code on the channel asked for; by default the
    // identifier's kind decides (a phone number means SMS). One at a time, so the last
    // one to arrive is the live one.
    assert_eq!(send_verification(&app, &pending, None).await, sent);
    let fresh = code_by_mail(&app, &pending, VERIFY_EMAIL, 2).await;
    assert_eq!(send_verification(&app, phone, None).await, sent);
    texts_containing(&app, phone, PHONE_VERIFICATION, 2).await;
    assert_eq!(send_verification(&app, &pending, Some("sms")).await, sent);
    let texted = code_by_sms(&app, phone, PHONE_VERIFICATION, 3).await;
    settle().await;
    assert_eq!(count_with_subject(&app, &pending, VERIFY_EMAIL), 2);
    assert_eq!(
        texts_containing(&app, phone, PHONE_VERIFICATION, 3)
            .await
            .len(),
        3
    );
    // Nothing for the verified one, nothing for strangers.
    assert_eq!(count_with_subject(&app, &verified, VERIFY_EMAIL), 1);
    assert!(app.smtp.all_messages_to("nobody@example.com").is_empty());
    assert!(app.twilio.all_messages_to("+14155550199").is_empty());

    assert_eq!(verify(&app, &pending, &fresh, None).await.0, 200);
    assert_eq!(verify(&app, phone, &texted, None).await.0, 200);
}

#[tokio::test]
async fn a_reset_code_cannot_verify() {
    let app = spawn().await;
    let email = register(&app, "erin", None).await;
    let verification = code_by_mail(&app, &email, VERIFY_EMAIL, 1).await;
    let (status, _) = json(app.forgot(&email).await).await;
    assert_eq!(status, 200);
    let reset = code_by_mail(&app, &email, RESET_CODE, 1).await;

    if reset != verification {
        let (status, body) = verify(&app, &email, &reset, None).await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"error": "Invalid or expired code", "code": "invalid_code"})
            )
        );
        let (status, _) = verify(&app, "erin", &reset, Some("email")).await;
        assert_eq!(status, 400);
    }
    let token = login_token(&app, "erin", PASSWORD).await;
    assert_eq!(me(&app, &token).await["email_verified"], false);
    // Refused there, the reset code is still good for what it is for.
    let (status, body) = json(app.validate(&email, &reset).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_verification_code_cannot_reset() {
    let app = spawn().await;
    let email = register(&app, "frank", None).await;
    let verification = code_by_mail(&app, &email, VERIFY_EMAIL, 1).await;

    // With no recovery code outstanding…
    let (status, body) = json(app.validate(&email, &verification).await).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired OTP", "code": "invalid_otp"})
        )
    );
    // …and with one.
    assert_eq!(app.forgot(&email).await.status(), 200);
    let reset = code_by_mail(&app, &email, RESET_CODE, 1).await;
    if reset != verification {
        let (status, body) = json(app.validate("frank", &verification).await).await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"error": "Invalid or expired OTP", "code": "invalid_otp"})
            )
        );
    }
    // Refused there, the verification code still verifies.
    let (status, body) = verify(&app, &email, &verification, None).await;
    assert_eq!((status, body), (200, json!({"message": "Verified"})));
}

#[tokio::test]
async fn a_reset_by_emailed_code_verifies_the_email() {
    let app = spawn().await;
    let email = register(&app, "grace", Some("+14155550123")).await;
    let token = login_token(&app, "grace", PASSWORD).await;
    assert_eq!(me(&app, &token).await["email_verified"], false);

    assert_eq!(app.forgot(&email).await.status(), 200);
    let code = code_by_mail(&app, &email, RESET_CODE, 1).await;
    let (status, body) = json(app.validate(&email, &code).await).await;
    assert_eq!(status, 200, "{body}");
    let reset = body["reset_token"].as_str().expect("reset_token");
    let (status, _) = json(app.reset(&email, NEW_PASSWORD, Some(reset)).await).await;
    assert_eq!(status, 200);

    let token = login_token(&app, "grace", NEW_PASSWORD).await;
    let body = me(&app, &token).await;
    assert_eq!(body["email_verified"], true, "{body}");
    assert_eq!(
        body["phone_verified"], false,
        "an emailed code proves no phone: {body}"
    );
}

// ---------------------------------------------------------------------------------------
// Changing the password
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn change_password_keeps_the_caller_and_drops_the_others() {
    let app = spawn().await;
    let email = register(&app, "heidi", None).await;
    let caller = login_token(&app, "heidi", PASSWORD).await;
    let other = login_token(&app, "heidi", PASSWORD).await;

    let fresh = rotate_password(&app, &caller, PASSWORD, NEW_PASSWORD, None).await;
    assert_eq!(me_status(&app, &fresh).await, 200);
    assert_eq!(
        me_status(&app, &other).await,
        401,
        "other sessions end by default"
    );
    assert_eq!(me_status(&app, &caller).await, 401);
    assert_eq!(sessions(&app, &fresh).await.len(), 1);

    assert_eq!(app.login("heidi", PASSWORD).await.status(), 401);
    login_token(&app, &email, NEW_PASSWORD).await;
    mails_with_subject(&app, &email, "Your password was changed", 1).await;
}

#[tokio::test]
async fn the_old_token_stops_working_after_rotation() {
    let app = spawn().await;
    register(&app, "ivan", None).await;
    let first = login_token(&app, "ivan", PASSWORD).await;

    // The session cookie works as well as the bearer header.
    let req = app
        .request(Method::POST, "/change-password")
        .header("cookie", format!("session={first}"))
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}));
    let resp = app.send(req, "POST /change-password").await;
    let cookie = set_cookie_header(&resp, "session").expect("a new session cookie");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let second = session_cookie(&resp).unwrap();
    assert_eq!(
        json(resp).await,
        (200, json!({"message": "Password changed"}))
    );
    assert_ne!(second, first);

    assert_eq!(me_status(&app, &first).await, 401);
    let (status, body) = authed_json(&app, Method::GET, "/sessions", &first, None).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": NOT_LOGGED_IN, "code": "not_logged_in"})
        )
    );
    let (status, _) =
        json(change_password(&app, &first, NEW_PASSWORD, "yet another passphrase", None).await)
            .await;
    assert_eq!(status, 401, "the old token changes nothing");
    assert_eq!(me_status(&app, &second).await, 200);

    // The new token rotates in turn.
    let third = rotate_password(&app, &second, NEW_PASSWORD, "yet another passphrase", None).await;
    assert_eq!(me_status(&app, &second).await, 401);
    assert_eq!(me_status(&app, &third).await, 200);
    assert_eq!(me(&app, &third).await["username"], "ivan");
    login_token(&app, "ivan", "yet another passphrase").await;
}

#[tokio::test]
async fn change_password_can_keep_other_sessions() {
    let app = spawn().await;
    register(&app, "judy", None).await;
    let caller = login_token(&app, "judy", PASSWORD).await;
    let other = login_token(&app, "judy", PASSWORD).await;

    let fresh = rotate_password(&app, &caller, PASSWORD, NEW_PASSWORD, Some(false)).await;
    assert_eq!(me_status(&app, &other).await, 200, "kept, as asked");
    assert_eq!(me_status(&app, &fresh).await, 200);
    assert_eq!(
        me_status(&app, &caller).await,
        401,
        "the caller's old token still ends"
    );
    assert_eq!(sessions(&app, &fresh).await.len(), 2);
    assert_eq!(app.login("judy", PASSWORD).await.status(), 401);
    login_token(&app, "judy", NEW_PASSWORD).await;
}

#[tokio::test]
async fn a_wrong_current_password_is_refused_and_changes_nothing() {
    let app = spawn().await;
    let phone = "+14155550124";
    let email = register(&app, "ken", Some(phone)).await;
    let token = login_token(&app, "ken", PASSWORD).await;
    let other = login_token(&app, "ken", PASSWORD).await;
    let refused = (
        401,
        json!({"error": "Invalid credentials", "code": "invalid_credentials"}),
    );

    let resp = change_password(&app, &token, "not my password", NEW_PASSWORD, None).await;
    assert!(
        session_cookie(&resp).is_none(),
        "no new session on a refusal"
    );
    assert_eq!(json(resp).await, refused);
    let attempts = [
        (
            "/change-email",
            json!({"new_email": "ken2@example.com", "current_password": "not my password"}),
        ),
        (
            "/change-phone",
            json!({"new_phone": "+14155550125", "current_password": "not my password"}),
        ),
        (
            "/change-phone",
            json!({"new_phone": null, "current_password": "not my password"}),
        ),
    ];
    for (path, body) in attempts {
        let got = authed_json(&app, Method::POST, path, &token, Some(body)).await;
        assert_eq!(got, refused, "{path}");
    }
    let got = authed_json(
        &app,
        Method::DELETE,
        "/me",
        &token,
        Some(json!({"current_password": "not my password"})),
    )
    .await;
    assert_eq!(got, refused, "DELETE /me");

    // A new password under the registration policy is refused too.
    let (status, body) =
        json(change_password(&app, &token, PASSWORD, "password", None).await).await;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"].as_str().expect("an error");
    assert!(msg.contains("new_password"), "{msg}");

    // Nothing changed.
    assert_eq!(me_status(&app, &token).await, 200);
    assert_eq!(me_status(&app, &other).await, 200);
    let body = me(&app, &token).await;
    assert_eq!(
        (body["email"].as_str(), body["phone"].as_str()),
        (Some(email.as_str()), Some(phone))
    );
    assert_eq!(app.login("ken", NEW_PASSWORD).await.status(), 401);
    assert_eq!(app.login("ken", "password").await.status(), 401);
    login_token(&app, "ken", PASSWORD).await;
    settle().await;
    assert_eq!(
        count_with_subject(&app, &email, "Your password was changed"),
        0
    );
    assert!(app.smtp.all_messages_to("ken2@example.com").is_empty());
    assert!(app.twilio.all_messages_to("+14155550125").is_empty());
}

// ---------------------------------------------------------------------------------------
// Changing the email and the phone
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn email_change_needs_the_code_from_the_new_address_and_notifies_the_old_one() {
    let app = spawn().await;
    let old = register(&app, "leo", None).await;
    let new = "newleo@example.com";
    let token = login_token(&app, "leo", PASSWORD).await;

    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/change-email",
        &token,
        Some(json!({"new_email": new, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Verification code sent"}))
    );
    let code = code_by_mail(&app, new, "Confirm your new email address", 1).await;
    assert_eq!(
        me(&app, &token).await["email"],
        old,
        "nothing changes before the code"
    );
    assert_eq!(
        count_with_subject(&app, &old, "Confirm your new email address"),
        0
    );

    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/confirm-email-change",
        &token,
        Some(json!({"otp": wrong(&code)})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Invalid or expired code", "code": "invalid_code"})
        )
    );
    assert_eq!(me(&app, &token).await["email"], old);

    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/confirm-email-change",
        &token,
        Some(json!({"otp": code})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"message": "Email changed"})));
    let body = me(&app, &token).await;
    assert_eq!(body["email"], new, "{body}");
    assert_eq!(body["email_verified"], true, "{body}");

    let notice = mails_with_subject(&app, &old, "Your email address was changed", 1).await;
    assert!(notice[0].contains("n***@example.com"), "{}", notice[0]);
    assert!(
        !notice[0].contains(new),
        "the new address is masked:\n{}",
        notice[0]
    );

    login_token(&app, new, PASSWORD).await;
    assert_eq!(app.login(&old, PASSWORD).await.status(), 401);
    // The code is used up.
    let (status, _) = authed_json(
        &app,
        Method::POST,
        "/confirm-email-change",
        &token,
        Some(json!({"otp": code})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_email_change_to_a_taken_address_answers_alike_and_tells_its_owner() {
    let app = spawn().await;
    let mine = register(&app, "mallory", None).await;
    let taken = register(&app, "nina", None).await;
    let token = login_token(&app, "mallory", PASSWORD).await;

    let to_taken = authed_json(
        &app,
        Method::POST,
        "/change-email",
        &token,
        Some(json!({"new_email": taken, "current_password": PASSWORD})),
    )
    .await;
    let to_free = authed_json(
        &app,
        Method::POST,
        "/change-email",
        &token,
        Some(json!({"new_email": "free@example.com", "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(
        to_taken,
        (200, json!({"message": "Verification code sent"}))
    );
    assert_eq!(to_taken, to_free);

    let notice = mails_with_subject(&app, &taken, "Someone tried to use your address", 1).await;
    assert!(
        !notice[0].contains("mallory"),
        "the notice does not name who tried:\n{}",
        notice[0]
    );
    mails_with_subject(
        &app,
        "free@example.com",
        "Confirm your new email address",
        1,
    )
    .await;
    settle().await;
    assert_eq!(
        count_with_subject(&app, &taken, "Confirm your new email address"),
        0
    );
    assert_eq!(me(&app, &token).await["email"], mine);
    // The other account is untouched.
    let theirs = login_token(&app, "nina", PASSWORD).await;
    assert_eq!(me(&app, &theirs).await["email"], taken);
}

#[tokio::test]
async fn phone_change_and_removal() {
    let app = spawn().await;
    let old_phone = "+14155550126";
    let new_phone = "+14155550127";
    let email = register(&app, "oscar", Some(old_phone)).await;
    let token = login_token(&app, "oscar", PASSWORD).await;

    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/change-phone",
        &token,
        Some(json!({"current_password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Missing field: new_phone", "code": "bad_request"})
        )
    );

    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/change-phone",
        &token,
        Some(json!({"new_phone": new_phone, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Verification code sent"}))
    );
    let code = code_by_sms(&app, new_phone, "Your one-time code is", 1).await;
    assert_eq!(
        me(&app, &token).await["phone"],
        old_phone,
        "nothing changes before the code"
    );

    let confirm = |otp: String| {
        authed_json(
            &app,
            Method::POST,
            "/confirm-phone-change",
            &token,
            Some(json!({"otp": otp})),
        )
    };
    assert_eq!(
        confirm(wrong(&code)).await,
        (
            400,
            json!({"error": "Invalid or expired code", "code": "invalid_code"})
        )
    );
    assert_eq!(
        confirm(code.clone()).await,
        (200, json!({"message": "Phone changed"}))
    );
    let body = me(&app, &token).await;
    assert_eq!(body["phone"], new_phone, "{body}");
    assert_eq!(body["phone_verified"], true, "{body}");
    login_token(&app, new_phone, PASSWORD).await;
    assert_eq!(app.login(old_phone, PASSWORD).await.status(), 401);

    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/change-phone",
        &token,
        Some(json!({"new_phone": null, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"message": "Phone removed"})));
    let body = me(&app, &token).await;
    assert_eq!(body["phone"], Value::Null, "{body}");
    assert_eq!(body["phone_verified"], false, "{body}");
    mails_with_subject(&app, &email, "Your phone number was removed", 1).await;
    assert_eq!(app.login(new_phone, PASSWORD).await.status(), 401);
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sessions_list_marks_the_current_one_and_hides_tokens() {
    let app = spawn().await;
    register(&app, "peggy", None).await;
    let older = login_as_agent(&app, "peggy", "first-agent/1.0").await;
    // Times are to the second: a second apart, newest first is well defined.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newer = login_as_agent(&app, "peggy", "second-agent/2.0").await;

    let list = sessions(&app, &newer).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        list[0]["user_agent"], "second-agent/2.0",
        "newest first: {list:?}"
    );
    assert_eq!(list[1]["user_agent"], "first-agent/1.0", "{list:?}");
    assert_eq!(
        (&list[0]["current"], &list[1]["current"]),
        (&json!(true), &json!(false))
    );
    let tokens = [&older, &newer];
    let hashes: Vec<String> = tokens
        .iter()
        .map(|t| hex::encode(sha2::Sha256::digest(t.as_bytes())))
        .collect();
    for s in &list {
        assert_eq!(s["ip"], "127.0.0.1", "{s}");
        for field in ["created_at", "last_seen_at", "expires_at"] {
            assert!(s[field].is_string(), "{field}: {s}");
        }
        assert!(s["expires_at"].as_str() > s["created_at"].as_str(), "{s}");
        let id = s["id"].as_str().expect("an id");
        assert!(!id.is_empty());
        for secret in tokens
            .iter()
            .map(|t| t.as_str())
            .chain(hashes.iter().map(String::as_str))
        {
            assert!(
                !id.contains(secret) && !secret.contains(id),
                "the id {id} gives away a token"
            );
        }
    }
    assert_ne!(list[0]["id"], list[1]["id"]);

    // From the other session, the other one is current.
    let seen_from_older = sessions(&app, &older).await;
    let current: Vec<&Value> = seen_from_older
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "{seen_from_older:?}");
    assert_eq!(current[0]["id"], list[1]["id"]);
    assert_eq!(current[0]["user_agent"], "first-agent/1.0");
}

#[tokio::test]
async fn another_users_session_id_is_404_like_an_unknown_one() {
    let app = spawn().await;
    register(&app, "quinn", None).await;
    register(&app, "rupert", None).await;
    let mine = login_token(&app, "quinn", PASSWORD).await;
    let my_other = login_token(&app, "quinn", PASSWORD).await;
    let theirs = login_token(&app, "rupert", PASSWORD).await;
    let their_id = current_session_id(&app, &theirs).await;

    let not_found = (
        404,
        json!({"error": "Session not found", "code": "session_not_found"}),
    );
    let path = format!("/sessions/{their_id}");
    assert_eq!(
        authed_json(&app, Method::DELETE, &path, &mine, None).await,
        not_found
    );
    let made_up = authed_json(
        &app,
        Method::DELETE,
        "/sessions/AAAAAAAAAAAAAAAAAAAAAA",
        &mine,
        None,
    )
    .await;
    assert_eq!(made_up, not_found);
    assert_eq!(
        me_status(&app, &theirs).await,
        200,
        "their session lives on"
    );

    // One's own is revoked.
    let my_other_id = current_session_id(&app, &my_other).await;
    let path = format!("/sessions/{my_other_id}");
    assert_eq!(
        authed_json(&app, Method::DELETE, &path, &mine, None).await,
        (200, json!({"message": "Session revoked"}))
    );
    assert_eq!(me_status(&app, &my_other).await, 401);
    assert_eq!(me_status(&app, &mine).await, 200);
    assert_eq!(
        authed_json(&app, Method::DELETE, &path, &mine, None).await,
        not_found
    );
    assert_eq!(me_status(&app, &theirs).await, 200);
}

#[tokio::test]
async fn deleting_other_sessions_keeps_the_caller() {
    let app = spawn().await;
    register(&app, "sybil", None).await;
    register(&app, "trent", None).await;
    let caller = login_token(&app, "sybil", PASSWORD).await;
    let others = [
        login_token(&app, "sybil", PASSWORD).await,
        login_token(&app, "sybil@example.com", PASSWORD).await,
    ];
    let stranger = login_token(&app, "trent", PASSWORD).await;

    assert_eq!(
        authed_json(&app, Method::DELETE, "/sessions", &caller, None).await,
        (
            200,
            json!({"message": "Other sessions revoked", "revoked": 2})
        )
    );
    assert_eq!(me_status(&app, &caller).await, 200);
    for other in &others {
        assert_eq!(me_status(&app, other).await, 401);
    }
    assert_eq!(
        me_status(&app, &stranger).await,
        200,
        "another account's session lives on"
    );
    let list = sessions(&app, &caller).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["current"], true);
    assert_eq!(
        authed_json(&app, Method::DELETE, "/sessions", &caller, None).await,
        (
            200,
            json!({"message": "Other sessions revoked", "revoked": 0})
        )
    );
}

// ---------------------------------------------------------------------------------------
// Deleting the account
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_deleted_accounts_identifiers_can_be_registered_again_and_its_old_session_is_dead() {
    let app = spawn().await;
    let phone = "+14155550128";
    let email = register(&app, "victor", Some(phone)).await;
    let token = login_token(&app, "victor", PASSWORD).await;
    let other = login_token(&app, phone, PASSWORD).await;
    let old_id = me(&app, &token).await["id"].clone();

    let resp = authed(
        &app,
        Method::DELETE,
        "/me",
        &token,
        Some(json!({"current_password": PASSWORD})),
    )
    .await;
    let cookie = set_cookie_header(&resp, "session").expect("the session cookie is cleared");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(
        json(resp).await,
        (200, json!({"message": "Account deleted"}))
    );

    assert_eq!(me_status(&app, &token).await, 401);
    assert_eq!(me_status(&app, &other).await, 401);
    for identifier in ["victor", email.as_str(), phone] {
        let (status, body) = json(app.login(identifier, PASSWORD).await).await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": "Invalid credentials", "code": "invalid_credentials"})
            ),
            "{identifier}"
        );
    }
    mails_with_subject(&app, &email, "Your account was deleted", 1).await;

    // Username, email and phone are free again.
    let (status, body) = json(
        app.register("victor", &email, Some(phone), NEW_PASSWORD)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        me_status(&app, &token).await,
        401,
        "the old session stays dead"
    );
    assert_eq!(app.login("victor", PASSWORD).await.status(), 401);
    let fresh = login_token(&app, phone, NEW_PASSWORD).await;
    let body = me(&app, &fresh).await;
    assert_ne!(body["id"], old_id, "a new account: {body}");
    assert_eq!(body["email_verified"], false, "{body}");
}

// ---------------------------------------------------------------------------------------
// REQUIRE_VERIFIED_EMAIL
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn registration_with_a_taken_email_under_require_verified_email_answers_like_a_new_one() {
    let app = spawn_with(&[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    let email = register(&app, "walter", None).await;
    let (status, body) = json(app.register("someone", &email, None, PASSWORD).await).await;
    assert_eq!(
        (status, body),
        (201, json!({"message": "User registered successfully"}))
    );
    mails_with_subject(
        &app,
        &email,
        "Someone tried to sign up with your address",
        1,
    )
    .await;
    // No second account was made.
    assert_eq!(app.login("someone", PASSWORD).await.status(), 401);

    // A taken username is still taken.
    let (status, body) = json(
        app.register("walter", "walter2@example.com", None, PASSWORD)
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            409,
            json!({"error": "User already exists", "code": "user_exists"})
        )
    );
}

#[tokio::test]
async fn without_require_verified_email_a_taken_email_is_still_409() {
    let app = spawn().await;
    let email = register(&app, "xavier", None).await;
    let (status, body) = json(app.register("someone", &email, None, PASSWORD).await).await;
    assert_eq!(
        (status, body),
        (
            409,
            json!({"error": "User already exists", "code": "user_exists"})
        )
    );
    // And an unverified email does not stop a login.
    login_token(&app, "xavier", PASSWORD).await;
}

#[tokio::test]
async fn login_with_an_unverified_email_under_require_verified_email_is_403_and_sends_a_code() {
    let app = spawn_with(&[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    let email = register(&app, "yvonne", None).await;
    mails_with_subject(&app, &email, VERIFY_EMAIL, 1).await;

    let resp = app.login("yvonne", PASSWORD).await;
    assert!(
        session_cookie(&resp).is_none(),
        "no session for an unverified email"
    );
    assert_eq!(
        json(resp).await,
        (
            403,
            json!({"error": "Email address not verified", "code": "email_not_verified"})
        )
    );
    let code = code_by_mail(&app, &email, VERIFY_EMAIL, 2).await;

    // A wrong password says nothing about verification.
    let (status, body) = json(app.login("yvonne", "wrong password!").await).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "Invalid credentials", "code": "invalid_credentials"})
        )
    );

    assert_eq!(
        verify(&app, &email, &code, None).await,
        (200, json!({"message": "Verified"}))
    );
    let token = login_token(&app, "yvonne", PASSWORD).await;
    assert_eq!(me(&app, &token).await["email_verified"], true);
}

// ---------------------------------------------------------------------------------------
// Sessions required
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn self_service_needs_a_session() {
    let app = spawn().await;
    register(&app, "zoe", None).await;
    let live = login_token(&app, "zoe", PASSWORD).await;
    let ended = login_token(&app, "zoe", PASSWORD).await;
    assert_eq!(app.logout(&ended).await.status(), 200);

    let password = json!({"current_password": PASSWORD});
    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/sessions", None),
        (Method::DELETE, "/sessions", None),
        (Method::DELETE, "/sessions/AAAAAAAAAAAAAAAAAAAAAA", None),
        (
            Method::POST,
            "/change-password",
            Some(json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
        ),
        (
            Method::POST,
            "/change-email",
            Some(json!({"new_email": "zoe2@example.com", "current_password": PASSWORD})),
        ),
        (
            Method::POST,
            "/confirm-email-change",
            Some(json!({"otp": "123456"})),
        ),
        (
            Method::POST,
            "/change-phone",
            Some(json!({"new_phone": "+14155550129", "current_password": PASSWORD})),
        ),
        (
            Method::POST,
            "/confirm-phone-change",
            Some(json!({"otp": "123456"})),
        ),
        (Method::DELETE, "/me", Some(password)),
    ];
    for (method, path, body) in &calls {
        for credential in [None, Some("garbage"), Some(ended.as_str())] {
            let mut req = app.request(method.clone(), path);
            if let Some(token) = credential {
                req = req.bearer_auth(token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let (status, got) = json(app.send(req, path).await).await;
            assert_eq!(
                (status, got),
                (
                    401,
                    json!({"error": NOT_LOGGED_IN, "code": "not_logged_in"})
                ),
                "{method} {path} with {credential:?}"
            );
        }
    }
    // Nothing was done by any of them.
    assert_eq!(me_status(&app, &live).await, 200);
    login_token(&app, "zoe", PASSWORD).await;
    let (status, _) = json(
        app.send(
            app.request(Method::GET, "/sessions")
                .header("cookie", format!("session={live}")),
            "GET /sessions by cookie",
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "a session cookie is a session");
}

// ---------------------------------------------------------------------------------------
// Audit trail and admin CLI
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_trail_records_password_changes_and_session_revocations() {
    let app = spawn().await;
    let email = register(&app, "amber", None).await;
    let code = code_by_mail(&app, &email, VERIFY_EMAIL, 1).await;
    assert_eq!(verify(&app, &email, &code, None).await.0, 200);
    let token = login_token(&app, "amber", PASSWORD).await;
    let second = login_token(&app, "amber", PASSWORD).await;
    login_token(&app, "amber", PASSWORD).await;

    let id = current_session_id(&app, &second).await;
    let path = format!("/sessions/{id}");
    assert_eq!(
        authed(&app, Method::DELETE, &path, &token, None)
            .await
            .status(),
        200
    );
    assert_eq!(
        authed(&app, Method::DELETE, "/sessions", &token, None)
            .await
            .status(),
        200
    );
    rotate_password(&app, &token, PASSWORD, NEW_PASSWORD, None).await;

    let names = audit_events(&app, &email);
    for expected in [
        "verification_requested",
        "email_verified",
        "session_revoked",
        "sessions_revoked",
        "password_changed",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn the_audit_trail_records_email_and_phone_changes() {
    let app = spawn().await;
    let phone = "+14155550130";
    register(&app, "bruce", Some(phone)).await;
    let token = login_token(&app, "bruce", PASSWORD).await;
    let texted = code_by_sms(&app, phone, PHONE_VERIFICATION, 1).await;
    assert_eq!(verify(&app, phone, &texted, None).await.0, 200);

    let new_email = "newbruce@example.com";
    let (status, _) = authed_json(
        &app,
        Method::POST,
        "/change-email",
        &token,
        Some(json!({"new_email": new_email, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);
    let code = code_by_mail(&app, new_email, "Confirm your new email address", 1).await;
    let (status, _) = authed_json(
        &app,
        Method::POST,
        "/confirm-email-change",
        &token,
        Some(json!({"otp": code})),
    )
    .await;
    assert_eq!(status, 200);

    let new_phone = "+14155550131";
    let (status, _) = authed_json(
        &app,
        Method::POST,
        "/change-phone",
        &token,
        Some(json!({"new_phone": new_phone, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);
    let code = code_by_sms(&app, new_phone, "Your one-time code is", 1).await;
    let (status, _) = authed_json(
        &app,
        Method::POST,
        "/confirm-phone-change",
        &token,
        Some(json!({"otp": code})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = authed_json(
        &app,
        Method::POST,
        "/change-phone",
        &token,
        Some(json!({"new_phone": null, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);

    let names = audit_events(&app, "bruce");
    for expected in [
        "verification_requested",
        "phone_verified",
        "email_change_requested",
        "email_changed",
        "phone_change_requested",
        "phone_changed",
        "phone_removed",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn the_admin_cli_verifies_and_deletes_users() {
    let app = spawn().await;
    let phone = "+14155550132";
    let email = register(&app, "chuck", Some(phone)).await;
    let token = login_token(&app, "chuck", PASSWORD).await;

    cli_ok(&app, &["user", "verify", &email]);
    let body = me(&app, &token).await;
    assert_eq!(
        (&body["email_verified"], &body["phone_verified"]),
        (&json!(true), &json!(false)),
        "{body}"
    );
    cli_ok(&app, &["user", "verify", "chuck", "--channel", "sms"]);
    assert_eq!(me(&app, &token).await["phone_verified"], true);

    let refused = cli(&app, &["user", "delete", "chuck"]);
    assert!(!refused.status.success(), "delete without --yes must fail");
    assert_eq!(me_status(&app, &token).await, 200, "and delete nothing");
    login_token(&app, "chuck", PASSWORD).await;

    cli_ok(&app, &["user", "delete", "chuck", "--yes"]);
    assert_eq!(me_status(&app, &token).await, 401);
    // The goodbye the command queued, sealed with the server's secret, is sent by the
    // server's outbox worker.
    app.smtp
        .wait_for_subject(&email, "Your account was deleted", DELIVERY_TIMEOUT)
        .await;
    assert_eq!(app.login("chuck", PASSWORD).await.status(), 401);
    let (status, body) = json(app.register("chuck", &email, Some(phone), PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
}
