//! `gatehouse import-seed`: the old server's MySQL schema, built exactly as its README
//! gives it, filled with bcrypt (cost 12) users and some broken rows, imported through the
//! real binary into whichever backend this run tests, then logged into over HTTP.

mod common;

use std::process::{Command, Output};

use common::{json, TestApp};
use rand::Rng;
use sqlx::{Connection, MySqlConnection};

/// The seed README's schema, verbatim.
const SEED_SCHEMA: &str = "
CREATE TABLE users (
    id INT AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(50) UNIQUE NOT NULL,
    email VARCHAR(100) UNIQUE NOT NULL,
    phone VARCHAR(20) UNIQUE NOT NULL,
    password_hash VARCHAR(255) NOT NULL
);

CREATE TABLE otp_codes (
    id INT AUTO_INCREMENT PRIMARY KEY,
    identifier VARCHAR(100) NOT NULL,
    otp VARCHAR(6) NOT NULL,
    expiry_time DATETIME NOT NULL
);
";

fn mysql_server() -> String {
    std::env::var("GATEHOUSE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".into())
}

/// A seed database of this test's own on MariaDB, dropped at the end.
struct SeedDb {
    name: String,
    url: String,
}

impl SeedDb {
    async fn create() -> (SeedDb, MySqlConnection) {
        let name = format!("gh_seed_{:016x}", rand::thread_rng().gen::<u64>());
        let server = mysql_server();
        let mut admin = MySqlConnection::connect(&server)
            .await
            .expect("MariaDB for the seed");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = format!("{}{name}", server.trim_end_matches('/').to_owned() + "/");
        let mut conn = MySqlConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(SEED_SCHEMA).execute(&mut conn).await.unwrap();
        (SeedDb { name, url }, conn)
    }
}

impl Drop for SeedDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = mysql_server();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(mut c) = MySqlConnection::connect(&server).await {
                        let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
                            .execute(&mut c)
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

fn import(app: &TestApp, from: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["import-seed", "--from", from])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.db_url())
        .current_dir(app.dir())
        .output()
        .expect("run gatehouse import-seed")
}

fn ok_stdout(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn insert(conn: &mut MySqlConnection, username: &str, email: &str, phone: &str, hash: &str) {
    sqlx::query("INSERT INTO users (username, email, phone, password_hash) VALUES (?, ?, ?, ?)")
        .bind(username)
        .bind(email)
        .bind(phone)
        .bind(hash)
        .execute(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn seed_users_are_imported_once_and_log_in_with_their_old_passwords() {
    let (seed, mut conn) = SeedDb::create().await;
    let users = [
        ("user123", "user@example.com", "+1234567890", "Secure@123"),
        (
            "Maria.K",
            "Maria@Example.org",
            "+447700900123",
            "hunter2hunter2",
        ),
        ("sam", "sam@example.net", "555-0100", "correct horse"), // phone not E.164
    ];
    for (u, e, p, pw) in users {
        let hash = bcrypt::hash(pw, 12).unwrap();
        assert!(hash.starts_with("$2b$12$"));
        insert(&mut conn, u, e, p, &hash).await;
    }
    let cheap = bcrypt::hash("whatever", 4).unwrap();
    insert(
        &mut conn,
        "bad_email",
        "not-an-email",
        "+15550000001",
        &cheap,
    )
    .await;
    insert(&mut conn, "x", "short@example.com", "+15550000002", &cheap).await;
    insert(
        &mut conn,
        "plaintext",
        "plain@example.com",
        "+15550000003",
        "Secure@123",
    )
    .await;
    insert(
        &mut conn,
        "dupe",
        "Already@Example.com",
        "+15550000004",
        &cheap,
    )
    .await;

    // Importing into a Gatehouse that already has a user with that email (in another case).
    let app = TestApp::spawn().await;
    let pre = app
        .register(
            "already",
            "already@example.com",
            None,
            "correct horse battery",
        )
        .await;
    assert_eq!(pre.status(), 201);
    let out = ok_stdout(&import(&app, &seed.url));
    assert!(
        out.contains("read 7 seed users: imported 3, skipped 1 as duplicates, rejected 3"),
        "{out}"
    );
    assert!(out.contains("email: is not a valid email address"), "{out}");
    assert!(out.contains("username: must be 3 to 50"), "{out}");
    assert!(out.contains("password_hash: is not a bcrypt hash"), "{out}");
    assert!(
        out.contains("1 imported without their phone number"),
        "{out}"
    );

    let again = ok_stdout(&import(&app, &seed.url));
    assert!(
        again.contains("imported 0, skipped 4 as duplicates"),
        "{again}"
    );
    assert!(again.contains("nothing to import"), "{again}");

    // They log in with their old passwords, by any identifier, and are rehashed.
    for (identifier, password) in [
        ("user@example.com", "Secure@123"),
        ("+447700900123", "hunter2hunter2"),
        ("sam", "correct horse"),
    ] {
        let (status, body) = json(app.login(identifier, password).await).await;
        assert_eq!(status, 200, "{identifier}: {body}");
    }
    assert_eq!(app.login("user123", "Secure@124").await.status(), 401);
    let store = gatehouse::store::connect(&gatehouse::config::DatabaseSettings {
        database_url: app.db_url(),
        database_max_connections: 2,
        database_read_connections: 2,
        database_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap();
    let ident = gatehouse::domain::Identifier::parse("maria.k").unwrap();
    let maria = store.find_user(&ident).await.unwrap().unwrap();
    assert!(
        maria.password_hash.starts_with("$argon2id$"),
        "{}",
        maria.password_hash
    );
    assert_eq!(maria.email, "Maria@Example.org");
    assert_eq!(app.login("Maria.K", "hunter2hunter2").await.status(), 200);
}

#[tokio::test]
async fn a_hundred_thousand_seed_rows_stream_through() {
    let (seed, mut conn) = SeedDb::create().await;
    let hash = bcrypt::hash("bulk password", 4).unwrap();
    sqlx::raw_sql("SET SESSION max_recursive_iterations = 200000")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (username, email, phone, password_hash)
         WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 100000)
         SELECT CONCAT('bulk', n), CONCAT('bulk', n, '@example.com'), CONCAT('+1555', LPAD(n, 7, '0')), ?
         FROM seq",
    )
    .bind(&hash)
    .execute(&mut conn)
    .await
    .unwrap();

    let app = TestApp::spawn().await;
    let started = std::time::Instant::now();
    let out = ok_stdout(&import(&app, &seed.url));
    eprintln!("imported 100,000 rows in {:?}", started.elapsed());
    assert!(
        out.contains(
            "read 100000 seed users: imported 100000, skipped 0 as duplicates, rejected 0"
        ),
        "{out}"
    );
    assert_eq!(app.login("bulk99999", "bulk password").await.status(), 200);
    let again = ok_stdout(&import(&app, &seed.url));
    assert!(
        again.contains("imported 0, skipped 100000 as duplicates"),
        "{again}"
    );
}
