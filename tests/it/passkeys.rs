//! Black-box tests of passkeys (WebAuthn): registering one on a signed-in account, using
//! it as the second step of a password login, signing in with it and no password, using
//! it to re-authenticate a session, and removing it; and the ways a ceremony must fail
//! (another account's credential, a replay, a made-up challenge, a wrong origin, no user
//! verification from a passkey registered with it). A passkey that cannot verify its user
//! registers too, and counts as possession alone. The browser and the authenticator are `common::authenticator`, a soft
//! passkey: the server is driven exactly as a browser would drive it.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::authenticator::{self, Credential, Knobs};
use crate::common::{authed_json, json, me, session_cookie, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";
const INVALID_CODE: &str = "Invalid code";
const ADDED: &str = "A passkey was added";
const REMOVED: &str = "A passkey was removed";

async fn spawn() -> TestApp {
    spawn_with(&[]).await
}

/// The harness raises every rate limit it knows of; the WebAuthn relying party is left at
/// its defaults (WEBAUTHN_RP_ID=localhost, WEBAUTHN_ORIGINS=http://localhost:8080), which
/// is what the soft passkey writes, whatever port the server really listens on.
async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(overrides).await
}

/// Registers `name` with `name@example.com`, asserting a 201; returns the email.
async fn register(app: &TestApp, name: &str) -> String {
    let email = format!("{name}@example.com");
    let (status, body) = json(app.register(name, &email, None, PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    email
}

/// A password login on an account without a second factor: the session token.
async fn login_token(app: &TestApp, identifier: &str, password: &str) -> String {
    let resp = app.login(identifier, password).await;
    assert_eq!(resp.status(), 200, "login as {identifier}");
    let token = session_cookie(&resp).expect("a session cookie");
    assert_eq!(json(resp).await.1, json!({"message": "Login successful"}));
    token
}

/// A password login on an account with a second factor: the `mfa_token` of its 401.
async fn mfa_token(app: &TestApp, identifier: &str) -> String {
    let resp = app.login(identifier, PASSWORD).await;
    assert!(
        session_cookie(&resp).is_none(),
        "no session before the second factor"
    );
    let (status, body) = json(resp).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["mfa_required"], json!(true), "{body}");
    body["mfa_token"]
        .as_str()
        .unwrap_or_else(|| panic!("an mfa_token in {body}"))
        .to_string()
}

/// The session `token` is, as GET /sessions lists it.
async fn current_session(app: &TestApp, token: &str) -> Value {
    let (status, body) = authed_json(app, Method::GET, "/sessions", token, None).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"]
        .as_array()
        .expect("a sessions array")
        .iter()
        .find(|s| s["current"] == json!(true))
        .cloned()
        .unwrap_or_else(|| panic!("no current session in {body}"))
}

/// GET /passkeys: the list, asserting a 200.
async fn passkeys(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = authed_json(app, Method::GET, "/passkeys", token, None).await;
    assert_eq!(status, 200, "{body}");
    body["passkeys"]
        .as_array()
        .unwrap_or_else(|| panic!("a passkeys array in {body}"))
        .clone()
}

/// POST /passkeys/register/start with the session `token`: the creation options.
async fn register_start(app: &TestApp, token: &str) -> Value {
    let (status, options) =
        authed_json(app, Method::POST, "/passkeys/register/start", token, None).await;
    assert_eq!(status, 200, "{options}");
    options
}

/// POST /passkeys/register/finish with the session `token`.
async fn register_finish(
    app: &TestApp,
    token: &str,
    credential: &Value,
    name: &str,
) -> (u16, Value) {
    let body = json!({"credential": credential, "name": name});
    authed_json(
        app,
        Method::POST,
        "/passkeys/register/finish",
        token,
        Some(body),
    )
    .await
}

/// Registers a passkey named `name` on the session `token`'s account, asserting a 201:
/// its `id` and the soft passkey holding it.
async fn add_passkey(app: &TestApp, token: &str, name: &str) -> (String, Credential) {
    let options = register_start(app, token).await;
    let (credential, passkey) = authenticator::create(&options);
    let (status, body) = register_finish(app, token, &credential, name).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("an id").to_string();
    (id, passkey)
}

/// POST /passkeys/login/start with `body` (JSON): the request options.
/// The request options of POST /reauthenticate/passkey/start, asserting a 200.
async fn reauth_start(app: &TestApp, token: &str) -> Value {
    let (status, options) = authed_json(
        app,
        Method::POST,
        "/reauthenticate/passkey/start",
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{options}");
    options
}

async fn passwordless_start(app: &TestApp, body: &Value) -> Value {
    let (status, options) = json(app.post_json("/passkeys/login/start", body).await).await;
    assert_eq!(status, 200, "{options}");
    options
}

/// POST /passkeys/login/finish with the assertion: the response, unread.
async fn passwordless_finish(app: &TestApp, assertion: &Value) -> reqwest::Response {
    app.post_json("/passkeys/login/finish", &json!({"credential": assertion}))
        .await
}

/// A passwordless login that must work: the session token.
async fn passwordless_token(app: &TestApp, assertion: &Value) -> String {
    let resp = passwordless_finish(app, assertion).await;
    let token = session_cookie(&resp);
    let (status, body) = json(resp).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Login successful"})),
        "a passwordless login"
    );
    token.expect("a session cookie")
}

/// POST /login/mfa/passkey/start for `mfa_token`: the request options.
async fn second_step_start(app: &TestApp, mfa_token: &str) -> Value {
    let (status, options) = json(
        app.post_json("/login/mfa/passkey/start", &json!({"mfa_token": mfa_token}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{options}");
    options
}

/// POST /login/mfa with a passkey assertion: the response, unread.
async fn second_step(app: &TestApp, mfa_token: &str, assertion: &Value) -> reqwest::Response {
    app.post_json(
        "/login/mfa",
        &json!({"mfa_token": mfa_token, "method": "passkey", "credential": assertion}),
    )
    .await
}

/// The ids `allowCredentials` lists in request options (none when it is absent).
fn allowed_ids(options: &Value) -> Vec<String> {
    options
        .pointer("/publicKey/allowCredentials")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| c["id"].as_str().expect("a credential id").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The keys of an object at `pointer`, sorted.
fn keys_at(value: &Value, pointer: &str) -> Vec<String> {
    let mut keys: Vec<String> = value
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no object at {pointer} in {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
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

fn invalid_code() -> (u16, Value) {
    (
        401,
        json!({"error": INVALID_CODE, "code": "invalid_second_factor"}),
    )
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn registering_a_passkey_lists_it_and_counts_it_as_a_second_factor() {
    let app = spawn().await;
    let email = register(&app, "alice").await;
    let token = login_token(&app, "alice", PASSWORD).await;
    assert_eq!(passkeys(&app, &token).await, Vec::<Value>::new());

    let options = register_start(&app, &token).await;
    let selection = &options["publicKey"]["authenticatorSelection"];
    assert_eq!(selection["residentKey"], json!("preferred"), "{options}");
    assert_eq!(
        selection["userVerification"],
        json!("preferred"),
        "{options}"
    );
    assert_eq!(options["publicKey"]["rp"]["id"], json!("localhost"));

    let (credential, _passkey) = authenticator::create(&options);
    let (status, body) = register_finish(&app, &token, &credential, "Laptop").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(keys_at(&body, ""), ["created_at", "id", "name"], "{body}");
    assert_eq!(body["name"], json!("Laptop"));
    let id = body["id"].as_str().expect("an id").to_string();
    let created_at = body["created_at"].clone();

    let list = passkeys(&app, &token).await;
    assert_eq!(
        list,
        vec![json!({"id": id, "name": "Laptop", "created_at": created_at, "last_used_at": null})]
    );
    assert_eq!(me(&app, &token).await["mfa"]["passkeys"], json!(1));

    let notice = mails_with_subject(&app, &email, ADDED, 1).await;
    assert!(notice[0].contains("Laptop"), "{}", notice[0]);

    // From now on the password alone opens no session.
    let resp = app.login("alice", PASSWORD).await;
    assert!(session_cookie(&resp).is_none());
    let (status, body) = json(resp).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], json!("Second factor required"));
    assert_eq!(body["mfa_required"], json!(true));
    assert!(body["mfa_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        body["methods"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("passkey"))),
        "{body}"
    );
}

#[tokio::test]
async fn a_passkey_is_the_second_step_of_a_password_login() {
    let app = spawn().await;
    register(&app, "alice").await;
    let first = login_token(&app, "alice", PASSWORD).await;
    let (id, passkey) = add_passkey(&app, &first, "Laptop").await;

    let mfa = mfa_token(&app, "alice").await;
    let options = second_step_start(&app, &mfa).await;
    assert_eq!(allowed_ids(&options), vec![passkey.id_b64()], "{options}");
    assert_eq!(
        options["publicKey"]["userVerification"],
        json!("preferred"),
        "{options}"
    );

    let assertion = authenticator::get(&options, &passkey);
    let resp = second_step(&app, &mfa, &assertion).await;
    let token = session_cookie(&resp);
    let (status, body) = json(resp).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Login successful"}))
    );
    let token = token.expect("a session cookie");

    assert_eq!(me(&app, &token).await["username"], json!("alice"));
    assert_eq!(current_session(&app, &token).await["aal"], json!("aal2"));
    let list = passkeys(&app, &token).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], json!(id));
    assert!(list[0]["last_used_at"].is_string(), "{}", list[0]);

    // The mfa_token is used up: the same assertion opens nothing more.
    let resp = second_step(&app, &mfa, &assertion).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn passwordless_passkey_login_with_user_verification_opens_an_aal2_session() {
    let app = spawn().await;
    register(&app, "alice").await;
    let first = login_token(&app, "alice", PASSWORD).await;
    let (_, passkey) = add_passkey(&app, &first, "Laptop").await;

    // An empty JSON object.
    let options = passwordless_start(&app, &json!({})).await;
    assert_eq!(allowed_ids(&options), Vec::<String>::new(), "{options}");
    assert_eq!(options["publicKey"]["rpId"], json!("localhost"));
    let token = passwordless_token(&app, &authenticator::get(&options, &passkey)).await;
    assert_eq!(me(&app, &token).await["username"], json!("alice"));
    let session = current_session(&app, &token).await;
    assert_eq!(session["aal"], json!("aal2"), "{session}");

    // No body at all, and no Content-Type.
    let (status, bare) = json(
        app.post_raw("/passkeys/login/start", None, Vec::new())
            .await,
    )
    .await;
    assert_eq!(status, 200, "{bare}");
    assert_eq!(allowed_ids(&bare), Vec::<String>::new(), "{bare}");
    let token = passwordless_token(&app, &authenticator::get(&bare, &passkey)).await;
    assert_eq!(me(&app, &token).await["username"], json!("alice"));

    // Bound to the right account by an identifier.
    let bound = passwordless_start(&app, &json!({"identifier": "alice"})).await;
    assert_eq!(allowed_ids(&bound), Vec::<String>::new(), "{bound}");
    let token = passwordless_token(&app, &authenticator::get(&bound, &passkey)).await;
    assert_eq!(me(&app, &token).await["username"], json!("alice"));

    // An unknown identifier gets options of the very same shape: no enumeration.
    let unknown = passwordless_start(&app, &json!({"identifier": "nobody-here"})).await;
    assert_eq!(keys_at(&unknown, ""), keys_at(&bound, ""), "{unknown}");
    assert_eq!(
        keys_at(&unknown, "/publicKey"),
        keys_at(&bound, "/publicKey"),
        "{unknown} vs {bound}"
    );
    assert_eq!(allowed_ids(&unknown), Vec::<String>::new(), "{unknown}");
    assert_ne!(
        unknown["publicKey"]["challenge"],
        bound["publicKey"]["challenge"]
    );
    // And nobody's passkey answers a ceremony bound to nobody.
    let resp = passwordless_finish(&app, &authenticator::get(&unknown, &passkey)).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(json(resp).await, invalid_code());
}

#[tokio::test]
async fn a_passkey_assertion_for_another_users_credential_fails() {
    let app = spawn().await;
    register(&app, "alice").await;
    register(&app, "bob").await;
    let alice = login_token(&app, "alice", PASSWORD).await;
    let bob = login_token(&app, "bob", PASSWORD).await;
    let (_, alices) = add_passkey(&app, &alice, "Alice's").await;
    let (_, bobs) = add_passkey(&app, &bob, "Bob's").await;

    // The second step of Alice's login, answered with Bob's passkey.
    let mfa = mfa_token(&app, "alice").await;
    let options = second_step_start(&app, &mfa).await;
    assert_eq!(allowed_ids(&options), vec![alices.id_b64()]);
    let wrong = authenticator::get_with(
        &options,
        &bobs,
        &Knobs {
            ignore_allow_credentials: true,
            ..Knobs::default()
        },
    );
    let resp = second_step(&app, &mfa, &wrong).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(json(resp).await, invalid_code());
    // Alice's own passkey still finishes the step (a wrong try costs one of the token's).
    let resp = second_step(&app, &mfa, &authenticator::get(&options, &alices)).await;
    assert_eq!(resp.status(), 200);
    assert!(session_cookie(&resp).is_some());

    // A passwordless ceremony bound to Alice, answered with Bob's passkey.
    let bound = passwordless_start(&app, &json!({"identifier": "alice"})).await;
    let resp = passwordless_finish(&app, &authenticator::get(&bound, &bobs)).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(json(resp).await, invalid_code());
    // Bound to Bob, it is Bob's.
    let bound = passwordless_start(&app, &json!({"identifier": "bob"})).await;
    let token = passwordless_token(&app, &authenticator::get(&bound, &bobs)).await;
    assert_eq!(me(&app, &token).await["username"], json!("bob"));
}

#[tokio::test]
async fn a_ceremony_state_cannot_be_reused() {
    let app = spawn().await;
    register(&app, "alice").await;
    let first = login_token(&app, "alice", PASSWORD).await;
    let options = register_start(&app, &first).await;
    let (registration, passkey) = authenticator::create(&options);
    let (status, body) = register_finish(&app, &first, &registration, "Laptop").await;
    assert_eq!(status, 201, "{body}");

    // A passwordless assertion, replayed.
    let options = passwordless_start(&app, &json!({})).await;
    let assertion = authenticator::get(&options, &passkey);
    let token = passwordless_token(&app, &assertion).await;
    let resp = passwordless_finish(&app, &assertion).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(json(resp).await, invalid_code());

    // A registration, replayed (on an aal2 session, so step-up lets it through).
    let (status, body) = register_finish(&app, &token, &registration, "Again").await;
    assert_eq!((status, body), invalid_code());
    let options = register_start(&app, &token).await;
    let (second, _) = authenticator::create(&options);
    let (status, body) = register_finish(&app, &token, &second, "Phone").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = register_finish(&app, &token, &second, "Phone again").await;
    assert_eq!((status, body), invalid_code());
    let names: Vec<Value> = passkeys(&app, &token)
        .await
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("Laptop"), json!("Phone")]);
    assert_eq!(me(&app, &token).await["mfa"]["passkeys"], json!(2));

    // An assertion answering a challenge the server never made (a live ceremony exists).
    let options = passwordless_start(&app, &json!({})).await;
    let made_up = authenticator::get_with(
        &options,
        &passkey,
        &Knobs {
            challenge: Some("bm90LWEtY2hhbGxlbmdlLW9mLW91cnMtYXQtYWxs".into()),
            ..Knobs::default()
        },
    );
    let resp = passwordless_finish(&app, &made_up).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(json(resp).await, invalid_code());
    // The live ceremony is untouched by that: the right answer still works.
    passwordless_token(&app, &authenticator::get(&options, &passkey)).await;
}

#[tokio::test]
async fn an_aal1_session_cannot_remove_a_passkey() {
    let app = spawn().await;
    let email = register(&app, "alice").await;
    register(&app, "bob").await;
    let token = login_token(&app, "alice", PASSWORD).await;
    let (id, passkey) = add_passkey(&app, &token, "Laptop").await;
    let bob = login_token(&app, "bob", PASSWORD).await;
    let (bobs_id, _) = add_passkey(&app, &bob, "Bob's").await;

    // The password session that registered it is aal1, and the account now has a factor.
    assert_eq!(current_session(&app, &token).await["aal"], json!("aal1"));
    let path = format!("/passkeys/{id}");
    let (status, body) = authed_json(&app, Method::DELETE, &path, &token, None).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "Re-authentication required", "code": "reauth_required", "reauth_required": true})
        )
    );

    let options = reauth_start(&app, &token).await;
    assert_eq!(allowed_ids(&options), vec![passkey.id_b64()], "{options}");
    let assertion = authenticator::get(&options, &passkey);
    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/reauthenticate",
        &token,
        Some(json!({"method": "passkey", "credential": assertion})),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Re-authenticated"}))
    );
    assert_eq!(current_session(&app, &token).await["aal"], json!("aal2"));

    // Someone else's passkey is not found, like one that never was.
    let (status, body) = authed_json(
        &app,
        Method::DELETE,
        &format!("/passkeys/{bobs_id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Passkey not found", "code": "passkey_not_found"})
        )
    );
    // An id that is not even text is no passkey either, and the answer is JSON.
    let (status, body) = authed_json(&app, Method::DELETE, "/passkeys/%FF", &token, None).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Passkey not found", "code": "passkey_not_found"})
        )
    );
    let (status, body) = authed_json(
        &app,
        Method::DELETE,
        "/passkeys/no-such-passkey",
        &token,
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Passkey not found", "code": "passkey_not_found"})
        )
    );

    let (status, body) = authed_json(&app, Method::DELETE, &path, &token, None).await;
    assert_eq!((status, body), (200, json!({"message": "Passkey removed"})));
    assert_eq!(passkeys(&app, &token).await, Vec::<Value>::new());
    assert_eq!(me(&app, &token).await["mfa"]["passkeys"], json!(0));
    mails_with_subject(&app, &email, REMOVED, 1).await;
    // Removed twice is not found; Bob's is still there.
    let (status, _) = authed_json(&app, Method::DELETE, &path, &token, None).await;
    assert_eq!(status, 404);
    assert_eq!(passkeys(&app, &bob).await.len(), 1);

    // With its only factor gone the password is enough again, and the passkey is not.
    login_token(&app, "alice", PASSWORD).await;
    let options = passwordless_start(&app, &json!({})).await;
    let resp = passwordless_finish(&app, &authenticator::get(&options, &passkey)).await;
    assert_eq!(json(resp).await, invalid_code());
}

#[tokio::test]
async fn a_credential_that_is_not_a_credential_is_refused_naming_the_field() {
    let app = spawn().await;
    register(&app, "alice").await;
    register(&app, "bob").await;
    let alice = login_token(&app, "alice", PASSWORD).await;
    let (_, passkey) = add_passkey(&app, &alice, "Laptop").await;
    let mfa = mfa_token(&app, "alice").await;
    // Bob has no second factor, so his fresh password session may register one.
    let bob = login_token(&app, "bob", PASSWORD).await;

    let names_the_credential = |body: &Value| {
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("credential"))
    };
    for shape in [
        json!("not a credential"),
        json!(42),
        json!(null),
        json!({"id": "abc"}),
        json!({"id": "abc", "rawId": "!!!", "type": "public-key", "response": {}}),
    ] {
        let (status, body) = json(passwordless_finish(&app, &shape).await).await;
        assert_eq!(status, 422, "login/finish with {shape}: {body}");
        assert!(names_the_credential(&body), "{shape}: {body}");

        let (status, body) = json(second_step(&app, &mfa, &shape).await).await;
        assert_eq!(status, 422, "login/mfa with {shape}: {body}");
        assert!(names_the_credential(&body), "{shape}: {body}");

        let (status, body) = register_finish(&app, &bob, &shape, "Shape").await;
        assert_eq!(status, 422, "register/finish with {shape}: {body}");
        assert!(names_the_credential(&body), "{shape}: {body}");
    }

    // A registration is no assertion, nor the other way round.
    let options = passwordless_start(&app, &json!({})).await;
    let assertion = authenticator::get(&options, &passkey);
    let (status, body) = register_finish(&app, &bob, &assertion, "Shape").await;
    assert_eq!(status, 422, "{body}");
    assert!(names_the_credential(&body), "{body}");
    let options = register_start(&app, &bob).await;
    let (registration, _) = authenticator::create(&options);
    let (status, body) = json(passwordless_finish(&app, &registration).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(names_the_credential(&body), "{body}");
    assert_eq!(passkeys(&app, &bob).await, Vec::<Value>::new());

    // The mfa_token has lived through all that: the shapes cost none of its tries.
    let options = second_step_start(&app, &mfa).await;
    let resp = second_step(&app, &mfa, &authenticator::get(&options, &passkey)).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_assertion_from_another_origin_or_without_the_verification_it_was_registered_with_is_refused(
) {
    let app = spawn().await;
    register(&app, "alice").await;
    let token = login_token(&app, "alice", PASSWORD).await;

    // A registration from another origin, or answering another challenge, adds nothing.
    for knobs in [
        Knobs {
            origin: Some("https://evil.example".into()),
            ..Knobs::default()
        },
        Knobs {
            challenge: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
            ..Knobs::default()
        },
    ] {
        let options = register_start(&app, &token).await;
        let (credential, _) = authenticator::create_with(&options, &knobs);
        let (status, body) = register_finish(&app, &token, &credential, "Bad").await;
        assert_eq!((status, body), invalid_code(), "{knobs:?}");
    }
    assert_eq!(passkeys(&app, &token).await, Vec::<Value>::new());

    let (_, passkey) = add_passkey(&app, &token, "Laptop").await;
    let wrongs = [
        Knobs {
            origin: Some("https://evil.example".into()),
            ..Knobs::default()
        },
        Knobs {
            origin: Some("http://localhost:9999".into()),
            ..Knobs::default()
        },
        // Registered with user verification, it must verify its user ever after.
        Knobs {
            no_user_verification: true,
            ..Knobs::default()
        },
        Knobs {
            another_key: true,
            ..Knobs::default()
        },
    ];
    for knobs in &wrongs {
        // Passwordless.
        let options = passwordless_start(&app, &json!({})).await;
        let assertion = authenticator::get_with(&options, &passkey, knobs);
        let resp = passwordless_finish(&app, &assertion).await;
        assert!(session_cookie(&resp).is_none(), "{knobs:?}");
        assert_eq!(json(resp).await, invalid_code(), "{knobs:?}");

        // The second step of a password login.
        let mfa = mfa_token(&app, "alice").await;
        let options = second_step_start(&app, &mfa).await;
        let assertion = authenticator::get_with(&options, &passkey, knobs);
        let resp = second_step(&app, &mfa, &assertion).await;
        assert!(session_cookie(&resp).is_none(), "{knobs:?}");
        assert_eq!(json(resp).await, invalid_code(), "{knobs:?}");

        // Re-authentication.
        let options = reauth_start(&app, &token).await;
        let assertion = authenticator::get_with(&options, &passkey, knobs);
        let (status, body) = authed_json(
            &app,
            Method::POST,
            "/reauthenticate",
            &token,
            Some(json!({"method": "passkey", "credential": assertion})),
        )
        .await;
        assert_eq!((status, body), invalid_code(), "{knobs:?}");
    }
    assert_eq!(current_session(&app, &token).await["aal"], json!("aal1"));
    // None of it was taken for a use.
    assert!(passkeys(&app, &token).await[0]["last_used_at"].is_null());
}

#[tokio::test]
async fn a_passkey_that_cannot_verify_its_user_alone_opens_an_aal1_session_and_after_the_password_an_aal2_one(
) {
    let app = spawn().await;
    register(&app, "alice").await;
    let first = login_token(&app, "alice", PASSWORD).await;
    let plain = Knobs {
        no_user_verification: true,
        ..Knobs::default()
    };

    // A security key without a PIN registers: user verification is preferred, not required.
    let options = register_start(&app, &first).await;
    let (credential, key) = authenticator::create_with(&options, &plain);
    let (status, body) = register_finish(&app, &first, &credential, "Plain key").await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("an id").to_string();

    // Alone it is one factor, possession: an aal1 session.
    let options = passwordless_start(&app, &json!({})).await;
    let token = passwordless_token(&app, &authenticator::get_with(&options, &key, &plain)).await;
    assert_eq!(me(&app, &token).await["username"], json!("alice"));
    assert_eq!(current_session(&app, &token).await["aal"], json!("aal1"));

    // Proving possession again refreshes the proof but does not make it two factors: the
    // session still cannot remove a factor.
    let options = reauth_start(&app, &token).await;
    let assertion = authenticator::get_with(&options, &key, &plain);
    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/reauthenticate",
        &token,
        Some(json!({"method": "passkey", "credential": assertion})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(current_session(&app, &token).await["aal"], json!("aal1"));
    let (status, body) = authed_json(
        &app,
        Method::DELETE,
        &format!("/passkeys/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reauth_required"], json!(true), "{body}");

    // After the password, it is the second factor: aal2.
    let mfa = mfa_token(&app, "alice").await;
    let options = second_step_start(&app, &mfa).await;
    let resp = second_step(&app, &mfa, &authenticator::get_with(&options, &key, &plain)).await;
    let strong = session_cookie(&resp);
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    let strong = strong.expect("a session cookie");
    assert_eq!(current_session(&app, &strong).await["aal"], json!("aal2"));

    // The same key verifying its user (a PIN set since): two factors alone.
    let options = passwordless_start(&app, &json!({})).await;
    let token = passwordless_token(&app, &authenticator::get(&options, &key)).await;
    assert_eq!(current_session(&app, &token).await["aal"], json!("aal2"));
}
