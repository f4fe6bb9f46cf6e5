//! Attacks on the SMS bill (SMS pumping): accounts registered on numbers the attacker
//! profits from, then codes asked for them.

use std::time::Duration;

use crate::common::{json, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";

async fn register_with_phone(app: &TestApp, n: usize, phone: &str) -> String {
    let email = format!("user{n}@example.com");
    let resp = app
        .register(&format!("user{n}"), &email, Some(phone), PASSWORD)
        .await;
    assert_eq!(resp.status(), 201, "{phone}");
    email
}

fn refused(metrics: &str, reason: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("gatehouse_sms_refused_total") && l.contains(&format!("\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits for the verification codes that `n` registrations with a phone text (they spend
/// the SMS budgets too), so that what the test counts next is its own.
async fn verification_texts(app: &TestApp, n: usize) {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while app.twilio.all_messages().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "verification texts: {:?}",
            app.twilio.all_messages()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn texts_past_the_hourly_budget_go_by_email_and_the_answer_is_unchanged() {
    // Five of the eight texts go to the verification codes of the five registrations.
    let app = TestApp::spawn_with(&[
        ("SMS_BUDGET_PER_HOUR", "8/1h"),
        ("SMS_BUDGET_PER_PREFIX", "100/1h"),
    ])
    .await;
    let phones = [
        "+14155550101",
        "+447700900102",
        "+33612345103",
        "+4915112345104",
        "+61412345105",
    ];
    let mut emails = Vec::new();
    for (n, phone) in phones.iter().enumerate() {
        emails.push(register_with_phone(&app, n, phone).await);
    }
    verification_texts(&app, 5).await;
    for phone in phones {
        let (status, body) = json(app.forgot(phone).await).await;
        assert_eq!(status, 200);
        assert_eq!(body["message"], "OTP sent successfully");
    }
    // Three texts, then two codes by email.
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let texts = app.twilio.messages().len();
        let mails = emails
            .iter()
            .map(|e| app.smtp.messages_to(e).len())
            .sum::<usize>();
        if texts + mails >= 5 || tokio::time::Instant::now() > deadline {
            assert_eq!((texts, mails), (3, 2), "texts and mails");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(refused(&metrics, "hourly_budget"), 2.0, "{metrics}");
    assert!(app.logs().contains("SMS not sent"));
}

#[tokio::test]
async fn one_number_range_cannot_spend_the_whole_budget() {
    // Four of the six texts to the range go to the registrations' verification codes.
    let app = TestApp::spawn_with(&[
        ("SMS_BUDGET_PER_PREFIX", "6/1h"),
        ("SMS_PREFIX_DIGITS", "6"),
    ])
    .await;
    let premium = [
        "+447700900001",
        "+447700900002",
        "+447700900003",
        "+447700900004",
    ];
    for (n, phone) in premium.iter().enumerate() {
        register_with_phone(&app, n, phone).await;
    }
    register_with_phone(&app, 9, "+14155550109").await;
    verification_texts(&app, 5).await;
    for phone in premium {
        assert_eq!(app.forgot(phone).await.status(), 200);
    }
    assert_eq!(app.forgot("+14155550109").await.status(), 200);
    app.twilio
        .wait_for("+14155550109", 1, DELIVERY_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_range = app
        .twilio
        .messages()
        .iter()
        .filter(|m| m.to.starts_with("+447700"))
        .count();
    assert_eq!(to_range, 2, "texts to one number range");
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(refused(&metrics, "prefix"), 2.0, "{metrics}");
}

#[tokio::test]
async fn numbers_outside_the_allowed_countries_are_refused_at_registration() {
    let app = TestApp::spawn_with(&[("SMS_ALLOWED_COUNTRIES", "1,44")]).await;
    let (status, body) = json(
        app.register("sat", "sat@example.com", Some("+8816123456789"), PASSWORD)
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().starts_with("phone: "),
        "{body}"
    );
    register_with_phone(&app, 1, "+447700900123").await;
    register_with_phone(&app, 2, "+14155550123").await;
}
