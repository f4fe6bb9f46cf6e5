//! Scratch checks of the MySQL/MariaDB store until the shared contract suite exists; runs
//! only when GATEHOUSE_TEST_MYSQL_URL is set. To be deleted.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::config::DatabaseSettings;
use gatehouse::domain::{Email, Identifier, Phone, Username};
use gatehouse::store::mysql::MySqlStore;
use gatehouse::store::{NewCode, NewOutbox, NewResetToken, NewSession, NewUser, Store, StoreError};
use sqlx::{Connection, Executor, MySqlConnection, Row};

struct Db {
    admin_url: String,
    name: String,
}

impl Db {
    async fn new() -> Option<(Db, String)> {
        let base = std::env::var("GATEHOUSE_TEST_MYSQL_URL").ok()?;
        let name = format!("gh_scratch_{}", uuid::Uuid::new_v4().simple());
        let mut conn = MySqlConnection::connect(&base).await.unwrap();
        conn.execute(&*format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = format!("{}{name}", base.trim_end_matches('/').to_string() + "/");
        Some((
            Db {
                admin_url: base,
                name,
            },
            url,
        ))
    }

    async fn drop(self) {
        let mut conn = MySqlConnection::connect(&self.admin_url).await.unwrap();
        conn.execute(&*format!("DROP DATABASE {}", self.name))
            .await
            .unwrap();
    }
}

fn settings(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        database_url: url.to_string(),
        database_max_connections: 8,
        database_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn everything() {
    let Some((db, url)) = Db::new().await else {
        eprintln!("skipped");
        return;
    };
    let store = Arc::new(MySqlStore::connect(&settings(&url)).await.unwrap());
    // Via the generic entry point with the mariadb scheme too (migrations already applied).
    let other = gatehouse::store::connect(&settings(&url.replacen("mysql:", "mariadb:", 1)))
        .await
        .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 1);
    store.ping().await.unwrap();

    // server_secret: first wins.
    let a = "a".repeat(40);
    let b = "b".repeat(40);
    assert_eq!(store.server_secret(&a).await.unwrap(), a);
    assert_eq!(other.server_secret(&b).await.unwrap(), a);

    // Binary-collated columns are reported as BINARY: confirm the CONVERT is needed.
    let raw = sqlx::query("SELECT CONVERT('x' USING utf8mb4) COLLATE utf8mb4_bin AS v")
        .fetch_one(store.pool())
        .await
        .unwrap();
    eprintln!(
        "bin expr decode as String: {:?}",
        raw.try_get::<String, _>("v").map_err(|e| e.to_string())
    );

    let uname = Username::parse("Alice").unwrap();
    let email = Email::parse("Alice@Example.com").unwrap();
    let phone = Phone::parse("+14155550100").unwrap();
    let nu = NewUser {
        username: &uname,
        email: &email,
        phone: Some(&phone),
        password_hash: "$argon2id$v=19$abcDEF",
        now: 1000,
    };
    let id = store.create_user(&nu).await.unwrap();
    assert!(id > 0);
    let raw_phone = sqlx::query("SELECT phone FROM users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    eprintln!(
        "raw phone decode: {:?}",
        raw_phone
            .try_get::<String, _>("phone")
            .map_err(|e| e.to_string())
    );

    // Duplicates by each key.
    let uname2 = Username::parse("ALICE").unwrap();
    let email2 = Email::parse("bob@example.com").unwrap();
    let r = store
        .create_user(&NewUser {
            username: &uname2,
            email: &email2,
            phone: None,
            password_hash: "h",
            now: 1,
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
    let uname3 = Username::parse("bob").unwrap();
    let email3 = Email::parse("ALICE@example.COM").unwrap();
    let r = store
        .create_user(&NewUser {
            username: &uname3,
            email: &email3,
            phone: None,
            password_hash: "h",
            now: 1,
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
    let r = store
        .create_user(&NewUser {
            username: &uname3,
            email: &email2,
            phone: Some(&phone),
            password_hash: "h",
            now: 1,
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
    // Two NULL phones do not collide; accents are not folded by the collation.
    let bob = store
        .create_user(&NewUser {
            username: &uname3,
            email: &email2,
            phone: None,
            password_hash: "h",
            now: 1,
        })
        .await
        .unwrap();
    let e_acc = Email::parse("josé@example.com");
    eprintln!("accented email parse: {e_acc:?}");
    if let Ok(e_acc) = e_acc {
        let e_plain = Email::parse("jose@example.com").unwrap();
        let u1 = Username::parse("jose1").unwrap();
        let u2 = Username::parse("jose2").unwrap();
        store
            .create_user(&NewUser {
                username: &u1,
                email: &e_acc,
                phone: None,
                password_hash: "h",
                now: 1,
            })
            .await
            .unwrap();
        store
            .create_user(&NewUser {
                username: &u2,
                email: &e_plain,
                phone: None,
                password_hash: "h",
                now: 1,
            })
            .await
            .unwrap();
        let f = store
            .find_user(&Identifier::parse("JOSÉ@example.com").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.username, "jose1");
    }

    // find_user by each kind.
    for ident in ["alice", "ALICE@example.com", "+1 415 555 0100"] {
        let u = store
            .find_user(&Identifier::parse(ident).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.id, id);
        assert_eq!(u.username, "Alice");
        assert_eq!(u.email, "Alice@Example.com");
        assert_eq!(u.phone.as_deref(), Some("+14155550100"));
        assert_eq!(u.password_hash, "$argon2id$v=19$abcDEF");
        assert_eq!(u.created_at, 1000);
        assert_eq!(u.disabled_at, None);
    }
    assert!(store
        .find_user(&Identifier::parse("nobody").unwrap())
        .await
        .unwrap()
        .is_none());

    // replace_password_hash: exact match only (case matters), same-value update counts.
    assert!(!store
        .replace_password_hash(id, "$ARGON2ID$v=19$abcdef", "x", 2)
        .await
        .unwrap());
    assert!(store
        .replace_password_hash(id, "$argon2id$v=19$abcDEF", "$argon2id$v=19$abcDEF", 1000)
        .await
        .unwrap());
    assert!(store
        .replace_password_hash(id, "$argon2id$v=19$abcDEF", "new1", 1001)
        .await
        .unwrap());
    assert!(!store
        .replace_password_hash(id, "$argon2id$v=19$abcDEF", "new2", 1002)
        .await
        .unwrap());

    // Sessions.
    let th = "ab".repeat(32);
    store
        .create_session(&NewSession {
            user_id: id,
            token_hash: &th,
            now: 1000,
            expires_at: 5000,
        })
        .await
        .unwrap();
    let r = store
        .create_session(&NewSession {
            user_id: bob,
            token_hash: &th,
            now: 1000,
            expires_at: 5000,
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict)));
    assert!(store
        .session_user(&th.to_uppercase(), 1100, 0, 0)
        .await
        .unwrap()
        .is_none());
    let u = store
        .session_user(&th, 1100, 900, 1050)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.id, id);
    let seen: i64 = sqlx::query_scalar("SELECT last_seen_at FROM sessions")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(seen, 1100);
    assert!(store
        .session_user(&th, 1200, 1100, 0)
        .await
        .unwrap()
        .is_none()); // idle
    assert!(store.session_user(&th, 5000, 0, 0).await.unwrap().is_none()); // expired
    store.delete_session(&th).await.unwrap();
    assert!(store.session_user(&th, 1100, 0, 0).await.unwrap().is_none());

    // Codes.
    let msg = NewOutbox {
        channel: "email",
        payload: "enc1",
        now: 1000,
    };
    store
        .issue_code(
            &NewCode {
                user_id: id,
                code_hash: "c1",
                now: 1000,
                expires_at: 2000,
            },
            &msg,
        )
        .await
        .unwrap();
    store
        .issue_code(
            &NewCode {
                user_id: id,
                code_hash: "C2",
                now: 1001,
                expires_at: 2000,
            },
            &msg,
        )
        .await
        .unwrap();
    let live = store.live_code(id, 1500).await.unwrap().unwrap();
    assert_eq!(live.code_hash, "C2");
    assert!(store.live_code(id, 2000).await.unwrap().is_none());
    // Parallel attempts: exactly 5 succeed.
    let mut handles = Vec::new();
    for _ in 0..20 {
        let s = store.clone();
        let cid = live.id;
        handles.push(tokio::spawn(async move {
            s.claim_attempt(cid, 1500, 5).await.unwrap()
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap());
    }
    assert_eq!(ok, 5);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM otp_codes WHERE id = ?")
        .bind(live.id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 5);
    // Redeem once, in parallel.
    let mut handles = Vec::new();
    for i in 0..10 {
        let s = store.clone();
        let cid = live.id;
        handles.push(tokio::spawn(async move {
            let th = format!("{i:064}");
            s.redeem_code(
                cid,
                &NewResetToken {
                    user_id: id,
                    token_hash: &th,
                    now: 1500,
                    expires_at: 3000,
                },
            )
            .await
            .unwrap()
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap());
    }
    assert_eq!(ok, 1);
    let tok: String =
        sqlx::query_scalar("SELECT CONVERT(token_hash USING utf8mb4) FROM reset_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(store.reset_token_live(id, &tok, 1600).await.unwrap());
    assert!(!store.reset_token_live(bob, &tok, 1600).await.unwrap());
    assert!(!store.reset_token_live(id, &tok, 3000).await.unwrap());
    store
        .create_session(&NewSession {
            user_id: id,
            token_hash: "s2",
            now: 1000,
            expires_at: 5000,
        })
        .await
        .unwrap();
    assert!(!store
        .reset_password(bob, &tok, "nh", 1600, None)
        .await
        .unwrap());
    let notice = NewOutbox {
        channel: "sms",
        payload: "notice",
        now: 1600,
    };
    assert!(store
        .reset_password(id, &tok, "nh", 1600, Some(&notice))
        .await
        .unwrap());
    assert!(!store
        .reset_password(id, &tok, "nh2", 1601, None)
        .await
        .unwrap());
    let u = store
        .find_user(&Identifier::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.password_hash, "nh");
    assert!(store
        .session_user("s2", 1700, 0, 0)
        .await
        .unwrap()
        .is_none());

    // Outbox: 3 messages; parallel claims from two pools never return one twice.
    let mut handles = Vec::new();
    for i in 0..12 {
        let s: Arc<dyn Store> = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        handles.push(tokio::spawn(async move {
            s.claim_outbox(1700, 1760).await.unwrap()
        }));
    }
    let mut got = Vec::new();
    for h in handles {
        if let Some(item) = h.await.unwrap() {
            assert_eq!(item.attempts, 1);
            got.push(item.id);
        }
    }
    got.sort();
    eprintln!("claimed {got:?}");
    assert_eq!(got.len(), 3);
    got.dedup();
    assert_eq!(got.len(), 3);
    assert!(store.claim_outbox(1750, 1800).await.unwrap().is_none());
    let again = store.claim_outbox(1760, 1800).await.unwrap().unwrap();
    assert_eq!(again.attempts, 2);
    assert_eq!(again.channel, "email");
    assert_eq!(again.payload, "enc1");
    store.outbox_sent(got[0], 1770).await.unwrap();
    store
        .outbox_retry(got[1], 1900, &"e".repeat(100_000))
        .await
        .unwrap();
    store.outbox_failed(got[2], 1770, "nope").await.unwrap();
    assert!(store.claim_outbox(1899, 2000).await.unwrap().is_none());
    let item = store.claim_outbox(1900, 2000).await.unwrap().unwrap();
    assert_eq!(item.id, got[1]);
    let n = store.purge_expired(10_000, 1770).await.unwrap();
    eprintln!("purged {n}");
    assert!(n >= 4);

    drop(other);
    drop(store);
    db.drop().await;
}
