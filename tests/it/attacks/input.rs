//! Attacks: input. One mailbox holding two accounts (IDN against punycode, quoted local
//! parts, `ß` against `SS`, final against medial sigma), look-alike addresses mixing
//! scripts, passwords that only match in one Unicode normalisation form, and new passwords
//! built from the service's name, the user's own identifiers, or one repeated character.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::store::{ImportUser, Store};
use serde_json::{json, Value};

use crate::common::{extract_code, json, session_cookie, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";

/// Registers an account and returns the status and the body.
async fn register(app: &TestApp, username: &str, email: &str, password: &str) -> (u16, Value) {
    json(app.register(username, email, None, password).await).await
}

/// Asserts a 422 whose error names `field` first, says `why`, and does not echo `secret`.
fn assert_refused(answer: &(u16, Value), field: &str, why: &str, secret: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("{field}: ")), "{error}");
    assert!(error.contains(why), "{error}");
    assert!(
        !error.contains(secret),
        "the error echoes {secret:?}: {error}"
    );
}

/// The server's own database, opened the way the server opens it.
async fn open_store(app: &TestApp) -> Arc<dyn Store> {
    gatehouse::store::connect(&gatehouse::config::DatabaseSettings {
        database_url: app.db_url(),
        database_max_connections: 2,
        database_read_connections: 2,
        database_timeout: Duration::from_secs(5),
    })
    .await
    .expect("open the test database")
}

/// Stores an account the way an earlier version did: the email keyed as NFKC + lower
/// case of the whole address (`email_norm`), the password hash as given.
async fn store_old_account(store: &dyn Store, username: &str, email: &str, hash: &str) {
    let email_norm: String = unicode_normalization::UnicodeNormalization::nfkc(email)
        .collect::<String>()
        .to_lowercase();
    let user = ImportUser {
        username: username.to_owned(),
        username_norm: username.to_lowercase(),
        email: email.to_owned(),
        email_norm,
        phone: None,
        password_hash: hash.to_owned(),
        created_at: 1_700_000_000,
    };
    assert_eq!(store.import_users(&[user]).await.expect("insert"), 1);
}

async fn stored_hash(store: &dyn Store, username: &str) -> String {
    let id = gatehouse::domain::Identifier::parse(username).expect("an identifier");
    store
        .find_user(&id)
        .await
        .expect("lookup")
        .expect("the user")
        .password_hash
}

async fn login_status(app: &TestApp, identifier: &str, password: &str) -> u16 {
    app.login(identifier, password).await.status().as_u16()
}

#[tokio::test]
async fn the_punycode_and_unicode_forms_of_a_domain_are_one_mailbox() {
    let app = TestApp::spawn().await;
    let first = register(&app, "anna", "anna@bücher.example", PASSWORD).await;
    assert_eq!(first.0, 201, "{}", first.1);
    for other in [
        "anna@xn--bcher-kva.example",
        "ANNA@XN--BCHER-KVA.EXAMPLE",
        "Anna@BÜCHER.example",
    ] {
        let (status, body) = register(&app, "anna2", other, PASSWORD).await;
        assert_eq!(
            (status, body),
            (
                409,
                json!({"error": "User already exists", "code": "user_exists"})
            ),
            "{other}"
        );
    }
    // Either spelling logs in to the one account, which keeps the address as typed.
    for spelling in ["anna@xn--bcher-kva.example", "anna@bücher.example"] {
        let resp = app.login(spelling, PASSWORD).await;
        assert_eq!(resp.status(), 200, "{spelling}");
        let token = session_cookie(&resp).expect("a session");
        let (_, me) = json(app.me(&token).await).await;
        assert_eq!(me["email"], "anna@bücher.example");
    }
}

#[tokio::test]
async fn a_quoted_local_part_is_refused() {
    let app = TestApp::spawn().await;
    for quoted in [
        "\"anna\"@example.com",
        "\"a b\"@example.com",
        "\"a@b\"@example.com",
    ] {
        let answer = register(&app, "quoted", quoted, PASSWORD).await;
        assert_refused(&answer, "email", "", PASSWORD);
    }
    let answer = register(&app, "quoted", "\"anna\"@example.com", PASSWORD).await;
    assert_refused(&answer, "email", "quoted", PASSWORD);
    // The unquoted spelling of that mailbox is free, and takes it.
    let (status, _) = register(&app, "anna", "anna@example.com", PASSWORD).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn strasse_and_strasse_with_sharp_s_are_one_mailbox() {
    let app = TestApp::spawn().await;
    let (status, _) = register(&app, "strasse1", "straße@example.com", PASSWORD).await;
    assert_eq!(status, 201);
    for other in [
        "STRASSE@example.com",
        "strasse@example.com",
        "STRAẞE@example.com",
    ] {
        let (status, _) = register(&app, "strasse2", other, PASSWORD).await;
        assert_eq!(status, 409, "{other}");
    }
    assert_eq!(
        login_status(&app, "Strasse@example.com", PASSWORD).await,
        200
    );
}

#[tokio::test]
async fn final_and_medial_sigma_are_one_mailbox() {
    let app = TestApp::spawn().await;
    let (status, _) = register(&app, "sofia1", "σοφιας@example.gr", PASSWORD).await;
    assert_eq!(status, 201);
    for other in [
        "ΣΟΦΙΑΣ@example.gr",
        "σοφιασ@example.gr",
        "Σοφιας@EXAMPLE.GR",
    ] {
        let (status, _) = register(&app, "sofia2", other, PASSWORD).await;
        assert_eq!(status, 409, "{other}");
    }
    assert_eq!(login_status(&app, "ΣΟΦΙΑΣ@example.gr", PASSWORD).await, 200);
}

#[tokio::test]
async fn a_mixed_script_lookalike_address_is_refused() {
    let app = TestApp::spawn().await;
    for lookalike in [
        "p\u{430}ypal@example.com",  // a Cyrillic 'а' among Latin letters
        "billing@p\u{430}ypal.com",  // the same in a domain label
        "billing@xn--pypal-4ve.com", // … spelled in punycode
        "\u{3bf}mega@example.com",   // a Greek 'ο' among Latin letters
    ] {
        let answer = register(&app, "spoofer", lookalike, PASSWORD).await;
        assert_refused(&answer, "email", "mix alphabets", PASSWORD);
    }
    // One script per part is fine, whichever script.
    for (name, honest) in [
        ("paypal", "billing@paypal.com"),
        ("ivan", "иван@пример.рф"),
        ("sofia", "σοφια@example.gr"),
    ] {
        let (status, body) = register(&app, name, honest, PASSWORD).await;
        assert_eq!(status, 201, "{honest}: {body}");
    }
}

#[tokio::test]
async fn an_account_stored_under_the_old_email_key_is_still_found_and_still_holds_it() {
    let app = TestApp::spawn().await;
    let store = open_store(&app).await;
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    store_old_account(&*store, "olduser", "Straße@Bücher.example", &hash).await;

    // Found by the address as it was typed, for login and for recovery. (The code itself
    // cannot be read here: the test SMTP sink does not speak SMTPUTF8, which a non-ASCII
    // address needs, so the audit trail shows whom each request reached.)
    assert_eq!(
        login_status(&app, "straße@bücher.example", PASSWORD).await,
        200
    );
    let user_id = store
        .find_user(&gatehouse::domain::Identifier::parse("olduser").expect("a username"))
        .await
        .expect("lookup")
        .expect("the user")
        .id;
    let (status, _) = json(app.forgot("Straße@Bücher.example").await).await;
    assert_eq!(status, 200);
    let events = || async {
        store
            .audit_for_user(user_id, 0, 100)
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.event)
            .collect::<Vec<String>>()
    };
    // The code is issued after the answer: wait (bounded) until it is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !events().await.iter().any(|e| e == "code_requested") {
        assert!(std::time::Instant::now() < deadline, "no code was issued");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _) = json(app.validate("straße@bücher.example", "000000").await).await;
    assert_eq!(status, 400);
    let events = events().await;
    for event in ["login_succeeded", "code_requested", "code_failed"] {
        assert!(events.iter().any(|e| e == event), "{event}: {events:?}");
    }

    // Registration treats the old key as taken.
    let (status, _) = register(&app, "newuser", "STRAße@bücher.EXAMPLE", PASSWORD).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn an_nfd_login_of_an_nfc_password_succeeds() {
    let app = TestApp::spawn().await;
    let nfc = "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e";
    let nfd = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
    let (status, _) = register(&app, "chef", "chef@example.com", nfc).await;
    assert_eq!(status, 201);
    assert_eq!(login_status(&app, "chef", nfd).await, 200);
    assert_eq!(login_status(&app, "chef", nfc).await, 200);
    // And the other way round.
    let (status, _) = register(&app, "chef2", "chef2@example.com", nfd).await;
    assert_eq!(status, 201);
    assert_eq!(login_status(&app, "chef2", nfc).await, 200);
    assert_eq!(login_status(&app, "chef2", "cafe creme brulee").await, 401);
}

#[tokio::test]
async fn a_hash_made_before_normalisation_still_logs_in_and_is_normalised() {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let app = TestApp::spawn().await;
    let store = open_store(&app).await;
    // An argon2id hash as this server made them before: over the bytes as typed (NFD).
    let nfd = "cafe\u{301} au lait please";
    let nfc = "caf\u{e9} au lait please";
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let old = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(1024, 1, 1, None).expect("params"),
    )
    .hash_password(nfd.as_bytes(), &salt)
    .expect("hash")
    .to_string();
    store_old_account(&*store, "barista", "barista@example.com", &old).await;

    assert_eq!(login_status(&app, "barista", nfd).await, 200);
    let rehashed = stored_hash(&*store, "barista").await;
    assert_ne!(rehashed, old);
    assert!(rehashed.contains(",data=bmZrYw$"), "{rehashed}");
    assert_eq!(login_status(&app, "barista", nfc).await, 200);
    assert_eq!(login_status(&app, "barista", nfd).await, 200);
    assert_eq!(
        stored_hash(&*store, "barista").await,
        rehashed,
        "rehashed once"
    );
}

#[tokio::test]
async fn a_password_made_of_the_username_and_digits_is_refused() {
    let app = TestApp::spawn().await;
    for password in ["alice12345", "!Alice2024", "4l1c3_1990", "ecila2024"] {
        let answer = register(&app, "alice", "alice@example.com", password).await;
        assert_refused(&answer, "password", "the username", password);
    }
    // The other identifiers of the account, likewise.
    for (password, why) in [
        ("Alice.Example@Example.com!", "the email address"),
        ("Alice.Example.99", "the email address"),
        ("aliceexample2024", "the email address"),
        ("+14155550123", "the phone number"),
        ("32105555141#", "the phone number"),
    ] {
        let resp = app
            .register(
                "alice",
                "alice.example@example.com",
                Some("+14155550123"),
                password,
            )
            .await;
        assert_refused(&json(resp).await, "password", why, password);
    }
    // Another account's identifiers are nothing special.
    let (status, body) = register(&app, "alice", "alice@example.com", "bob-the-builder-2024").await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_reset_to_a_password_built_from_the_username_is_refused() {
    let app = TestApp::spawn().await;
    let (status, _) = register(&app, "bob", "bob@example.com", PASSWORD).await;
    assert_eq!(status, 201);
    let (status, _) = json(app.forgot("bob@example.com").await).await;
    assert_eq!(status, 200);
    let mails = app
        .smtp
        .wait_for("bob@example.com", 1, DELIVERY_TIMEOUT)
        .await;
    let code = extract_code(&mails[0].text());
    let (status, body) = json(app.validate("bob", &code).await).await;
    assert_eq!(status, 200, "{body}");
    let token = body["reset_token"]
        .as_str()
        .expect("a reset token")
        .to_owned();

    for password in ["Bob12345678", "B0b-2024!!", "gatehouse1"] {
        let answer = json(app.reset("bob", password, Some(&token)).await).await;
        assert_refused(&answer, "new_password", "built from", password);
    }
    let answer = json(app.reset("bob", "bbbbbbbbbbbb", Some(&token)).await).await;
    assert_refused(&answer, "new_password", "repeated", "bbbbbbbbbbbb");
    // The token survived the refusals; a good password is taken.
    let (status, body) = json(
        app.reset("bob", "a brand new passphrase", Some(&token))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_service_name_is_refused_as_a_password() {
    let app = TestApp::spawn().await;
    for password in [
        "gatehouse",
        "Gatehouse2024!",
        "GATEHOUSE",
        "g4t3h0us3!",
        "esuohetag",
    ] {
        let answer = register(&app, "carol", "carol@example.com", password).await;
        assert_refused(&answer, "password", "the service's name", password);
    }
    // Inside a real passphrase the word is fine.
    let (status, _) = register(
        &app,
        "carol",
        "carol@example.com",
        "gatehouse keeper of the north",
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_single_character_run_is_refused_as_a_password() {
    let app = TestApp::spawn().await;
    for password in [
        "aaaaaaaa",
        "11111111",
        "zzzzzzzzzzzz1!",
        "AAAAaaaa",
        "xxxxyyyyzzzz",
    ] {
        let answer = register(&app, "dave", "dave@example.com", password).await;
        assert_refused(&answer, "password", "repeated", password);
    }
    let (status, _) = register(
        &app,
        "dave",
        "dave@example.com",
        "zzz: a good night's sleep",
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn login_does_not_apply_the_new_password_rules() {
    let app = TestApp::spawn().await;
    let store = open_store(&app).await;
    // An account whose password predates the rules (imported from the old server).
    let hash = bcrypt::hash("erin12345", 4).expect("bcrypt");
    store_old_account(&*store, "erin", "erin@example.com", &hash).await;
    assert_eq!(login_status(&app, "erin", "erin12345").await, 200);
    assert_eq!(login_status(&app, "erin", "erin12345").await, 200);
}

#[tokio::test]
async fn an_administrator_cannot_set_a_password_built_from_the_users_identifiers() {
    let app = TestApp::spawn().await;
    let resp = app
        .register("frank", "frank@example.com", Some("+14155550177"), PASSWORD)
        .await;
    assert_eq!(resp.status(), 201);
    let set_password = |password: &str| {
        crate::common::cli_with_stdin(
            &app,
            &["user", "set-password", "frank"],
            Some(&format!("{password}\n")),
        )
    };
    for (password, why) in [
        ("Frank2024!", "the username"),
        ("14155550177", "the phone number"),
        ("gatehouse!", "the service's name"),
    ] {
        let out = set_password(password);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{password}");
        assert!(
            stderr.contains("password: ") && stderr.contains(why),
            "{stderr}"
        );
        assert!(!stderr.contains(password), "{stderr}");
    }
    assert!(set_password("a brand new passphrase").status.success());
    assert_eq!(
        login_status(&app, "frank", "a brand new passphrase").await,
        200
    );
}
