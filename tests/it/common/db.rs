//! A fresh database per test on the backend named by `GATEHOUSE_TEST_BACKEND`
//! (`sqlite`, the default, `postgres` or `mysql`), so the same black-box suites run against
//! every engine. Server databases are created on the server named by
//! `GATEHOUSE_TEST_POSTGRES_URL` / `GATEHOUSE_TEST_MYSQL_URL` and dropped when the test ends.

use std::path::Path;

use rand::Rng;
use sqlx::Connection;

pub struct TestDatabase {
    pub url: String,
    drop_with: Option<(String, String, String)>, // (server URL, database name, backend)
}

/// The backend the black-box suites run against in this process.
pub fn backend() -> String {
    std::env::var("GATEHOUSE_TEST_BACKEND").unwrap_or_else(|_| "sqlite".into())
}

fn server_url(backend: &str) -> String {
    let var = match backend {
        "postgres" => "GATEHOUSE_TEST_POSTGRES_URL",
        "mysql" => "GATEHOUSE_TEST_MYSQL_URL",
        other => panic!("GATEHOUSE_TEST_BACKEND={other}: expected sqlite, postgres or mysql"),
    };
    std::env::var(var).unwrap_or_else(|_| panic!("GATEHOUSE_TEST_BACKEND={backend} needs {var}"))
}

/// `server` with its path replaced by `database`.
fn with_database(server: &str, database: &str) -> String {
    let mut url = url::Url::parse(server).expect("a database server URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

impl TestDatabase {
    /// A database on the backend this process tests (GATEHOUSE_TEST_BACKEND).
    pub fn create(dir: &Path) -> TestDatabase {
        TestDatabase::create_on(&backend(), dir)
    }

    /// A database on the named backend, whatever this process tests.
    pub fn create_on(backend: &str, dir: &Path) -> TestDatabase {
        let backend = backend.to_owned();
        if backend == "sqlite" {
            return TestDatabase {
                url: format!("sqlite://{}", dir.join("gatehouse.db").display()),
                drop_with: None,
            };
        }
        let server = server_url(&backend);
        let backend_name = backend.clone();
        let name = format!("gh_test_{:016x}", rand::thread_rng().gen::<u64>());
        let admin = admin_url(&backend, &server);
        let sql = format!("CREATE DATABASE {name}");
        run_blocking(move || async move { exec(&backend, &admin, &sql).await })
            .unwrap_or_else(|e| panic!("creating the test database: {e}"));
        TestDatabase {
            url: with_database(&server, &name),
            drop_with: Some((server, name, backend_name)),
        }
    }
}

fn admin_url(backend: &str, server: &str) -> String {
    with_database(
        server,
        if backend == "postgres" {
            "postgres"
        } else {
            ""
        },
    )
}

/// Runs one statement on a fresh admin connection.
async fn exec(backend: &str, admin: &str, sql: &str) -> Result<(), sqlx::Error> {
    if backend == "postgres" {
        let mut c = sqlx::PgConnection::connect(admin).await?;
        sqlx::raw_sql(sql).execute(&mut c).await?;
        c.close().await
    } else {
        let mut c = sqlx::MySqlConnection::connect(admin).await?;
        sqlx::raw_sql(sql).execute(&mut c).await?;
        c.close().await
    }
}

/// Runs a future to completion on a thread and runtime of its own, from sync or async
/// code alike (the future is built on that thread, so it need not be `Send`).
fn run_blocking<F, Fut>(make: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(make())
    })
    .join()
    .expect("database setup thread")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name, backend)) = self.drop_with.take() else {
            return;
        };
        let admin = admin_url(&backend, &server);
        let sql = if backend == "postgres" {
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        } else {
            format!("DROP DATABASE IF EXISTS {name}")
        };
        // Best effort: a leftover database is harmless, a panic in drop is not.
        let _ = std::panic::catch_unwind(|| {
            run_blocking(move || async move { exec(&backend, &admin, &sql).await })
        });
    }
}
