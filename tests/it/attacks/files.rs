//! Attacks: files. What a local user, a backup reader or a log reader finds on the
//! machine: the SQLite files and the key file (readable by their owner only, the secret
//! never in the database), the idle clock of sessions, and SQL text in the logs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{db, extract_code, json, session_cookie, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

fn on_sqlite() -> bool {
    db::backend() == "sqlite"
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The database, its WAL and shared-memory files, and the key file beside them.
fn files_of(db: &Path) -> [PathBuf; 4] {
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", db.display()));
    [db.to_owned(), with("-wal"), with("-shm"), with(".key")]
}

fn db_path(app: &TestApp) -> PathBuf {
    PathBuf::from(app.db_url().trim_start_matches("sqlite://"))
}

async fn register(app: &TestApp, name: &str) -> String {
    let email = format!("{name}@example.com");
    let (status, body) = json(app.register(name, &email, None, PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    email
}

async fn code_by_email(app: &TestApp, email: &str) -> String {
    let before = app.smtp.messages_to(email).len();
    assert_eq!(app.forgot(email).await.status(), 200);
    let mails = app.smtp.wait_for(email, before + 1, DELIVERY_TIMEOUT).await;
    extract_code(&mails[before].text())
}

/// `gatehouse ARGS` against a database, as an operator runs the admin commands.
fn admin(url: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .current_dir(dir)
        .output()
        .expect("run gatehouse")
}

/// Rows of the server_secret table, read straight from the file.
fn stored_secrets(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT COUNT(*) FROM server_secret", [], |row| row.get(0))
        .unwrap()
}

fn key_of(db: &Path) -> String {
    let key = files_of(db)[3].clone();
    std::fs::read_to_string(&key)
        .unwrap_or_else(|e| panic!("{}: {e}", key.display()))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_sqlite_database_files_are_created_private() {
    if !on_sqlite() {
        return;
    }
    let app = TestApp::spawn().await;
    let email = register(&app, "alice").await;
    code_by_email(&app, &email).await;
    let db = db_path(&app);
    for file in files_of(&db) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // An admin command on the same database leaves every file as private as it was.
    let out = admin(&app.db_url(), app.dir(), &["user", "list"]);
    assert!(out.status.success(), "{out:?}");
    for file in files_of(&db) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn a_world_readable_sqlite_database_refuses_to_start() {
    if !on_sqlite() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gatehouse.db");
    let url = format!("sqlite://{}", db.display());
    let overrides = [("DATABASE_URL", url.as_str())];
    let mut app = TestApp::try_spawn(&overrides, &[]).await.unwrap();
    register(&app, "alice").await;
    // Killed, so the -wal and -shm files stay behind as after a crash.
    app.kill();
    drop(app);

    for (i, file) in files_of(&db).into_iter().enumerate() {
        assert!(file.exists(), "{}", file.display());
        for exposed in [0o644, 0o640] {
            chmod(&file, exposed);
            let output = match TestApp::try_spawn(&overrides, &[]).await {
                Ok(_) => panic!("started with {} at {exposed:o}", file.display()),
                Err(output) => output,
            };
            let fix = format!("chmod 600 {}", file.display());
            assert!(output.contains(&fix), "no `{fix}` in:\n{output}");
            assert!(output.contains(&format!("{exposed:o}")), "{output}");
            // The admin commands open the database's files under the same rule (the key
            // file is the server's alone).
            if i < 3 {
                let out = admin(&url, dir.path(), &["user", "list"]);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success() && stderr.contains(&fix), "{out:?}");
            }
            let out = admin(&url, dir.path(), &["check-config"]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success() && stdout.contains(&fix), "{out:?}");
            chmod(&file, 0o600);
        }
    }
    let out = admin(&url, dir.path(), &["check-config"]);
    assert!(out.status.success(), "{out:?}");
    let app = TestApp::try_spawn(&overrides, &[]).await.unwrap();
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn the_sqlite_database_holds_no_server_secret() {
    if !on_sqlite() {
        return;
    }
    let mut app = TestApp::spawn().await;
    let email = register(&app, "alice").await;
    let code = code_by_email(&app, &email).await;
    let db = db_path(&app);
    assert_eq!(stored_secrets(&db), 0);
    let secret = key_of(&db);
    assert!(
        secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret}"
    );

    // An install from before the key file: the same secret, stored in the database only.
    app.kill();
    std::fs::remove_file(&files_of(&db)[3]).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO server_secret (id, secret) VALUES (1, ?1)",
        [&secret],
    )
    .unwrap();
    drop(conn);
    app.restart().await;

    // It moved into the key file, and out of every byte of the database's files.
    assert_eq!(key_of(&db), secret);
    assert_eq!(mode(&files_of(&db)[3]), 0o600);
    assert_eq!(stored_secrets(&db), 0);
    for file in &files_of(&db)[..2] {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is still in {}",
            file.display()
        );
    }
    assert!(app
        .logs()
        .contains("moved the server secret out of the database"));
    // A code issued before the move still validates: the secret is the same one.
    let (status, body) = json(app.validate(&email, &code).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_sqlite_database_holding_another_secret_than_the_key_file_refuses_to_start() {
    if !on_sqlite() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gatehouse.db");
    let url = format!("sqlite://{}", db.display());
    let overrides = [("DATABASE_URL", url.as_str())];
    let mut app = TestApp::try_spawn(&overrides, &[]).await.unwrap();
    app.kill();
    drop(app);
    let key = key_of(&db);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO server_secret (id, secret) VALUES (1, ?1)",
        [&"f".repeat(64)],
    )
    .unwrap();
    drop(conn);
    let output = match TestApp::try_spawn(&overrides, &[]).await {
        Ok(_) => panic!("started with two different secrets"),
        Err(output) => output,
    };
    assert!(output.contains("different"), "{output}");
    // Neither secret was thrown away.
    assert_eq!(key_of(&db), key);
    assert_eq!(stored_secrets(&db), 1);
}

#[tokio::test]
async fn an_active_session_survives_an_idle_timeout_under_a_minute() {
    let app = TestApp::spawn_with(&[
        ("SESSION_IDLE_TIMEOUT", "3s"),
        ("SESSION_ABSOLUTE_TIMEOUT", "1h"),
    ])
    .await;
    register(&app, "alice").await;
    let resp = app.login("alice", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let token = session_cookie(&resp).expect("a session cookie");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (status, body) = json(app.me(&token).await).await;
        assert_eq!(status, 200, "after {:?} in use: {body}", started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(app.me(&token).await.status(), 401);
}

/// SQL keywords as statements start; none belongs in a log at info or warn.
fn assert_no_sql(logs: &str) {
    for keyword in [
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
        "slow statement",
    ] {
        assert!(!logs.contains(keyword), "`{keyword}` in the log:\n{logs}");
    }
}

#[tokio::test]
async fn no_sql_text_reaches_the_log_at_info_or_warn() {
    let app = TestApp::spawn().await;
    let email = register(&app, "alice").await;
    let resp = app.login("alice", PASSWORD).await;
    let token = session_cookie(&resp).expect("a session cookie");
    assert_eq!(app.me(&token).await.status(), 200);
    let code = code_by_email(&app, &email).await;
    assert_eq!(app.validate(&email, "000000").await.status(), 400);
    let (status, body) = json(app.validate(&email, &code).await).await;
    assert_eq!(status, 200, "{body}");
    let reset_token = body["reset_token"].as_str().expect("reset_token");
    let (status, body) = json(app.reset(&email, NEW_PASSWORD, Some(reset_token)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.me(&token).await.status(), 401);
    assert_no_sql(&app.logs());
}

#[tokio::test]
async fn no_sql_text_reaches_the_log_when_a_sqlite_database_statement_is_slow() {
    if !on_sqlite() {
        return;
    }
    // Writers wait up to half of DATABASE_TIMEOUT for the lock: 3 s here.
    let app = TestApp::spawn_with(&[("DATABASE_TIMEOUT", "6s"), ("RUST_LOG", "info")]).await;
    register(&app, "alice").await;

    // Another process holds the write lock for two seconds: every write in the meantime
    // (the registration below, the outbox worker's claims) is a statement slower than
    // sqlx's one-second threshold, which it used to log at WARN with its SQL.
    let db = db_path(&app);
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let started = Instant::now();
    let resp = app
        .post_json(
            "/register",
            &json!({"username": "bob", "email": "bob@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    holder.join().unwrap();
    assert_eq!(app.login("bob", PASSWORD).await.status(), 200);
    assert_no_sql(&app.logs());
}
