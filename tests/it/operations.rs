//! Operating Gatehouse: health and readiness, Prometheus metrics, logs that never carry a
//! secret, the audit trail, and the admin CLI — all through the real binary.

use std::process::Output;

use crate::common::{extract_code, json, session_cookie, TestApp, DELIVERY_TIMEOUT};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// Runs `gatehouse ARGS` against the app's database, with `stdin` piped in.
fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) -> Output {
    crate::common::cli_with_stdin(app, args, stdin)
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "gatehouse failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli_json(app: &TestApp, args: &[&str]) -> Value {
    serde_json::from_str(&stdout(&cli(app, args, None))).expect("JSON output")
}

async fn register_and_login(app: &TestApp, name: &str) -> String {
    let email = format!("{name}@example.com");
    assert_eq!(
        app.register(name, &email, Some("+14155550111"), PASSWORD)
            .await
            .status(),
        201
    );
    session_cookie(&app.login(name, PASSWORD).await).expect("session")
}

#[tokio::test]
async fn health_and_readiness_describe_each_check() {
    let app = TestApp::spawn().await;
    let (status, body) = json(app.get("/healthz", None).await).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = json(app.admin_get("/readyz").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["migrations"]["status"], "ok");
    assert_eq!(body["checks"]["outbox_worker"]["status"], "ok");
    assert_eq!(body["checks"]["rate_limits"]["backend"], "memory");
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_counters_move_with_traffic() {
    let app = TestApp::spawn().await;
    let before = app.admin_get("/metrics").await.text().await.unwrap();
    register_and_login(&app, "alice").await;
    assert_eq!(app.login("alice", "wrong password!").await.status(), 401);
    assert_eq!(app.forgot("alice").await.status(), 200);
    let mail = app
        .smtp
        .wait_for("alice@example.com", 1, DELIVERY_TIMEOUT)
        .await;
    let code = extract_code(&mail[0].text());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(app.validate("alice", wrong).await.status(), 400);
    assert_eq!(app.validate("alice", &code).await.status(), 200);

    let resp = app.admin_get("/metrics").await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let after = resp.text().await.unwrap();
    let moved =
        |name: &str, labels: &[&str]| metric(&after, name, labels) - metric(&before, name, labels);
    assert!(
        moved(
            "gatehouse_http_requests_total",
            &["route=\"/login\"", "status=\"200\""]
        ) >= 1.0,
        "{after}"
    );
    assert!(moved("gatehouse_logins_total", &["result=\"succeeded\""]) >= 1.0);
    assert!(moved("gatehouse_logins_total", &["result=\"failed\""]) >= 1.0);
    assert!(moved("gatehouse_otp_codes_total", &["event=\"requested\""]) >= 1.0);
    assert!(moved("gatehouse_otp_codes_total", &["event=\"validated\""]) >= 1.0);
    assert!(moved("gatehouse_otp_codes_total", &["event=\"rejected\""]) >= 1.0);
    assert!(
        moved(
            "gatehouse_outbox_deliveries_total",
            &["channel=\"email\"", "result=\"delivered\""]
        ) >= 1.0
    );
    assert!(moved("gatehouse_password_hash_duration_seconds_count", &[]) >= 2.0);
    assert!(after.contains("gatehouse_http_request_duration_seconds_bucket"));
    assert!(after.contains("gatehouse_password_hash_queue_wait_seconds"));
    assert!(after.contains("gatehouse_outbox_pending"));
    assert!(after.contains("gatehouse_db_pool_connections"));
}

#[tokio::test]
async fn rate_limit_rejections_are_counted_by_rule() {
    let app = TestApp::spawn_with(&[("RATE_FORGOT_PER_ACCOUNT", "1/1m")]).await;
    app.forgot("someone").await;
    assert_eq!(app.forgot("someone").await.status(), 429);
    let text = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metric(
            &text,
            "gatehouse_rate_limit_rejections_total",
            &["rule=\"forgot:account\""]
        ) >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn the_log_of_a_whole_recovery_carries_no_secret() {
    for format in ["text", "json"] {
        let app = TestApp::spawn_with(&[("LOG_FORMAT", format)]).await;
        let session = register_and_login(&app, "bob").await;
        assert_eq!(app.forgot("bob").await.status(), 200);
        let mail = app
            .smtp
            .wait_for("bob@example.com", 1, DELIVERY_TIMEOUT)
            .await;
        let code = extract_code(&mail[0].text());
        let (_, body) = json(app.validate("bob", &code).await).await;
        let reset = body["reset_token"].as_str().unwrap().to_owned();
        assert_eq!(
            app.reset("bob", NEW_PASSWORD, Some(&reset)).await.status(),
            200
        );
        let fresh = session_cookie(&app.login("bob", NEW_PASSWORD).await).unwrap();
        app.smtp
            .wait_for("bob@example.com", 2, DELIVERY_TIMEOUT)
            .await;

        let logs = app.logs();
        assert!(
            logs.contains("request_id"),
            "{format}: requests carry an id"
        );
        for secret in [
            PASSWORD,
            NEW_PASSWORD,
            code.as_str(),
            reset.as_str(),
            session.as_str(),
            fresh.as_str(),
        ] {
            assert!(
                !logs.contains(secret),
                "{format}: the log contains a secret: {secret}"
            );
        }
        if format == "json" {
            for line in logs.lines().filter(|l| l.starts_with('{')) {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            }
        }
    }
}

#[tokio::test]
async fn only_the_console_notifier_prints_a_code_and_it_says_so() {
    let app = TestApp::try_spawn(
        &[],
        &["SMTP_URL", "TWILIO_SID", "TWILIO_TOKEN", "TWILIO_PHONE"],
    )
    .await
    .unwrap();
    assert!(app.logs().contains("PRINTED TO THIS LOG"));
    register_and_login(&app, "carol").await;
    assert_eq!(app.forgot("carol").await.status(), 200);
    app.wait_for_log("DEV ONLY, not delivered", DELIVERY_TIMEOUT)
        .await;
    let logs = app.logs();
    let line = logs.lines().find(|l| l.contains("DEV ONLY")).unwrap();
    let code = extract_code(line);
    let elsewhere = logs
        .lines()
        .filter(|l| l.contains(&code) && !l.contains("DEV ONLY"))
        .count();
    assert_eq!(elsewhere, 0, "{logs}");
}

#[tokio::test]
async fn the_audit_trail_records_each_security_event_and_the_cli_prints_it() {
    let app = TestApp::spawn().await;
    let token = register_and_login(&app, "dave").await;
    assert_eq!(app.logout(&token).await.status(), 200);
    let failed = app
        .request(reqwest::Method::POST, "/login")
        .header("user-agent", "ops-test/1.0")
        .json(&serde_json::json!({"identifier": "dave", "password": "wrong password!"}));
    assert_eq!(app.send(failed, "failed login").await.status(), 401);
    app.forgot("dave").await;
    let mail = app
        .smtp
        .wait_for("dave@example.com", 1, DELIVERY_TIMEOUT)
        .await;
    let code = extract_code(&mail[0].text());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(app.validate("dave", wrong).await.status(), 400);
    let (_, body) = json(app.validate("dave", &code).await).await;
    app.reset("dave", NEW_PASSWORD, body["reset_token"].as_str())
        .await;

    let events = cli_json(&app, &["audit", "--user", "dave@example.com", "--json"]);
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "registered",
        "login_succeeded",
        "logged_out",
        "login_failed",
        "code_requested",
        "code_failed",
        "code_validated",
        "password_reset",
        "sessions_revoked",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let first = &events[0];
    assert_eq!(first["ip"], "127.0.0.1");
    assert!(first["created_at"].is_i64(), "{first}");
    let failed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "login_failed")
        .unwrap();
    assert_eq!(failed["user_agent"], "ops-test/1.0");

    let table = stdout(&cli(
        &app,
        &["audit", "--user", "dave", "--since", "1h"],
        None,
    ));
    assert!(
        table.starts_with("TIME") && table.contains("login_failed"),
        "{table}"
    );
    let none = cli_json(
        &app,
        &[
            "audit",
            "--user",
            "dave",
            "--since",
            "2999-01-01T00:00:00Z",
            "--json",
        ],
    );
    assert_eq!(none.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn the_admin_cli_lists_shows_disables_and_enables_users() {
    let app = TestApp::spawn().await;
    let session = register_and_login(&app, "erin").await;
    assert_eq!(
        app.register("frank", "frank@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );

    let all = cli_json(&app, &["user", "list", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let found = cli_json(&app, &["user", "list", "--search", "ERIN", "--json"]);
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["username"], "erin");
    let table = stdout(&cli(&app, &["user", "list"], None));
    assert!(
        table.starts_with("ID") && table.contains("frank@example.com"),
        "{table}"
    );
    let shown = cli_json(&app, &["user", "show", "+14155550111", "--json"]);
    assert_eq!(
        (shown["username"].as_str(), shown["disabled"].as_bool()),
        (Some("erin"), Some(false))
    );

    stdout(&cli(&app, &["user", "disable", "erin"], None));
    assert_eq!(
        app.me(&session).await.status(),
        401,
        "disabling revokes sessions"
    );
    // A disabled account answers exactly like an unknown one.
    let (s1, b1) = json(app.login("erin", PASSWORD).await).await;
    let (s2, b2) = json(app.login("nobody", PASSWORD).await).await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(s1, 401);
    let (s1, b1) = json(app.forgot("erin").await).await;
    let (s2, b2) = json(app.forgot("nobody").await).await;
    assert_eq!((s1, b1), (s2, b2));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        app.smtp.messages_to("erin@example.com").is_empty(),
        "no code for a disabled account"
    );
    assert_eq!(
        cli_json(&app, &["user", "show", "erin", "--json"])["disabled"],
        true
    );

    stdout(&cli(&app, &["user", "enable", "erin"], None));
    assert_eq!(app.login("erin", PASSWORD).await.status(), 200);
    let events = cli_json(&app, &["audit", "--user", "erin", "--json"]);
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "account_disabled"));

    let missing = cli(&app, &["user", "show", "ghost"], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user matches"));
}

#[tokio::test]
async fn the_admin_cli_revokes_sessions_and_sets_a_password_from_stdin() {
    let app = TestApp::spawn().await;
    let session = register_and_login(&app, "grace").await;
    let out = stdout(&cli(&app, &["user", "revoke-sessions", "grace"], None));
    assert!(out.contains("revoked 1 session"), "{out}");
    assert_eq!(app.me(&session).await.status(), 401);

    let session = session_cookie(&app.login("grace", PASSWORD).await).unwrap();
    // The policy applies to administrators too.
    let weak = cli(&app, &["user", "set-password", "grace"], Some("password\n"));
    assert!(!weak.status.success());
    stdout(&cli(
        &app,
        &["user", "set-password", "grace"],
        Some(&format!("{NEW_PASSWORD}\n")),
    ));
    assert_eq!(app.me(&session).await.status(), 401);
    assert_eq!(app.login("grace", PASSWORD).await.status(), 401);
    assert_eq!(app.login("grace", NEW_PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn check_config_passes_on_a_good_setup_and_fails_clearly_on_a_bad_one() {
    let app = TestApp::spawn().await;
    let smtp = app.smtp.url();
    let good = cli(&app, &["check-config", "--smtp-url", &smtp], None);
    let text = stdout(&good);
    assert!(
        text.contains("ok    database") && text.contains("ok    smtp"),
        "{text}"
    );

    let refused = "smtp://127.0.0.1:1";
    let bad = cli(
        &app,
        &[
            "check-config",
            "--smtp-url",
            refused,
            "--redis-url",
            "redis://127.0.0.1:1/",
        ],
        None,
    );
    assert!(!bad.status.success());
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("FAIL  smtp") && text.contains("FAIL  redis"),
        "{text}"
    );
    let invalid = cli(&app, &["check-config", "--secret-key", "short"], None);
    assert!(!invalid.status.success());
    assert!(String::from_utf8_lossy(&invalid.stdout).contains("SECRET_KEY"));
}

#[tokio::test]
async fn migrate_reports_the_schema_version() {
    let app = TestApp::spawn().await;
    let out = stdout(&cli(&app, &["migrate"], None));
    assert!(out.starts_with("schema is at version "), "{out}");
}
