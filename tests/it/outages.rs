//! Database outages and crashes: requests fail fast with 503 and recover without a
//! restart when the database comes back, and a `kill -9` in the middle of thousands of
//! writes leaves every acknowledged write in place and nothing half-done.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{self, extract_code, json, TestApp};
use gatehouse::auth::password::PasswordHasher;
use gatehouse::config::{DatabaseSettings, HashSettings};
use gatehouse::domain::{Identifier, Password};
use gatehouse::store::Store;
use sqlx::Connection;
use tokio::sync::Semaphore;

const PASSWORD: &str = "correct horse battery";

async fn open_store(url: &str) -> Arc<dyn Store> {
    gatehouse::store::connect(&DatabaseSettings {
        database_url: url.to_owned(),
        database_max_connections: 4,
        database_read_connections: 2,
        database_timeout: Duration::from_secs(5),
    })
    .await
    .expect("open the database")
}

/// Sends a registration and checks that it fails fast with the outage answer.
async fn assert_prompt_503(app: &TestApp, name: &str) {
    let started = Instant::now();
    let resp = app
        .register(name, &format!("{name}@example.com"), None, PASSWORD)
        .await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 503, "{name}");
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        json(resp).await.1,
        serde_json::json!({"error": "Service temporarily unavailable", "code": "unavailable"})
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let started = Instant::now();
    assert_eq!(app.get("/readyz", None).await.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_locked_sqlite_database_gives_a_prompt_503_and_recovers() {
    if common::db::backend() != "sqlite" {
        return; // this case is about the SQLite file; PostgreSQL has its own below
    }
    let app = TestApp::spawn_with(&[("DATABASE_TIMEOUT", "1s")]).await;
    assert_eq!(
        app.register("before", "before@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );

    // Another process takes the write lock and holds it: to us the file is unwritable.
    let path = app.db_url().trim_start_matches("sqlite://").to_owned();
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    assert_prompt_503(&app, "during").await;

    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    assert_eq!(
        app.register("after", "after@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    assert_eq!(app.login("before", PASSWORD).await.status(), 200);
}

/// A PostgreSQL cluster of this test's own, so stopping it disturbs no other test.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn run_as_postgres(args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser (util-linux) must be installed");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pg_bin(tool: &str) -> String {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL server binaries");
    let mut dirs: Vec<_> = versions.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    let dir = dirs.last().expect("a PostgreSQL version");
    dir.join("bin").join(tool).display().to_string()
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Command::new("chown")
            .args(["postgres", &dir.path().display().to_string()])
            .status()
            .unwrap();
        let data = dir.path().join("data");
        run_as_postgres(&[
            &pg_bin("initdb"),
            "-D",
            &data.display().to_string(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        let pg = OwnPostgres { dir, port };
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        run_as_postgres(&[
            &pg_bin("pg_ctl"),
            "-D",
            &self.data(),
            "-o",
            &opts,
            "-l",
            &log,
            "-w",
            "start",
        ]);
    }

    fn down(&self) {
        run_as_postgres(&[
            &pg_bin("pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_bin("pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

#[tokio::test]
async fn a_stopped_postgres_gives_a_prompt_503_and_the_same_process_recovers() {
    if common::db::backend() != "sqlite" {
        return; // runs once per suite run, on its own cluster
    }
    let pg = OwnPostgres::start();
    let url = pg.url();
    let app = TestApp::spawn_with(&[("DATABASE_URL", &url), ("DATABASE_TIMEOUT", "1s")]).await;
    assert_eq!(
        app.register("before", "before@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );

    pg.down();
    assert_prompt_503(&app, "during").await;
    assert_prompt_503(&app, "during2").await;

    pg.up();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = app
            .register("after", "after@example.com", None, PASSWORD)
            .await
            .status();
        if status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    assert_eq!(app.login("before", PASSWORD).await.status(), 200);
}

/// Runs `n` copies of `job` with at most `width` at once; returns their outputs.
async fn bounded<F, Fut, T>(n: usize, width: usize, job: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let gate = Arc::new(Semaphore::new(width));
    let runs = (0..n).map(|i| {
        let gate = gate.clone();
        let fut = job(i);
        async move {
            let _slot = gate.acquire_owned().await.unwrap();
            fut.await
        }
    });
    futures::future::join_all(runs).await
}

async fn verifies(hasher: &PasswordHasher, stored: &str, password: &str) -> bool {
    let p = Password::parse("password", password.to_owned()).unwrap();
    hasher.verify(&p, Some(stored)).await.unwrap().ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_thousands_of_writes_loses_nothing_acknowledged() {
    const N: usize = 2000;
    let mut app = TestApp::spawn_with(&[("OUTBOX_WORKERS", "16")]).await;

    // 2,000 accounts, each holding a reset token, ready to be reset.
    let names: Vec<String> = (0..N).map(|i| format!("old{i}")).collect();
    bounded(N, 64, |i| {
        let (app, name) = (&app, &names[i]);
        async move {
            let status = app
                .register(name, &format!("{name}@example.com"), None, PASSWORD)
                .await
                .status();
            assert_eq!(status, 201);
            assert_eq!(app.forgot(name).await.status(), 200);
        }
    })
    .await;
    let tokens: Vec<String> = bounded(N, 64, |i| {
        let (app, name) = (&app, &names[i]);
        async move {
            let mail = app
                .smtp
                .wait_for(&format!("{name}@example.com"), 1, Duration::from_secs(60))
                .await;
            let (status, body) =
                json(app.validate(name, &extract_code(&mail[0].text())).await).await;
            assert_eq!(status, 200, "{body}");
            body["reset_token"].as_str().unwrap().to_owned()
        }
    })
    .await;

    // 2,000 registrations and 2,000 resets in flight; the server dies under them.
    let fresh: Vec<String> = (0..N).map(|i| format!("new{i}")).collect();
    let new_password = |i: usize| format!("brand new passphrase {i}");
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let work = bounded(2 * N, 128, |k| {
        let (app, answered) = (&app, &answered);
        let (fresh, names, tokens) = (&fresh, &names, &tokens);
        async move {
            let resp = if k % 2 == 0 {
                let name = &fresh[k / 2];
                app.client
                    .post(app.url("/register"))
                    .json(&serde_json::json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}))
                    .send()
                    .await
            } else {
                let i = k / 2;
                app.client
                    .post(app.url("/reset-password"))
                    .json(&serde_json::json!({"identifier": names[i], "new_password": new_password(i), "reset_token": tokens[i]}))
                    .send()
                    .await
            };
            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (k, resp.map(|r| r.status().as_u16()).unwrap_or(0))
        }
    });
    let pid = app.pid().expect("running").to_string();
    let killer = async {
        // Kill once about a quarter has been answered: well inside the run.
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.load(std::sync::atomic::Ordering::Relaxed) < N / 2
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(killed.success());
    };
    let (results, ()) = tokio::join!(work, killer);
    let acknowledged: Vec<usize> = results
        .iter()
        .filter(|(_, s)| (200..300).contains(s))
        .map(|(k, _)| *k)
        .collect();
    let failed_after_kill = results.iter().filter(|(_, s)| *s == 0).count();
    eprintln!(
        "acknowledged {} writes before the kill; {failed_after_kill} got no answer",
        acknowledged.len()
    );
    assert!(
        !acknowledged.is_empty() && failed_after_kill > 0,
        "the kill must land mid-run"
    );

    app.kill(); // reap it
    app.restart().await;
    assert_eq!(
        app.get("/readyz", None).await.status(),
        200,
        "starts cleanly"
    );
    let store = open_store(&app.db_url()).await;
    let hasher = PasswordHasher::new(&HashSettings {
        argon2_memory_kib: 1024,
        argon2_iterations: 1,
        argon2_parallelism: 1,
        hash_concurrency: 2,
        hash_nice: 0,
    })
    .unwrap();
    for k in &acknowledged {
        if k % 2 == 0 {
            let name = &fresh[k / 2];
            let user = store
                .find_user(&Identifier::parse(name).unwrap())
                .await
                .unwrap();
            let user = user.unwrap_or_else(|| panic!("{name} was acknowledged but is missing"));
            assert!(
                verifies(&hasher, &user.password_hash, PASSWORD).await,
                "{name}"
            );
        }
    }
    // Every reset is all or nothing: the new password with the token consumed, or the
    // old password with the token still live — and every acknowledged one is done.
    let acked: std::collections::HashSet<usize> = acknowledged.iter().copied().collect();
    let now = chrono::Utc::now().timestamp();
    for i in 0..N {
        let user = store
            .find_user(&Identifier::parse(&names[i]).unwrap())
            .await
            .unwrap()
            .unwrap();
        let token_live = store
            .live_reset_token(
                user.id,
                &gatehouse::auth::token::token_hash(&tokens[i]),
                now,
            )
            .await
            .unwrap()
            .is_some();
        let is_new = verifies(&hasher, &user.password_hash, &new_password(i)).await;
        if acked.contains(&(2 * i + 1)) {
            assert!(
                is_new && !token_live,
                "acknowledged reset of {} is not in place",
                names[i]
            );
        } else if is_new {
            assert!(
                !token_live,
                "{}: new password but the token is still live",
                names[i]
            );
        } else {
            assert!(
                verifies(&hasher, &user.password_hash, PASSWORD).await,
                "{}: neither password",
                names[i]
            );
            assert!(
                token_live,
                "{}: old password but the token was consumed",
                names[i]
            );
        }
    }
}
