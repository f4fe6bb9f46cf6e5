//! Attacks on what the server tells about itself: `/metrics` as a memory sink and an
//! account oracle, the detailed readiness report on the public listener.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{extract_code, json, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";

/// Sends `request` on a fresh connection and returns the status code of the answer.
async fn raw_status(app: &TestApp, request: &[u8]) -> u16 {
    let host = app.addr.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// The `_total` counters of a scrape, by series.
fn counters(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            name.ends_with("_total")
                .then(|| (series.to_owned(), value.parse().ok()))?
                .1
                .map(|v| (series.to_owned(), v))
        })
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

#[tokio::test]
async fn metrics_and_the_detailed_readiness_report_are_not_on_the_public_listener() {
    let app = TestApp::spawn().await;
    let (status, body) = json(app.get("/metrics", None).await).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "Not found", "code": "not_found"}))
    );
    let (status, body) = json(app.get("/readyz", None).await).await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));

    let (status, body) = json(app.admin_get("/readyz").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    let metrics = app.admin_get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("gatehouse_http_requests_total"));
    assert!(
        app.admin_addr
            .as_deref()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "the operations listener is on loopback"
    );
}

#[tokio::test]
async fn made_up_methods_are_refused_and_never_become_metric_labels() {
    let app = TestApp::spawn().await;
    let before = app.admin_get("/metrics").await.text().await.unwrap();
    // The review's attack: thousands of requests, each with its own 8 KB method name.
    for i in 0..200 {
        let method = format!("{}{i}", "X".repeat(8000));
        let request =
            format!("{method} /login HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(&app, request.as_bytes()).await, 405);
    }
    let resp = app
        .send(
            app.request(reqwest::Method::from_bytes(b"PURGE").unwrap(), "/me"),
            "PURGE /me",
        )
        .await;
    let (status, body) = json(resp).await;
    assert_eq!(
        (status, body),
        (
            405,
            json!({"error": "Method not allowed", "code": "method_not_allowed"})
        )
    );

    let after = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(!after.contains("XXXXXXXX"), "a method name became a label");
    assert!(!after.contains("PURGE"));
    assert!(
        after.len() < before.len() + 4096,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        !app.logs().contains("XXXXXXXX"),
        "a method name reached the log"
    );
}

#[tokio::test]
async fn counters_move_the_same_for_an_identifier_without_an_account() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.register("alice", "alice@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    let scrape = || async { counters(&app.admin_get("/metrics").await.text().await.unwrap()) };
    // Delivery is the provider's business and is counted by the outbox: it is the one
    // thing that differs, and it is not on the public listener.
    let comparable = |d: BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        d.into_iter()
            .filter(|(k, _)| !k.starts_with("gatehouse_outbox_deliveries_total"))
            .collect()
    };

    let m0 = scrape().await;
    assert_eq!(app.forgot("alice@example.com").await.status(), 200);
    let mail = app
        .smtp
        .wait_for("alice@example.com", 1, DELIVERY_TIMEOUT)
        .await;
    let code = extract_code(&mail[0].text());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(app.validate("alice@example.com", wrong).await.status(), 400);
    let m1 = scrape().await;
    assert_eq!(app.forgot("nobody@example.com").await.status(), 200);
    assert_eq!(
        app.validate("nobody@example.com", wrong).await.status(),
        400
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m2 = scrape().await;

    let known = comparable(delta(&m0, &m1));
    let unknown = comparable(delta(&m1, &m2));
    assert!(!known.is_empty());
    assert_eq!(known, unknown, "counters tell an account from no account");
}
