//! `gatehouse import-seed`: the old server's MySQL schema, built exactly as its README
//! gives it, filled with bcrypt (cost 12) users and some broken rows, imported through the
//! real binary into whichever backend this run tests, then logged into over HTTP.

use crate::common::seed::{import, insert, ok_stdout, SeedDb};
use crate::common::{json, TestApp};

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
    let out = ok_stdout(&import(&app, &seed.url, &[]));
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

    let again = ok_stdout(&import(&app, &seed.url, &[]));
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

/// The stored hash of the user `identifier` names, read straight from the database.
async fn stored_hash(app: &TestApp, identifier: &str) -> String {
    let store = gatehouse::store::connect(&gatehouse::config::DatabaseSettings {
        database_url: app.db_url(),
        database_max_connections: 2,
        database_read_connections: 2,
        database_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap();
    let ident = gatehouse::domain::Identifier::parse(identifier).unwrap();
    store
        .find_user(&ident)
        .await
        .unwrap()
        .unwrap()
        .password_hash
}

#[tokio::test]
async fn an_imported_user_is_stored_wrapped_and_rehashed_to_plain_argon2id_on_login() {
    let (seed, mut conn) = SeedDb::create().await;
    let legacy = bcrypt::hash("Secure@123", 4).unwrap();
    insert(
        &mut conn,
        "user123",
        "user@example.com",
        "+1234567890",
        &legacy,
    )
    .await;
    let app = TestApp::spawn().await;
    let out = ok_stdout(&import(&app, &seed.url, &[]));
    assert!(out.contains("imported 1,"), "{out}");

    // No bare bcrypt in the database: its setting, then argon2id over the whole bcrypt
    // hash at the configured parameters.
    let wrapped = stored_hash(&app, "user123").await;
    assert!(
        wrapped.starts_with(&format!(
            "$gh-wrap{}$argon2id$v=19$m=1024,t=1,p=1,data=YmNyeXB0$",
            &legacy[..29]
        )),
        "{wrapped}"
    );
    assert!(!wrapped.contains(&legacy[29..]), "{wrapped}");

    // A wrong password changes nothing; the old one logs in and leaves a plain hash.
    assert_eq!(app.login("user123", "Secure@124").await.status(), 401);
    assert_eq!(stored_hash(&app, "user123").await, wrapped);
    assert_eq!(
        app.login("user@example.com", "Secure@123").await.status(),
        200
    );
    let plain = stored_hash(&app, "user123").await;
    assert!(
        plain.starts_with("$argon2id$v=19$m=1024,t=1,p=1,data=bmZrYw$"),
        "{plain}"
    );
    assert_eq!(app.login("user123", "Secure@123").await.status(), 200);
    assert_eq!(stored_hash(&app, "user123").await, plain);
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
    // The argon2id layer at its smallest (8 KiB, one pass): this test is about streaming
    // rows, and 100,000 hashes at even the harness's parameters would take a minute.
    let cheapest = [("ARGON2_MEMORY_KIB", "8")];
    let out = ok_stdout(&import(&app, &seed.url, &cheapest));
    eprintln!("imported 100,000 rows in {:?}", started.elapsed());
    assert!(
        out.contains(
            "read 100000 seed users: imported 100000, skipped 0 as duplicates, rejected 0"
        ),
        "{out}"
    );
    assert_eq!(app.login("bulk99999", "bulk password").await.status(), 200);
    let again = ok_stdout(&import(&app, &seed.url, &cheapest));
    assert!(
        again.contains("imported 0, skipped 100000 as duplicates"),
        "{again}"
    );
}
