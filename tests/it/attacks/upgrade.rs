//! Attacks: rows stored under older rules. A database stolen after `ARGON2_*` was raised
//! held every hash not yet rehashed at a login at the old, cheaper cost; an account stored
//! under the old email key (`straße@…`) was not found by `STRASSE@…`, and a second account
//! could take that mailbox as `strasse@…`. The upgrade pass (`gatehouse upgrade-hashes`,
//! and the server at start) wraps the weaker hashes in place and rewrites the old keys.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gatehouse::domain::Identifier;
use gatehouse::store::{ImportUser, Store, User};

use crate::common::TestApp;

const PASSWORD: &str = "correct horse battery";
const PASS_TIMEOUT: Duration = Duration::from_secs(20);

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

async fn user(store: &dyn Store, identifier: &str) -> User {
    let id = Identifier::parse(identifier).expect("an identifier");
    store
        .find_user(&id)
        .await
        .expect("lookup")
        .unwrap_or_else(|| panic!("no user {identifier}"))
}

/// Stores an account the way an earlier version did: the email keyed as NFKC + lower
/// case of the whole address (`email_norm`).
async fn store_old_account(store: &dyn Store, username: &str, email: &str) {
    let email_norm: String = unicode_normalization::UnicodeNormalization::nfkc(email)
        .collect::<String>()
        .to_lowercase();
    let user = ImportUser {
        username: username.to_owned(),
        username_norm: username.to_lowercase(),
        email: email.to_owned(),
        email_norm,
        phone: None,
        password_hash: bcrypt::hash(PASSWORD, 4).expect("bcrypt"),
        created_at: 1_700_000_000,
    };
    assert_eq!(store.import_users(&[user]).await.expect("insert"), 1);
}

/// `gatehouse upgrade-hashes` against the app's database at `iterations`; its stdout.
fn upgrade_hashes(app: &TestApp, iterations: &str) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("upgrade-hashes")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.db_url())
        .env("ARGON2_MEMORY_KIB", "1024")
        .env("ARGON2_ITERATIONS", iterations)
        .env("ARGON2_PARALLELISM", "1")
        .current_dir(app.dir())
        .stdin(Stdio::null())
        .output()
        .expect("run gatehouse");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "upgrade-hashes failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn login_status(app: &TestApp, identifier: &str, password: &str) -> u16 {
    app.login(identifier, password).await.status().as_u16()
}

#[tokio::test]
async fn a_hash_under_weaker_parameters_is_wrapped_in_place_and_still_logs_in() {
    let mut app = TestApp::spawn().await;
    assert_eq!(
        app.register("alice", "alice@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    let store = open_store(&app).await;
    let weak = user(&*store, "alice").await.password_hash;
    assert!(
        weak.starts_with("$argon2id$v=19$m=1024,t=1,p=1,data=bmZrYw$"),
        "{weak}"
    );

    // Raised parameters, the start-up pass off: the command does it.
    app.restart_with(&[
        ("ARGON2_ITERATIONS", "3"),
        ("HASH_UPGRADE_ON_START", "false"),
    ])
    .await;
    assert_eq!(user(&*store, "alice").await.password_hash, weak);
    let out = upgrade_hashes(&app, "3");
    assert!(out.contains("1 hashes wrapped"), "{out}");
    let wrapped = user(&*store, "alice").await.password_hash;
    let (setting, output) = weak.rsplit_once('$').expect("a PHC string");
    assert_eq!(
        wrapped
            .strip_prefix("$gh-wrap-argon2")
            .map(|w| w.starts_with(setting)),
        Some(true),
        "{wrapped}"
    );
    assert!(
        wrapped.contains("$argon2id$v=19$m=1024,t=3,p=1,data=YXJnb24y$"),
        "{wrapped}"
    );
    assert!(
        !wrapped.contains(output),
        "the old hash is still stored: {wrapped}"
    );
    // Once is enough.
    let again = upgrade_hashes(&app, "3");
    assert!(again.contains("0 hashes wrapped"), "{again}");
    assert_eq!(user(&*store, "alice").await.password_hash, wrapped);

    // The password still logs in, a wrong one does not, and the login stores a plain hash.
    assert_eq!(login_status(&app, "alice", "wrong password").await, 401);
    assert_eq!(user(&*store, "alice").await.password_hash, wrapped);
    assert_eq!(login_status(&app, "alice", PASSWORD).await, 200);
    let plain = user(&*store, "alice").await.password_hash;
    assert!(
        plain.starts_with("$argon2id$v=19$m=1024,t=3,p=1,data=bmZrYw$"),
        "{plain}"
    );

    // Raised again, the start-up pass on (the default): the server does it by itself.
    app.restart_with(&[
        ("ARGON2_ITERATIONS", "4"),
        ("HASH_UPGRADE_ON_START", "true"),
    ])
    .await;
    app.wait_for_log("upgrade pass done", PASS_TIMEOUT).await;
    let rewrapped = user(&*store, "alice").await.password_hash;
    assert!(
        rewrapped.starts_with("$gh-wrap-argon2$argon2id$v=19$m=1024,t=3,p=1,data=bmZrYw$"),
        "{rewrapped}"
    );
    assert!(rewrapped.contains("$argon2id$v=19$m=1024,t=4,p=1,data=YXJnb24y$"));
    assert_eq!(login_status(&app, "alice", PASSWORD).await, 200);
    let plain = user(&*store, "alice").await.password_hash;
    assert!(
        plain.starts_with("$argon2id$v=19$m=1024,t=4,p=1,data=bmZrYw$"),
        "{plain}"
    );
}

#[tokio::test]
async fn an_old_email_key_is_rewritten_and_the_mailbox_is_then_taken_in_every_spelling() {
    // Off until the old rows are in place, so the pass cannot run before the gap is shown.
    let mut app = TestApp::spawn_with(&[("HASH_UPGRADE_ON_START", "false")]).await;
    let store = open_store(&app).await;
    store_old_account(&*store, "olduser", "Straße@example.com").await;
    // The gap: the old key holds `straße@`, today's spelling of the mailbox is `strasse@`.
    assert_eq!(
        login_status(&app, "STRASSE@example.com", PASSWORD).await,
        401
    );
    // And a second old row whose mailbox someone registered under today's key meanwhile.
    store_old_account(&*store, "oldmass", "Maß@example.com").await;
    assert_eq!(
        app.register("newmass", "mass@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    let oldmass = user(&*store, "oldmass").await.id;

    app.restart_with(&[("HASH_UPGRADE_ON_START", "true")]).await;
    app.wait_for_log("upgrade pass done", PASS_TIMEOUT).await;

    for spelling in [
        "STRASSE@example.com",
        "strasse@EXAMPLE.com",
        "Straße@example.com",
    ] {
        assert_eq!(
            login_status(&app, spelling, PASSWORD).await,
            200,
            "{spelling}"
        );
    }
    for (n, spelling) in [
        "strasse@example.com",
        "STRASSE@example.com",
        "straße@example.com",
    ]
    .into_iter()
    .enumerate()
    {
        let status = app
            .register(&format!("newuser{n}"), spelling, None, PASSWORD)
            .await
            .status();
        assert_eq!(status, 409, "{spelling}");
    }

    // The taken key is left for the operator: logged by user id only, and counted.
    let logs = app.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("email key not rewritten"))
        .unwrap_or_else(|| panic!("no warning; logs:\n{logs}"));
    assert!(warning.contains(&format!("user_id={oldmass}")), "{warning}");
    assert!(!warning.contains('@'), "an address in the log: {warning}");
    let out = upgrade_hashes(&app, "1");
    assert!(
        out.contains("0 email keys rewritten, 1 email keys left"),
        "{out}"
    );
}
