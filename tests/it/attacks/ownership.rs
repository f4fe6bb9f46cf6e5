//! Attacks on who controls an account: an address nobody verified used as a way in.

use std::time::Duration;

use serde_json::json;

use crate::common::{extract_code, json, session_cookie, TestApp, DELIVERY_TIMEOUT};

const ATTACKER_PASSWORD: &str = "attacker passphrase 1";
const VICTIM_PASSWORD: &str = "victim's new passphrase";

/// Recovers `identifier` with the code that arrives as mail number `n` to `email`.
async fn recover_by_email(app: &TestApp, identifier: &str, email: &str, n: usize) {
    assert_eq!(app.forgot_via(identifier, "email").await.status(), 200);
    let mail = app.smtp.wait_for(email, n, DELIVERY_TIMEOUT).await;
    let code = extract_code(&mail[n - 1].text());
    let (status, body) = json(app.validate(identifier, &code).await).await;
    assert_eq!(status, 200, "{body}");
    let token = body["reset_token"].as_str().unwrap().to_owned();
    let (status, body) = json(app.reset(identifier, VICTIM_PASSWORD, Some(&token)).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_phone_registered_beside_the_victims_email_is_no_way_back_in_after_the_victim_recovers() {
    let app = TestApp::spawn().await;
    let attacker_phone = "+14155550166";
    // The attacker registers the victim's address with the attacker's own phone.
    let resp = app
        .register(
            "victim",
            "victim@example.com",
            Some(attacker_phone),
            ATTACKER_PASSWORD,
        )
        .await;
    assert_eq!(resp.status(), 201);
    // The victim "recovers" the account by email and uses it.
    recover_by_email(&app, "victim@example.com", "victim@example.com", 1).await;
    let notice = app
        .smtp
        .wait_for("victim@example.com", 2, DELIVERY_TIMEOUT)
        .await;
    assert!(
        notice[1].text().contains("never been confirmed"),
        "{}",
        notice[1].text()
    );
    let token = session_cookie(&app.login("victim@example.com", VICTIM_PASSWORD).await).unwrap();
    let (_, me) = json(app.me(&token).await).await;
    assert_eq!(me["phone"], json!(null), "the unproven phone was dropped");

    // Later the attacker asks for a code by SMS, by the phone and by the email.
    let texts_before = app.twilio.messages_to(attacker_phone).len();
    assert_eq!(app.forgot(attacker_phone).await.status(), 200);
    assert_eq!(
        app.forgot_via("victim@example.com", "sms").await.status(),
        200
    );
    // The second request's code goes to the proven email instead.
    app.smtp
        .wait_for("victim@example.com", 3, DELIVERY_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.twilio.messages_to(attacker_phone).len(),
        texts_before,
        "the attacker's phone got a text after the victim proved the email"
    );
    // The victim's session survived: nobody reset the account.
    assert_eq!(app.me(&token).await.status(), 200);
}

#[tokio::test]
async fn an_unproven_email_is_no_way_in_once_the_phone_is_proven() {
    let app = TestApp::spawn().await;
    let victim_phone = "+14155550177";
    // The attacker registers the victim's phone with the attacker's own email.
    let resp = app
        .register(
            "victim",
            "attacker@example.com",
            Some(victim_phone),
            ATTACKER_PASSWORD,
        )
        .await;
    assert_eq!(resp.status(), 201);
    // The victim recovers by SMS.
    assert_eq!(app.forgot(victim_phone).await.status(), 200);
    let texts = app.twilio.wait_for(victim_phone, 1, DELIVERY_TIMEOUT).await;
    let code = extract_code(&texts[0].body);
    let (status, body) = json(app.validate(victim_phone, &code).await).await;
    assert_eq!(status, 200, "{body}");
    let reset_token = body["reset_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.reset(victim_phone, VICTIM_PASSWORD, Some(&reset_token))
            .await
            .status(),
        200
    );
    // The attacker asks for a code by email: it goes to the proven phone instead.
    let texts_before = app.twilio.messages_to(victim_phone).len();
    assert_eq!(
        app.forgot_via("attacker@example.com", "email")
            .await
            .status(),
        200
    );
    app.twilio
        .wait_for(victim_phone, texts_before + 1, DELIVERY_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let codes_to_attacker = app
        .smtp
        .messages_to("attacker@example.com")
        .iter()
        .filter(|m| m.text().contains("one-time code"))
        .count();
    assert_eq!(codes_to_attacker, 0, "a code went to the unproven email");
}
