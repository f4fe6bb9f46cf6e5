//! Slow and abusive clients, provider outages, and shutdown: the server keeps answering
//! normal requests, loses no acknowledged message, and stops cleanly.

use std::time::{Duration, Instant};

use crate::common::{extract_code, json, SmtpSink, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery";

fn host(app: &TestApp) -> String {
    app.addr.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_neither_block_normal_requests_nor_stay_open() {
    let app = TestApp::spawn_with(&[("HEADER_READ_TIMEOUT", "2s")]).await;
    let addr = host(&app);
    let mut slow = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        if i % 2 == 0 {
            // Trickling: a request line and half a header, never finished.
            s.write_all(b"POST /login HTTP/1.1\r\nHost: gatehouse\r\nContent-")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    // Normal requests are still served, promptly.
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(app.get("/healthz", None).await.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    // Keep trickling a byte now and then; it must not buy more time.
    for s in slow.iter_mut().step_by(2).take(200) {
        let _ = s.write_all(b"X").await;
    }
    // Every slow connection is closed by the server once the header deadline passes.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, s) in slow.iter_mut().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break, // closed
                Ok(Ok(_)) => continue,           // an error response, then the close
                Err(_) => panic!("slow connection {i} is still open"),
            }
        }
    }
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_the_server_lives_on() {
    let app =
        TestApp::spawn_with(&[("MAX_CONNECTIONS", "20"), ("HEADER_READ_TIMEOUT", "30s")]).await;
    let addr = host(&app);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The 21st connection is accepted and closed at once.
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("refused promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected the connection to be closed");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn_with(&[("COOKIE_SECURE", "true")]).await;
    for resp in [
        app.get("/healthz", None).await,
        app.get("/nope", None).await,
        app.post_json(
            "/login",
            &serde_json::json!({"identifier": "x@example.com", "password": "pw"}),
        )
        .await,
    ] {
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        assert!(h["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age="));
    }
}

async fn register(app: &TestApp, name: &str) -> String {
    let email = format!("{name}@example.com");
    assert_eq!(
        app.register(name, &email, None, PASSWORD).await.status(),
        201
    );
    email
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_outages_lose_nothing_send_nothing_twice_and_never_slow_the_answer() {
    // A port where nothing listens: the provider refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let app = TestApp::spawn_with(&[
        ("SMTP_URL", &smtp),
        ("NOTIFY_TIMEOUT", "1s"),
        ("OUTBOX_RETRY_BASE", "1s"),
        ("OUTBOX_MAX_ATTEMPTS", "50"),
    ])
    .await;
    let users = ["ann", "ben", "cat"];
    for u in users {
        register(&app, u).await;
    }
    let unknown = app.forgot("nobody").await;
    let (_, unknown_body) = json(unknown).await;
    let started = Instant::now();
    let (status, body) = json(app.forgot("ann").await).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((status, &body), (200, &unknown_body));
    app.wait_for_log("will retry", Duration::from_secs(10))
        .await;

    // Now it accepts connections and never answers: attempts time out.
    let hung = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mark = app.logs().len();
    let started = Instant::now();
    assert_eq!(app.forgot("ben").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // An attempt made in this phase is cut by NOTIFY_TIMEOUT (1 s) and logged as such;
    // only what was logged since the listener hung counts.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !app.logs()[mark..].contains("timed out") {
        assert!(
            Instant::now() < deadline,
            "no delivery attempt timed out against the hung provider:\n{}",
            &app.logs()[mark..]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(hung);

    // The provider is back: every message arrives, exactly once.
    let sink = SmtpSink::start_on(port);
    assert_eq!(app.forgot("cat").await.status(), 200);
    for u in users {
        let mails = sink
            .wait_for(&format!("{u}@example.com"), 1, Duration::from_secs(40))
            .await;
        extract_code(&mails[0].text());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for u in users {
        assert_eq!(
            sink.messages_to(&format!("{u}@example.com")).len(),
            1,
            "{u}"
        );
    }
    assert!(sink.messages_to("nobody@example.com").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_exits_zero() {
    // A deliberately slow hash makes a login take a while.
    let mut app = TestApp::spawn_with(&[
        ("ARGON2_MEMORY_KIB", "65536"),
        ("ARGON2_ITERATIONS", "8"),
        ("SHUTDOWN_GRACE", "20s"),
    ])
    .await;
    register(&app, "dora").await;
    let client = app.client.clone();
    let url = format!("{}/login", app.addr);
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&serde_json::json!({"identifier": "dora", "password": PASSWORD}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.terminate();
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight login is answered");
    assert_eq!(resp.status(), 200);
    let status = app.wait_exit(Duration::from_secs(30)).await.expect("exits");
    assert!(status.success(), "{status:?}");
    let logs = app.logs();
    assert!(
        logs.contains("shutting down") && logs.contains("outbox worker stopped"),
        "{logs}"
    );
}
