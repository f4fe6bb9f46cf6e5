//! The old server's MySQL database, for `gatehouse import-seed`: its schema exactly as its
//! README gives it, created per test on MariaDB and dropped at the end, and the import run
//! through the real binary.

use std::process::{Command, Output};

use rand::Rng;
use sqlx::{Connection, MySqlConnection};

use super::TestApp;

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
pub struct SeedDb {
    name: String,
    pub url: String,
}

impl SeedDb {
    pub async fn create() -> (SeedDb, MySqlConnection) {
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

/// Runs `gatehouse import-seed --from <from>` into `app`'s database, with the argon2id
/// parameters the server was given (then `overrides`, which win).
pub fn import(app: &TestApp, from: &str, overrides: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.args(["import-seed", "--from", from])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.db_url())
        .current_dir(app.dir());
    for key in [
        "ARGON2_MEMORY_KIB",
        "ARGON2_ITERATIONS",
        "ARGON2_PARALLELISM",
    ] {
        if let Some(value) = app.env_value(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs(overrides.iter().copied());
    cmd.output().expect("run gatehouse import-seed")
}

/// The command's standard output, after asserting it succeeded.
pub fn ok_stdout(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// One row of the seed's `users` table.
pub async fn insert(
    conn: &mut MySqlConnection,
    username: &str,
    email: &str,
    phone: &str,
    hash: &str,
) {
    sqlx::query("INSERT INTO users (username, email, phone, password_hash) VALUES (?, ?, ?, ?)")
        .bind(username)
        .bind(email)
        .bind(phone)
        .bind(hash)
        .execute(conn)
        .await
        .unwrap();
}
