//! Attacks on how the client address and request id are read: forwarded headers,
//! IPv6 prefixes, connection caps, forged request ids.
//!
//! Per-IP limits are shown with `RATE_LOGIN_PER_IP=3/1h`: three logins (to accounts that do
//! not exist, so each is a quick 401) spend a bucket, and the fourth from the same client
//! is a 429. An attack that gets a fresh bucket shows up as a fourth 401.

use std::time::{Duration, Instant};

use crate::common::TestApp;
use reqwest::header::HeaderValue;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PER_IP: (&str, &str) = ("RATE_LOGIN_PER_IP", "3/1h");
const LOCAL_PROXY: (&str, &str) = ("TRUSTED_PROXIES", "127.0.0.1/32");
/// The longest any raw exchange here may take.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// POST /login for an account that does not exist, with `forwarded` as X-Forwarded-For
/// header lines (in order); returns the status.
async fn login_via(app: &TestApp, n: usize, forwarded: &[&str]) -> u16 {
    let mut req = app
        .request(reqwest::Method::POST, "/login")
        .json(&json!({ "identifier": format!("nobody{n}"), "password": "wrong password 1" }));
    for line in forwarded {
        req = req.header("x-forwarded-for", *line);
    }
    app.send(req, "POST /login").await.status().as_u16()
}

/// Sends one login per `forwarded` list and returns the statuses.
async fn logins(app: &TestApp, forwarded: &[Vec<String>]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (n, lines) in forwarded.iter().enumerate() {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        statuses.push(login_via(app, n, &lines).await);
    }
    statuses
}

/// Three logins pass, the fourth is limited: the four shared one bucket.
const ONE_BUCKET: [u16; 4] = [401, 401, 401, 429];

#[tokio::test]
async fn a_forged_entry_left_of_an_unparsable_forwarded_entry_is_not_the_client() {
    let app = TestApp::spawn_with(&[LOCAL_PROXY, PER_IP]).await;
    // The attacker rotates its own X-Forwarded-For entry; the proxy appends what it saw,
    // in a form the old parser skipped — so the forged entry used to be "the client",
    // a fresh one (with a fresh budget) on every request.
    for (what, appended) in [
        ("`unknown`", "unknown"),
        ("an address with a port", "198.51.100.7:5678"),
        (
            "a bracketed IPv6 address with a port",
            "[2001:db8:77::1]:443",
        ),
    ] {
        let one_line: Vec<Vec<String>> = (0..4)
            .map(|i| vec![format!("203.0.113.{i}, {appended}")])
            .collect();
        assert_eq!(logins(&app, &one_line).await, ONE_BUCKET, "{what}");
    }
    // The same when the proxy adds its own header line after the client's.
    let two_lines: Vec<Vec<String>> = (0..4)
        .map(|i| vec![format!("203.0.113.{}", 100 + i), "198.51.100.8:1234".into()])
        .collect();
    assert_eq!(
        logins(&app, &two_lines).await,
        ONE_BUCKET,
        "two header lines"
    );
}

#[tokio::test]
async fn an_unparsable_forwarded_entry_makes_the_reporting_proxy_the_client() {
    // An entry that is not an address ends the walk at the proxy that reported it: the
    // proxy's bucket is spent, whatever the client forged further left, and a request
    // with no header at all from the proxy shares it.
    let app = TestApp::spawn_with(&[LOCAL_PROXY, PER_IP]).await;
    let forged: Vec<Vec<String>> = ["unknown", "_hidden", "not-an-address!"]
        .iter()
        .enumerate()
        .map(|(i, junk)| vec![format!("203.0.113.{i}, {junk}")])
        .collect();
    assert_eq!(logins(&app, &forged).await, [401, 401, 401]);
    assert_eq!(login_via(&app, 9, &[]).await, 429);
}

#[tokio::test]
async fn addresses_in_one_ipv6_64_share_one_rate_limit_bucket() {
    let app = TestApp::spawn_with(&[LOCAL_PROXY, PER_IP]).await;
    // Four addresses of one /64, as an attacker holding it would rotate through them.
    let same_64: Vec<Vec<String>> = ["::1", "::2", ":ffff:ffff:ffff:ffff", ":1234:5678:9abc:def0"]
        .iter()
        .map(|host| vec![format!("2001:db8:1:2{host}")])
        .collect();
    assert_eq!(logins(&app, &same_64).await, ONE_BUCKET);
    // The neighbouring /64 is someone else, with a budget of its own.
    assert_eq!(login_via(&app, 10, &["2001:db8:1:3::1"]).await, 401);
    // Written with brackets and a port, the same /64 is still the same bucket.
    assert_eq!(login_via(&app, 11, &["[2001:db8:1:2::99]:443"]).await, 429);
}

#[tokio::test]
async fn the_ipv6_prefix_is_configurable() {
    let app = TestApp::spawn_with(&[LOCAL_PROXY, PER_IP, ("RATE_LIMIT_IPV6_PREFIX", "48")]).await;
    // Four different /64s of one /48: one bucket.
    let same_48: Vec<Vec<String>> = (1..=4)
        .map(|i| vec![format!("2001:db8:1:{i}::1")])
        .collect();
    assert_eq!(logins(&app, &same_48).await, ONE_BUCKET);
    for bad in ["16", "129", "sixty-four"] {
        let refused = TestApp::try_spawn(&[("RATE_LIMIT_IPV6_PREFIX", bad)], &[]).await;
        let output = refused
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(output.contains("RATE_LIMIT_IPV6_PREFIX"), "{bad}: {output}");
    }
}

/// Starts the server on a dual-stack or IPv4-mapped listener, or `None` (with a note)
/// when this host cannot.
async fn spawn_on(listen: &str, overrides: &[(&str, &str)]) -> Option<TestApp> {
    let mut env = overrides.to_vec();
    env.push(("LISTEN_ADDR", listen));
    match TestApp::try_spawn(&env, &[]).await {
        Ok(app) => Some(app),
        Err(output) => {
            eprintln!("SKIPPED: cannot listen on {listen} here:\n{output}");
            None
        }
    }
}

fn port(app: &TestApp) -> u16 {
    app.addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {}", app.addr))
}

#[tokio::test]
async fn an_ipv4_trusted_proxy_matches_its_ipv4_mapped_address() {
    // An IPv6 socket bound to an IPv4-mapped address sees its IPv4 peers as ::ffff:a.b.c.d,
    // as a dual-stack `[::]` listener does — but listens on loopback only.
    let Some(app) = spawn_on("[::ffff:127.0.0.1]:0", &[LOCAL_PROXY, PER_IP]).await else {
        return;
    };
    let url = format!("http://127.0.0.1:{}/login", port(&app));
    let (app, url) = (&app, url.as_str());
    let login = |n: usize, forwarded: String| {
        let req = app
            .client
            .post(url)
            .header("x-forwarded-for", forwarded)
            .json(&json!({ "identifier": format!("nobody{n}"), "password": "wrong password 1" }));
        async move { app.send(req, "POST /login").await.status().as_u16() }
    };
    // The proxy (peer ::ffff:127.0.0.1) is trusted, so each forwarded client has its own
    // bucket: five different clients, five 401s. Unmatched, all five would have shared the
    // proxy's bucket and the fourth would have been a 429.
    for i in 0..5 {
        assert_eq!(login(i, format!("203.0.113.{i}")).await, 401, "client {i}");
    }
    // And one forwarded client is still held to its own limit.
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(login(10 + i, "198.51.100.1".into()).await);
    }
    assert_eq!(statuses, ONE_BUCKET);
}

// ---------------------------------------------------------------------------------------
// The per-IP connection cap
// ---------------------------------------------------------------------------------------

/// Sends `GET /healthz` on `stream` (kept alive) and returns the status, or `None` if the
/// server closed the connection without answering.
async fn healthz_on(stream: &mut TcpStream) -> Option<u16> {
    let exchange = async {
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return text.split(' ').nth(1).and_then(|s| s.parse().ok());
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(RAW_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer and no close within {RAW_TIMEOUT:?}"))
}

async fn connect(addr: &str) -> TcpStream {
    tokio::time::timeout(RAW_TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Whether this host can use ::1 at all.
fn ipv6_loopback_works() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[tokio::test]
async fn connections_past_the_per_ip_cap_are_refused_and_others_still_served() {
    if !ipv6_loopback_works() {
        eprintln!("SKIPPED: no ::1 on this host, so no second client address");
        return;
    }
    // Dual stack, so that 127.0.0.1 and ::1 are two clients of one server.
    let Some(app) = spawn_on(
        "[::]:0",
        &[
            ("MAX_CONNECTIONS_PER_IP", "5"),
            ("HEADER_READ_TIMEOUT", "30s"),
        ],
    )
    .await
    else {
        return;
    };
    let v4 = format!("127.0.0.1:{}", port(&app));
    let v6 = format!("[::1]:{}", port(&app));

    // One client takes its five connections, each served and kept open.
    let mut held = Vec::new();
    for i in 0..5 {
        let mut s = connect(&v4).await;
        assert_eq!(healthz_on(&mut s).await, Some(200), "connection {i}");
        held.push(s);
    }
    // Its sixth is closed at once, unanswered.
    for _ in 0..3 {
        let mut extra = connect(&v4).await;
        assert_eq!(
            healthz_on(&mut extra).await,
            None,
            "a sixth connection was served"
        );
    }
    // Another client is served meanwhile, and so are the five held connections.
    let mut other = connect(&v6).await;
    assert_eq!(healthz_on(&mut other).await, Some(200), "the other client");
    for s in &mut held {
        assert_eq!(healthz_on(s).await, Some(200));
    }

    // Once the first client closes its connections, it is served again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(&v4).await;
        if healthz_on(&mut s).await == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed connections were never uncounted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app
        .admin_get("/metrics")
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains(r#"gatehouse_connections_refused_total{reason="max_connections_per_ip"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_ip_cap() {
    // Every client arrives from the proxy's address: capping it would cap them all.
    let app = TestApp::spawn_with(&[
        LOCAL_PROXY,
        ("MAX_CONNECTIONS_PER_IP", "2"),
        ("HEADER_READ_TIMEOUT", "30s"),
    ])
    .await;
    let addr = app.addr.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for i in 0..6 {
        let mut s = connect(&addr).await;
        assert_eq!(healthz_on(&mut s).await, Some(200), "connection {i}");
        held.push(s);
    }
}

// ---------------------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------------------

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// GET /healthz with these X-Request-Id header values; returns the ids echoed.
async fn echoed_ids(app: &TestApp, ids: &[HeaderValue]) -> Vec<String> {
    let mut req = app.request(reqwest::Method::GET, "/healthz");
    for id in ids {
        req = req.header("x-request-id", id.clone());
    }
    let resp = app.send(req, "GET /healthz").await;
    assert_eq!(resp.status(), 200);
    resp.headers()
        .get_all("x-request-id")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

#[tokio::test]
async fn a_forged_request_id_is_replaced_not_echoed() {
    let app = TestApp::spawn().await;
    let huge = format!("FORGED{}", "A".repeat(60_000));
    let forged: Vec<(&str, Vec<HeaderValue>)> = vec![
        ("60 KB", vec![HeaderValue::from_str(&huge).unwrap()]),
        (
            "log fields",
            vec![HeaderValue::from_static(
                "FORGED\" level=ERROR user_id=1 msg=\"password reset for admin",
            )],
        ),
        ("a space", vec![HeaderValue::from_static("FORGED 1")]),
        (
            "non-ASCII",
            vec![HeaderValue::from_bytes("FORGED-caf\u{e9}".as_bytes()).unwrap()],
        ),
        (
            "65 characters",
            vec![HeaderValue::from_str(&format!("FORGED{}", "a".repeat(59))).unwrap()],
        ),
        (
            "two of them",
            vec![
                HeaderValue::from_static("FORGED-one"),
                HeaderValue::from_static("FORGED-two"),
            ],
        ),
    ];
    for (what, ids) in &forged {
        let echoed = echoed_ids(&app, ids).await;
        assert_eq!(echoed.len(), 1, "{what}: {echoed:?}");
        let id = &echoed[0];
        assert!(is_uuid(id), "{what}: echoed {:?}", &id[..id.len().min(80)]);
        // The request was logged under the id that was minted for it.
        app.wait_for_log(&format!("request_id={id}"), Duration::from_secs(5))
            .await;
    }
    let logs = app.logs();
    if let Some(line) = logs.lines().find(|l| l.contains("FORGED")) {
        panic!(
            "a forged id reached the logs: {}",
            line.chars().take(300).collect::<String>()
        );
    }
}

#[tokio::test]
async fn a_well_formed_request_id_is_kept() {
    let app = TestApp::spawn().await;
    for id in [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "svc.web_01-abc",
        &"x".repeat(64),
    ] {
        let echoed = echoed_ids(&app, &[HeaderValue::from_str(id).unwrap()]).await;
        assert_eq!(echoed, [id.to_owned()]);
        app.wait_for_log(&format!("request_id={id}"), Duration::from_secs(5))
            .await;
    }
    // No id at all: one is minted.
    let minted = echoed_ids(&app, &[]).await;
    assert!(minted.len() == 1 && is_uuid(&minted[0]), "{minted:?}");
}
