//! The storage contract: one body of tests for the `Store` trait, run against every
//! configured backend, so SQLite, PostgreSQL and MySQL are held to the same semantics.
//!
//! SQLite always runs (a fresh file in a temporary directory per test). PostgreSQL runs
//! when `GATEHOUSE_TEST_POSTGRES_URL` names a server (`postgres://postgres@127.0.0.1:5432/`)
//! and MySQL/MariaDB when `GATEHOUSE_TEST_MYSQL_URL` does (`mysql://root@127.0.0.1:3306/`):
//! each test then creates a database with a random name on that server, connects the store
//! to it through `gatehouse::store::connect` (so migrations run too), and drops it at the
//! end, also when the test fails. With `GATEHOUSE_TEST_REQUIRE_ALL=1` a backend without a
//! URL fails the test instead of being skipped, so CI cannot pass by testing less.
//!
//! Each contract is an `async fn` in `mod contract` taking the store as `Arc<dyn Store>`
//! (plus raw SQL access for the little the trait deliberately cannot do, like disabling a
//! user); the `contract_tests!` list turns each into a `#[tokio::test]` of the same name
//! that runs it on every backend and names the backend in any failure.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse::config::DatabaseSettings;
use gatehouse::store::Store;
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Executor};

const POSTGRES_URL: &str = "GATEHOUSE_TEST_POSTGRES_URL";
const MYSQL_URL: &str = "GATEHOUSE_TEST_MYSQL_URL";
const REQUIRE_ALL: &str = "GATEHOUSE_TEST_REQUIRE_ALL";

/// Longest one contract may take on one backend: a deadlock fails the test, not CI.
const BODY_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Sqlite, Kind::Postgres, Kind::MySql];

    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::MySql => "mysql",
        }
    }

    /// The env var naming this backend's server; SQLite needs none.
    fn url_var(self) -> Option<&'static str> {
        match self {
            Kind::Sqlite => None,
            Kind::Postgres => Some(POSTGRES_URL),
            Kind::MySql => Some(MYSQL_URL),
        }
    }
}

/// Raw SQL on the database under test, through a connection of its own: for what the
/// trait has no method for (disabling a user) and for looking at rows directly. Only
/// portable SQL with literal values goes through here.
#[derive(Clone)]
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        let done = match self {
            Raw::Sqlite(p) => p.execute(sql).await.map(|_| ()),
            Raw::Postgres(p) => p.execute(sql).await.map(|_| ()),
            Raw::MySql(p) => p.execute(sql).await.map(|_| ()),
        };
        done.unwrap_or_else(|e| panic!("raw SQL `{sql}` failed: {e}"));
    }

    async fn count(&self, sql: &str) -> i64 {
        let n = match self {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Raw::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Raw::MySql(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        };
        n.unwrap_or_else(|e| panic!("raw SQL `{sql}` failed: {e}"))
    }

    async fn close(&self) {
        match self {
            Raw::Sqlite(p) => p.close().await,
            Raw::Postgres(p) => p.close().await,
            Raw::MySql(p) => p.close().await,
        }
    }
}

/// Drops a test database when it goes out of scope, including while a failed test
/// unwinds. Best effort: a leftover `gh_contract_*` database is garbage, not an error.
struct DropDatabase {
    kind: Kind,
    server_url: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (kind, server_url, name) = (self.kind, self.server_url.clone(), self.name.clone());
        // Drop cannot await, and we may be on a runtime worker (where block_on panics), so
        // the drop runs on a thread with a small runtime of its own.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let sql = match kind {
                    // FORCE ends connections still open (a panicked test's spawned tasks
                    // may hold the store), which would otherwise block the drop.
                    Kind::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                let drop = async {
                    match kind {
                        Kind::Postgres => {
                            let mut c = PgConnection::connect(&server_url).await?;
                            c.execute(sql.as_str()).await?;
                            c.close().await
                        }
                        Kind::MySql => {
                            let mut c = MySqlConnection::connect(&server_url).await?;
                            c.execute(sql.as_str()).await?;
                            c.close().await
                        }
                        Kind::Sqlite => Ok(()),
                    }
                };
                match tokio::time::timeout(Duration::from_secs(30), drop).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("could not drop test database {name}: {e}"),
                    Err(_) => eprintln!("timed out dropping test database {name}"),
                }
            });
        });
        let _ = dropper.join();
    }
}

/// What must outlive the store for one test: the SQLite directory or the server database.
enum Cleanup {
    // Held only so the directory is deleted when the backend goes.
    #[allow(dead_code)]
    Dir(tempfile::TempDir),
    #[allow(dead_code)]
    Database(DropDatabase),
}

/// One backend, fresh and empty, for one test.
struct Backend {
    store: Arc<dyn Store>,
    raw: Raw,
    // Declared last so it is dropped after the pools.
    _cleanup: Cleanup,
}

fn settings(database_url: String) -> DatabaseSettings {
    DatabaseSettings {
        database_url,
        // Few enough that parallel tests stay under a default server's connection limit,
        // enough that the concurrency tests really run on several connections at once.
        database_max_connections: 8,
        database_read_connections: 2,
        database_timeout: Duration::from_secs(30),
    }
}

/// The server URL with its path replaced by `database`, keeping user, host and options.
fn with_database(server_url: &str, database: &str) -> Result<String, String> {
    let mut url = url::Url::parse(server_url).map_err(|e| format!("bad server URL: {e}"))?;
    url.set_path(&format!("/{database}"));
    Ok(url.into())
}

impl Backend {
    /// A fresh backend of `kind`, or `Ok(None)` when it is not configured.
    async fn open(kind: Kind) -> Result<Option<Backend>, String> {
        match kind {
            Kind::Sqlite => Self::open_sqlite().await.map(Some),
            Kind::Postgres | Kind::MySql => {
                let var = kind.url_var().unwrap_or_default();
                match std::env::var(var) {
                    Ok(url) if !url.trim().is_empty() => {
                        Self::open_server(kind, url.trim()).await.map(Some)
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    async fn open_sqlite() -> Result<Backend, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let url = format!("sqlite://{}", dir.path().join("contract.db").display());
        let store = gatehouse::store::connect(&settings(url.clone()))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|e| e.to_string())?
            .busy_timeout(Duration::from_secs(10));
        let raw = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| format!("raw connect: {e}"))?;
        Ok(Backend {
            store,
            raw: Raw::Sqlite(raw),
            _cleanup: Cleanup::Dir(dir),
        })
    }

    async fn open_server(kind: Kind, server_url: &str) -> Result<Backend, String> {
        let name = format!("gh_contract_{:016x}", rand::random::<u64>());
        let create = format!("CREATE DATABASE {name}");
        match kind {
            Kind::Postgres => {
                let mut c = PgConnection::connect(server_url)
                    .await
                    .map_err(|e| format!("connect to {server_url}: {e}"))?;
                c.execute(create.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = c.close().await;
            }
            _ => {
                let mut c = MySqlConnection::connect(server_url)
                    .await
                    .map_err(|e| format!("connect to {server_url}: {e}"))?;
                c.execute(create.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = c.close().await;
            }
        }
        // From here on the database exists, so the guard must exist too.
        let cleanup = Cleanup::Database(DropDatabase {
            kind,
            server_url: server_url.to_owned(),
            name: name.clone(),
        });
        let url = with_database(server_url, &name)?;
        let store = gatehouse::store::connect(&settings(url.clone()))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let raw = match kind {
            Kind::Postgres => Raw::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .map_err(|e| format!("raw connect: {e}"))?,
            ),
            _ => Raw::MySql(
                MySqlPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .map_err(|e| format!("raw connect: {e}"))?,
            ),
        };
        Ok(Backend {
            store,
            raw,
            _cleanup: cleanup,
        })
    }
}

type Body = fn(Arc<dyn Store>, Raw) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs `body` once per backend, each on a fresh database, and fails with every backend's
/// failure named. A body runs in its own task so that its panic is caught, reported under
/// the backend's name, and does not stop the other backends from being tested.
async fn on_every_backend(test: &str, body: Body) {
    let require_all = std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for kind in Kind::ALL {
        let backend = match Backend::open(kind).await {
            Ok(Some(backend)) => backend,
            Ok(None) if require_all => {
                failures.push(format!(
                    "[{}] not tested: {} is not set and {REQUIRE_ALL}=1",
                    kind.name(),
                    kind.url_var().unwrap_or_default()
                ));
                continue;
            }
            Ok(None) => {
                eprintln!(
                    "{test}: skipping {} ({} not set)",
                    kind.name(),
                    kind.url_var().unwrap_or_default()
                );
                continue;
            }
            Err(e) => {
                failures.push(format!("[{}] setup failed: {e}", kind.name()));
                continue;
            }
        };
        let task = tokio::spawn(body(backend.store.clone(), backend.raw.clone()));
        let abort = task.abort_handle();
        let outcome = tokio::time::timeout(BODY_TIMEOUT, task).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("[{}] {}", kind.name(), panic_message(e))),
            Err(_) => {
                abort.abort();
                failures.push(format!(
                    "[{}] timed out after {BODY_TIMEOUT:?}",
                    kind.name()
                ));
            }
        }
        backend.raw.close().await;
    }
    assert!(
        failures.is_empty(),
        "{test} failed:\n  {}",
        failures.join("\n  ")
    );
}

/// One `#[tokio::test]` per contract, named after it, running it on every backend.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            on_every_backend(stringify!($name), |store, raw| Box::pin(contract::$name(store, raw)))
                .await;
        }
    )*};
}

contract_tests![
    a_user_is_found_by_username_email_or_phone_ignoring_case,
    an_unknown_identifier_finds_nobody,
    a_taken_username_email_or_phone_is_a_conflict,
    users_without_a_phone_do_not_collide,
    fifty_concurrent_registrations_of_one_username_give_one_success,
    fifty_concurrent_registrations_of_one_email_give_one_success,
    a_password_hash_is_replaced_only_while_it_is_still_the_old_one,
    a_session_finds_its_user_within_the_idle_and_absolute_windows,
    a_session_is_touched_only_when_its_last_use_is_older_than_touch_before,
    a_session_and_its_audit_event_are_written_together_or_not_at_all,
    every_change_commits_its_audit_events_and_a_refused_change_none,
    an_expired_idle_unknown_or_disabled_session_finds_nobody,
    a_deleted_session_finds_nobody_and_other_sessions_live_on,
    issuing_a_code_kills_the_older_ones_and_queues_its_message,
    ten_concurrent_code_issues_for_one_user_leave_one_live_code,
    a_code_is_live_only_until_it_expires,
    a_user_is_found_with_their_live_code_by_username_email_or_phone,
    only_the_newest_unused_unexpired_code_is_found_with_the_user,
    two_hundred_concurrent_lookups_with_codes_each_get_their_own_answer,
    twenty_concurrent_attempts_on_a_code_allowing_five_take_exactly_five,
    an_attempt_on_a_used_or_expired_code_is_refused,
    ten_concurrent_redemptions_of_one_code_give_one_token,
    an_expired_or_killed_code_cannot_be_redeemed,
    a_reset_token_is_live_only_for_its_user_until_used_or_expired,
    a_password_reset_consumes_the_token_and_revokes_everything_else,
    a_password_reset_without_a_live_token_of_the_user_writes_nothing,
    ten_concurrent_resets_with_one_token_give_one_success,
    ten_concurrent_claims_of_one_due_message_give_it_to_one_caller,
    a_claimed_message_is_not_claimed_again_until_its_lease_passes,
    due_messages_are_claimed_oldest_first_and_future_ones_not_at_all,
    retried_sent_and_failed_messages_move_along_as_documented,
    purging_removes_expired_and_used_rows_and_old_finished_messages,
    the_first_server_secret_wins,
    a_stored_server_secret_is_read_and_forgotten_only_by_its_value,
    the_schema_version_is_the_newest_migration_and_ping_answers,
    users_are_listed_oldest_first_matching_a_search_ignoring_case_up_to_the_limit,
    disabling_a_user_revokes_their_sessions_and_enabling_lets_them_back,
    revoking_sessions_deletes_only_that_users_and_counts_them,
    an_admin_password_change_sets_the_hash_and_revokes_sessions_codes_and_tokens,
    audit_events_are_listed_per_user_since_a_time_in_order_and_purged_by_age,
    importing_users_skips_collisions_with_existing_rows_and_within_the_batch,
    stats_count_pending_and_failed_messages,
    a_device_claims_only_the_tries_of_a_code_bound_to_it,
    a_queued_message_is_claimed_like_any_other,
    a_reset_token_inherits_its_codes_channel_and_the_reset_proves_it,
    proving_the_email_drops_a_phone_nobody_proved_but_keeps_a_proven_one,
    a_proof_counts_only_for_the_address_it_was_made_for,
    users_are_paged_in_id_order_after_a_given_id_without_skips_or_repeats,
    an_email_key_is_rewritten_only_from_the_old_key_and_never_onto_a_taken_one,
    codes_of_each_purpose_live_side_by_side_and_are_found_only_for_it,
    a_verification_code_proves_the_address_the_user_has_once,
    an_email_change_moves_and_proves_the_address_and_kills_old_recovery,
    an_email_change_onto_a_taken_address_is_a_conflict_and_writes_nothing,
    removing_the_phone_drops_its_proof_and_frees_the_number,
    a_password_change_moves_the_callers_session_and_ends_the_others_when_asked,
    a_password_change_against_a_stale_hash_or_a_gone_session_writes_nothing,
    sessions_are_listed_newest_first_and_revoked_one_by_one_only_by_their_owner,
    deleting_a_user_removes_all_of_theirs_keeps_an_anonymous_trail_and_frees_the_names,
    ten_concurrent_confirmations_with_one_code_make_one_change,
    ten_concurrent_password_changes_from_one_session_make_one,
    totp_turns_on_only_by_its_confirmation_and_a_time_step_is_taken_once,
    twenty_concurrent_uses_of_one_time_step_take_it_once,
    twenty_concurrent_uses_of_one_recovery_code_succeed_once,
    passkeys_are_counted_unique_per_credential_and_removed_only_by_their_owner,
    recovery_codes_go_with_the_last_factor,
    an_operators_reset_removes_every_factor_and_ends_every_session,
    a_challenge_lives_until_it_expires_and_is_used_up_once,
    twenty_concurrent_attempts_on_a_challenge_allowing_five_take_exactly_five,
    a_session_opened_with_a_challenge_uses_it_up_and_records_its_level,
];

// ---------------------------------------------------------------------------------------
// The contracts
// ---------------------------------------------------------------------------------------

mod factors;

mod contract {
    use std::collections::HashSet;
    use std::future::Future;
    use std::sync::Arc;

    use gatehouse::domain::{Email, Identifier, Phone, Username};
    use gatehouse::store::{
        AccountChange, AuditEvent, ImportUser, LiveCode, NewCode, NewOutbox, NewResetToken,
        NewSession, NewUser, OutboxItem, PasswordChange, Store, StoreError, User, UserId,
    };
    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    use super::Raw;

    pub use super::factors::*;

    /// An arbitrary fixed "now"; every time in these tests is relative to it.
    pub(super) const T0: i64 = 1_700_000_000;
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    fn username(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    fn phone(s: &str) -> Phone {
        Phone::parse(s).unwrap()
    }

    fn id(s: &str) -> Identifier {
        Identifier::parse(s).unwrap()
    }

    async fn create(
        store: &Arc<dyn Store>,
        name: &str,
        mail: &str,
        tel: Option<&str>,
    ) -> Result<UserId, StoreError> {
        let (u, e, p) = (username(name), email(mail), tel.map(phone));
        store
            .create_user(
                &NewUser {
                    username: &u,
                    email: &e,
                    phone: p.as_ref(),
                    password_hash: HASH,
                    now: T0,
                },
                &[],
            )
            .await
    }

    /// A user with every identifier, given in display forms that lookups must fold.
    async fn alice_1(store: &Arc<dyn Store>) -> UserId {
        create(
            store,
            "Alice_1",
            "Alice.Smith@Example.COM",
            Some("+1 415 555 0100"),
        )
        .await
        .unwrap()
    }

    /// `found`, looked up by `by`, is the user `alice_1` created as `alice`, unchanged.
    fn assert_is_alice_1(found: &User, alice: UserId, by: &str) {
        assert_eq!(found.id, alice, "{by:?}");
        // The display forms are kept as typed; only lookups fold case.
        assert_eq!(found.username, "Alice_1");
        assert_eq!(found.email, "Alice.Smith@Example.COM");
        assert_eq!(found.phone.as_deref(), Some("+14155550100"));
        assert_eq!(found.password_hash, HASH);
        assert_eq!(found.created_at, T0);
        assert_eq!(found.disabled_at, None);
    }

    /// A user named `name` with address `name@example.com` and no phone.
    pub(super) async fn user(store: &Arc<dyn Store>, name: &str) -> UserId {
        create(store, name, &format!("{name}@example.com"), None)
            .await
            .unwrap()
    }

    pub(super) async fn session(
        store: &Arc<dyn Store>,
        user_id: UserId,
        token: &str,
        now: i64,
        expires_at: i64,
    ) {
        store
            .create_session(
                &NewSession {
                    user_id,
                    token_hash: token,
                    public_id: &format!("pub-{}", token),
                    ip: None,
                    user_agent: None,
                    aal: 1,
                    challenge: None,
                    now,
                    expires_at,
                },
                &login_event(user_id, now),
            )
            .await
            .unwrap();
    }

    pub(super) fn login_event(user_id: UserId, at: i64) -> AuditEvent<'static> {
        AuditEvent {
            user_id: Some(user_id),
            event: "login_succeeded",
            ip: Some("198.51.100.4"),
            user_agent: Some("contract/1"),
            at,
        }
    }

    /// Whether the session is live at `now` with a wide idle window and no touch.
    pub(super) async fn live(store: &Arc<dyn Store>, token: &str, now: i64) -> bool {
        store
            .session_user(token, now, i64::MIN, i64::MIN)
            .await
            .unwrap()
            .is_some()
    }

    /// Issues a code with hash `code`, its message carrying payload `msg:<code>`; returns
    /// the code's id (it is the user's live code right after).
    async fn issue(
        store: &Arc<dyn Store>,
        user_id: UserId,
        code: &str,
        now: i64,
        expires_at: i64,
    ) -> i64 {
        let payload = format!("msg:{code}");
        store
            .issue_code(
                &NewCode {
                    user_id,
                    code_hash: code,
                    purpose: "reset",
                    address: None,
                    channel: "email",
                    device: None,
                    now,
                    expires_at,
                },
                &NewOutbox {
                    channel: "email",
                    payload: &payload,
                    user_id: None,
                    now,
                },
                &[],
            )
            .await
            .unwrap();
        let live = store
            .live_code(user_id, "reset", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.code_hash, code);
        live.id
    }

    async fn redeem(
        store: &Arc<dyn Store>,
        user_id: UserId,
        code_id: i64,
        token: &str,
        now: i64,
        expires_at: i64,
    ) -> bool {
        store
            .redeem_code(
                code_id,
                &NewResetToken {
                    user_id,
                    token_hash: token,
                    now,
                    expires_at,
                },
                &[],
            )
            .await
            .unwrap()
    }

    /// A live reset token `token` for the user, by issuing and redeeming a code.
    async fn reset_token(store: &Arc<dyn Store>, user_id: UserId, token: &str) -> i64 {
        let code_id = issue(store, user_id, &format!("code-for-{token}"), T0, T0 + 600).await;
        assert!(redeem(store, user_id, code_id, token, T0, T0 + 600).await);
        code_id
    }

    /// What `find_user_with_live_code` finds for `by` at `now`; panics when nobody.
    async fn with_code(store: &Arc<dyn Store>, by: &str, now: i64) -> (User, Option<LiveCode>) {
        store
            .find_user_with_live_code(&id(by), "reset", now)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{by:?} finds nobody"))
    }

    /// A code row written directly, for states `issue_code` never leaves (several unused
    /// codes of one user); returns its id.
    async fn raw_code(
        raw: &Raw,
        user_id: UserId,
        code: &str,
        expires_at: i64,
        used_at: Option<i64>,
        attempts: i32,
    ) -> i64 {
        let used_at = used_at.map_or("NULL".to_string(), |t| t.to_string());
        raw.exec(&format!(
            "INSERT INTO otp_codes (user_id, code_hash, attempts, created_at, expires_at, used_at)
             VALUES ({user_id}, '{code}', {attempts}, {T0}, {expires_at}, {used_at})"
        ))
        .await;
        raw.count(&format!(
            "SELECT id FROM otp_codes WHERE code_hash = '{code}'"
        ))
        .await
    }

    /// Claims every message due at `now` (with a lease far past it) and returns them.
    async fn drain(store: &Arc<dyn Store>, now: i64) -> Vec<OutboxItem> {
        let mut items = Vec::new();
        while let Some(item) = store.claim_outbox(now, now + 1_000_000).await.unwrap() {
            items.push(item);
            assert!(items.len() < 1000, "claim_outbox keeps returning messages");
        }
        items
    }

    fn payloads(items: &[OutboxItem]) -> Vec<&str> {
        items.iter().map(|i| i.payload.as_str()).collect()
    }

    /// Runs `call(0)` … `call(n - 1)` at the same moment, each in its own task, and returns
    /// their results (in no particular order). The tasks wait at a barrier until all are
    /// spawned, so the calls really overlap on the database instead of trickling in one
    /// by one as tasks start.
    async fn at_once<T, F>(n: usize, call: impl Fn(usize) -> F) -> Vec<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let barrier = Arc::new(Barrier::new(n));
        let mut tasks = JoinSet::new();
        for i in 0..n {
            let (barrier, call) = (barrier.clone(), call(i));
            tasks.spawn(async move {
                barrier.wait().await;
                call.await
            });
        }
        tasks.join_all().await
    }

    // --- users ---------------------------------------------------------------------------

    pub async fn a_user_is_found_by_username_email_or_phone_ignoring_case(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = alice_1(&store).await;
        let bob = user(&store, "bob").await;
        assert_ne!(alice, bob);

        for by in [
            "Alice_1",
            "alice_1",
            "ALICE_1",
            "ａｌｉｃｅ_1",
            "alice.smith@example.com",
            "ALICE.SMITH@EXAMPLE.COM",
            "+14155550100",
            "+1 (415) 555-0100",
        ] {
            let found = store.find_user(&id(by)).await.unwrap();
            let found = found.unwrap_or_else(|| panic!("{by:?} finds nobody"));
            assert_is_alice_1(&found, alice, by);
        }
        let found = store.find_user(&id("BOB")).await.unwrap().unwrap();
        assert_eq!((found.id, found.phone), (bob, None));
    }

    pub async fn an_unknown_identifier_finds_nobody(store: Arc<dyn Store>, _: Raw) {
        let carol = create(&store, "carol", "carol@example.com", Some("+14155550101"))
            .await
            .unwrap();
        issue(&store, carol, "code", T0, T0 + 600).await;
        // Near misses: another name, address or number, and parts of carol's address
        // taken as a username (a lookup only searches its own kind of identifier).
        for by in [
            "carol2",
            "carol@example.org",
            "+14155550102",
            "example.com",
            "carol.example.com",
        ] {
            assert!(store.find_user(&id(by)).await.unwrap().is_none(), "{by:?}");
            // Nor with a code: carol's live one belongs to nobody else.
            let found = store
                .find_user_with_live_code(&id(by), "reset", T0 + 1)
                .await;
            assert!(found.unwrap().is_none(), "{by:?}");
        }
    }

    pub async fn a_taken_username_email_or_phone_is_a_conflict(store: Arc<dyn Store>, _: Raw) {
        let alice = create(&store, "alice", "alice@example.com", Some("+14155550100"))
            .await
            .unwrap();
        for (name, mail, tel, what) in [
            (
                "ALICE",
                "other1@example.com",
                None,
                "username in other case",
            ),
            (
                "ａｌｉｃｅ",
                "other2@example.com",
                None,
                "full-width username",
            ),
            ("other3", "Alice@EXAMPLE.com", None, "email in other case"),
            (
                "other4",
                "other4@example.com",
                Some("+1 415 555 0100"),
                "phone",
            ),
        ] {
            let got = create(&store, name, mail, tel).await;
            assert!(matches!(got, Err(StoreError::Conflict)), "{what}: {got:?}");
        }
        // The refused inserts left nothing behind, and alice is untouched.
        for by in ["other1", "other2@example.com", "other3", "other4"] {
            assert!(store.find_user(&id(by)).await.unwrap().is_none(), "{by}");
        }
        assert_eq!(
            store.find_user(&id("alice")).await.unwrap().unwrap().id,
            alice
        );
        // The names refused above are free for a fresh, non-colliding user.
        create(&store, "other1", "other1@example.com", Some("+14155550199"))
            .await
            .unwrap();
    }

    pub async fn users_without_a_phone_do_not_collide(store: Arc<dyn Store>, _: Raw) {
        let a = create(&store, "nophone1", "nophone1@example.com", None)
            .await
            .unwrap();
        let b = create(&store, "nophone2", "nophone2@example.com", None)
            .await
            .unwrap();
        let c = create(&store, "nophone3", "nophone3@example.com", None)
            .await
            .unwrap();
        assert_eq!(HashSet::from([a, b, c]).len(), 3);
    }

    /// Runs 50 registrations at once, `make(i)` giving the i-th's username and email, and
    /// checks that exactly one succeeds and 49 are refused as conflicts.
    async fn fifty_at_once(store: Arc<dyn Store>, make: fn(usize) -> (String, String), find: &str) {
        let results = at_once(50, |i| {
            let (store, (name, mail)) = (store.clone(), make(i));
            async move { create(&store, &name, &mail, None).await }
        })
        .await;
        let (mut ok, mut conflict) = (Vec::new(), 0);
        for result in results {
            match result {
                Ok(id) => ok.push(id),
                Err(StoreError::Conflict) => conflict += 1,
                Err(e) => panic!("a registration failed, but not with Conflict: {e:?}"),
            }
        }
        assert_eq!((ok.len(), conflict), (1, 49), "successes {ok:?}");
        assert_eq!(store.find_user(&id(find)).await.unwrap().unwrap().id, ok[0]);
    }

    pub async fn fifty_concurrent_registrations_of_one_username_give_one_success(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        fifty_at_once(
            store,
            |i| {
                let name = if i % 2 == 0 { "Racer" } else { "rACER" };
                (name.into(), format!("racer{i}@example.com"))
            },
            "racer",
        )
        .await;
    }

    pub async fn fifty_concurrent_registrations_of_one_email_give_one_success(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        fifty_at_once(
            store,
            |i| {
                let mail = if i % 2 == 0 {
                    "Race@Example.com"
                } else {
                    "race@EXAMPLE.COM"
                };
                (format!("racer{i}"), mail.into())
            },
            "race@example.com",
        )
        .await;
    }

    pub async fn a_password_hash_is_replaced_only_while_it_is_still_the_old_one(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        assert!(store
            .replace_password_hash(alice, HASH, "rehash-1", T0 + 1)
            .await
            .unwrap());
        // A second rehash computed from the original hash lost the race: refused.
        assert!(!store
            .replace_password_hash(alice, HASH, "rehash-2", T0 + 2)
            .await
            .unwrap());
        // The old hash of one user says nothing about another user's row.
        assert!(!store
            .replace_password_hash(alice + bob + 100, HASH, "x", T0)
            .await
            .unwrap());
        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.password_hash, "rehash-1");
        assert_eq!(
            store
                .find_user(&id("bob"))
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            HASH
        );
    }

    // --- sessions ------------------------------------------------------------------------

    pub async fn a_session_finds_its_user_within_the_idle_and_absolute_windows(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        user(&store, "bob").await;
        session(&store, alice, "tok-a", T0, T0 + 1000).await;
        // Within both windows: last use (T0) after the idle cutoff, before expiry.
        let found = store
            .session_user("tok-a", T0 + 999, T0 - 1, T0 - 1)
            .await
            .unwrap();
        let found = found.expect("a live session finds its user").user;
        assert_eq!((found.id, found.username.as_str()), (alice, "alice"));
        // Both bounds are exclusive: expired at expires_at, idle at last_seen_at.
        assert!(store
            .session_user("tok-a", T0 + 1000, T0 - 1, T0 - 1)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .session_user("tok-a", T0 + 10, T0, T0 - 1)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn a_session_is_touched_only_when_its_last_use_is_older_than_touch_before(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        session(&store, alice, "tok", T0, T0 + 10_000).await;
        // Last use T0 is older than T0 + 50: recorded as T0 + 100.
        assert!(store
            .session_user("tok", T0 + 100, T0 - 1, T0 + 50)
            .await
            .unwrap()
            .is_some());
        // Idle cutoff T0 + 99 would have ended it without the touch.
        assert!(store
            .session_user("tok", T0 + 120, T0 + 99, T0 + 90)
            .await
            .unwrap()
            .is_some());
        // Last use T0 + 100 is not older than T0 + 90: the call at T0 + 120 wrote nothing,
        // so a cutoff of T0 + 100 ends the session.
        assert!(store
            .session_user("tok", T0 + 130, T0 + 100, i64::MIN)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn a_session_and_its_audit_event_are_written_together_or_not_at_all(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        session(&store, alice, "tok-a", T0, T0 + 1000).await;
        let trail = store.audit_for_user(alice, T0, 100).await.unwrap();
        assert_eq!(trail.len(), 1);
        let e = &trail[0];
        assert_eq!(
            (
                e.event.as_str(),
                e.created_at,
                e.ip.as_deref(),
                e.user_agent.as_deref()
            ),
            (
                "login_succeeded",
                T0,
                Some("198.51.100.4"),
                Some("contract/1")
            )
        );
        // A token hash already taken fails the session, and its event goes with it.
        let again = store
            .create_session(
                &NewSession {
                    user_id: alice,
                    token_hash: "tok-a",
                    public_id: &format!("pub-{}", "tok-a"),
                    ip: None,
                    user_agent: None,
                    aal: 1,
                    challenge: None,
                    now: T0 + 1,
                    expires_at: T0 + 1000,
                },
                &login_event(alice, T0 + 1),
            )
            .await;
        assert!(again.is_err(), "a duplicate token hash must fail");
        assert_eq!(raw.count("SELECT COUNT(*) FROM sessions").await, 1);
        assert_eq!(raw.count("SELECT COUNT(*) FROM audit_events").await, 1);
    }

    /// An audit event of `event` for `user_id` (or, for a new user, whoever it turns out
    /// to be) at `at`.
    pub(super) fn event(
        event: &'static str,
        user_id: Option<UserId>,
        at: i64,
    ) -> AuditEvent<'static> {
        AuditEvent {
            user_id,
            event,
            ip: Some("198.51.100.4"),
            user_agent: Some("contract/1"),
            at,
        }
    }

    pub async fn every_change_commits_its_audit_events_and_a_refused_change_none(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let trail = |user_id: UserId| {
            let store = Arc::clone(&store);
            async move {
                let rows = store.audit_for_user(user_id, T0, 100).await.unwrap();
                rows.into_iter().map(|r| r.event).collect::<Vec<_>>()
            }
        };
        let total = || raw.count("SELECT COUNT(*) FROM audit_events");
        // A new user's event is recorded for the id the insert made; a taken name records
        // nothing.
        let (u, e) = (username("alice"), email("alice@example.com"));
        let new = |now| NewUser {
            username: &u,
            email: &e,
            phone: None,
            password_hash: HASH,
            now,
        };
        let alice = store
            .create_user(&new(T0), &[event("registered", None, T0)])
            .await
            .unwrap();
        assert_eq!(trail(alice).await, ["registered"]);
        let taken = store
            .create_user(&new(T0 + 1), &[event("registered", None, T0 + 1)])
            .await;
        assert!(matches!(taken, Err(StoreError::Conflict)));
        assert_eq!(total().await, 1);

        // A code, its redemption, and a second redemption that is refused.
        let message = NewOutbox {
            channel: "email",
            payload: "p",
            user_id: None,
            now: T0 + 2,
        };
        let code = NewCode {
            user_id: alice,
            code_hash: "h",
            purpose: "reset",
            address: None,
            channel: "email",
            device: None,
            now: T0 + 2,
            expires_at: T0 + 600,
        };
        let requested = [event("code_requested", Some(alice), T0 + 2)];
        store.issue_code(&code, &message, &requested).await.unwrap();
        let code_id = store
            .live_code(alice, "reset", T0 + 3)
            .await
            .unwrap()
            .unwrap()
            .id;
        let token = NewResetToken {
            user_id: alice,
            token_hash: "tok",
            now: T0 + 3,
            expires_at: T0 + 600,
        };
        let validated = [event("code_validated", Some(alice), T0 + 3)];
        assert!(store
            .redeem_code(code_id, &token, &validated)
            .await
            .unwrap());
        assert!(!store
            .redeem_code(code_id, &token, &validated)
            .await
            .unwrap());
        assert_eq!(
            trail(alice).await,
            ["registered", "code_requested", "code_validated"]
        );

        // A reset with a wrong token records nothing; the right one records its events.
        let reset = [
            event("password_reset", Some(alice), T0 + 4),
            event("sessions_revoked", Some(alice), T0 + 4),
        ];
        let wrong = store
            .reset_password(alice, "nope", "new", T0 + 4, None, &[], &reset)
            .await
            .unwrap();
        assert!(!wrong);
        assert_eq!(total().await, 3);
        let done = store
            .reset_password(alice, "tok", "new", T0 + 4, None, &[], &reset)
            .await
            .unwrap();
        assert!(done);
        assert_eq!(total().await, 5);

        // Closing a session records its event; closing one that is gone records nothing.
        session(&store, alice, "tok-s", T0 + 5, T0 + 1000).await;
        assert_eq!(total().await, 6);
        let out = [event("logged_out", Some(alice), T0 + 6)];
        store.delete_session("tok-s", &out).await.unwrap();
        store.delete_session("tok-s", &out).await.unwrap();
        store.delete_session("never", &out).await.unwrap();
        assert_eq!(total().await, 7);

        // Administrators' changes: on a user who does not exist, nothing is recorded.
        let off = [event("account_disabled", Some(NOBODY), T0 + 7)];
        assert!(!store
            .set_disabled(NOBODY, Some(T0 + 7), &off)
            .await
            .unwrap());
        let set = [event("password_set", Some(NOBODY), T0 + 7)];
        assert!(!store
            .set_password_hash(NOBODY, "h", T0 + 7, &set)
            .await
            .unwrap());
        assert_eq!(total().await, 7);
        let off = [event("account_disabled", Some(alice), T0 + 8)];
        assert!(store.set_disabled(alice, Some(T0 + 8), &off).await.unwrap());
        let on = [event("account_enabled", Some(alice), T0 + 9)];
        assert!(store.set_disabled(alice, None, &on).await.unwrap());
        let revoked = [event("sessions_revoked", Some(alice), T0 + 10)];
        assert_eq!(
            store.revoke_sessions(alice, None, &revoked).await.unwrap(),
            0
        );
        let set = [event("password_set", Some(alice), T0 + 11)];
        assert!(store
            .set_password_hash(alice, "h2", T0 + 11, &set)
            .await
            .unwrap());
        assert_eq!(
            trail(alice).await,
            [
                "registered",
                "code_requested",
                "code_validated",
                "password_reset",
                "sessions_revoked",
                "login_succeeded",
                "logged_out",
                "account_disabled",
                "account_enabled",
                "sessions_revoked",
                "password_set",
            ]
        );
    }

    pub async fn an_expired_idle_unknown_or_disabled_session_finds_nobody(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        session(&store, alice, "expired", T0, T0 + 10).await;
        session(&store, alice, "idle", T0, T0 + 10_000).await;
        session(&store, bob, "disabled", T0, T0 + 10_000).await;
        let at = T0 + 20;
        assert!(store
            .session_user("expired", at, T0 - 1, i64::MIN)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .session_user("idle", at, T0 + 5, i64::MIN)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .session_user("unknown", at, T0 - 1, i64::MIN)
            .await
            .unwrap()
            .is_none());
        assert!(live(&store, "disabled", at).await);
        // The trait has no "disable" (that is an admin action); set the column directly.
        raw.exec(&format!(
            "UPDATE users SET disabled_at = {} WHERE id = {bob}",
            T0 + 15
        ))
        .await;
        assert!(!live(&store, "disabled", at).await);
        // Lookups still find a disabled user (the caller refuses them, uniformly).
        let found = store.find_user(&id("bob")).await.unwrap().unwrap();
        assert_eq!(found.disabled_at, Some(T0 + 15));
    }

    pub async fn a_deleted_session_finds_nobody_and_other_sessions_live_on(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        session(&store, alice, "tok-1", T0, T0 + 1000).await;
        session(&store, alice, "tok-2", T0, T0 + 1000).await;
        store.delete_session("tok-1", &[]).await.unwrap();
        assert!(!live(&store, "tok-1", T0 + 1).await);
        assert!(live(&store, "tok-2", T0 + 1).await);
        // Deleting what is not there (a double logout) is not an error.
        store.delete_session("tok-1", &[]).await.unwrap();
        store.delete_session("never-existed", &[]).await.unwrap();
    }

    // --- codes ---------------------------------------------------------------------------

    pub async fn issuing_a_code_kills_the_older_ones_and_queues_its_message(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let first = issue(&store, alice, "code-1", T0, T0 + 600).await;
        let bobs = issue(&store, bob, "code-bob", T0, T0 + 600).await;
        let second = issue(&store, alice, "code-2", T0 + 1, T0 + 601).await;
        assert_ne!(first, second);
        let live = store
            .live_code(alice, "reset", T0 + 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((live.id, live.code_hash.as_str()), (second, "code-2"));
        // The older code is dead for every purpose, not just hidden by live_code.
        assert!(!store.claim_attempt(first, T0 + 2, 5).await.unwrap());
        assert!(!redeem(&store, alice, first, "tok", T0 + 2, T0 + 600).await);
        // Another user's code is untouched.
        assert_eq!(
            store
                .live_code(bob, "reset", T0 + 2)
                .await
                .unwrap()
                .unwrap()
                .id,
            bobs
        );
        // Each issue queued its message, on the channel given.
        let items = drain(&store, T0 + 2).await;
        assert_eq!(
            payloads(&items),
            ["msg:code-1", "msg:code-bob", "msg:code-2"]
        );
        assert!(items
            .iter()
            .all(|i| i.channel == "email" && i.attempts == 1));
    }

    pub async fn ten_concurrent_code_issues_for_one_user_leave_one_live_code(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let results = at_once(10, |i| {
            let store = store.clone();
            async move {
                let (code, payload) = (format!("code-{i}"), format!("msg:code-{i}"));
                let code = NewCode {
                    user_id: alice,
                    purpose: "reset",
                    address: None,
                    channel: "email",
                    device: None,
                    code_hash: &code,
                    now: T0,
                    expires_at: T0 + 600,
                };
                let message = NewOutbox {
                    channel: "email",
                    payload: &payload,
                    user_id: None,
                    now: T0,
                };
                store.issue_code(&code, &message, &[]).await
            }
        })
        .await;
        // Every request is served (no deadlock or serialisation error reaches the caller),
        // and each later issue killed the earlier ones, whatever the interleaving.
        for result in results {
            result.unwrap();
        }
        let unused =
            format!("SELECT COUNT(*) FROM otp_codes WHERE user_id = {alice} AND used_at IS NULL");
        assert_eq!(
            raw.count(&unused).await,
            1,
            "live codes after concurrent issues"
        );
        assert_eq!(drain(&store, T0).await.len(), 10);
    }

    pub async fn a_code_is_live_only_until_it_expires(store: Arc<dyn Store>, _: Raw) {
        let alice = user(&store, "alice").await;
        assert!(store.live_code(alice, "reset", T0).await.unwrap().is_none());
        let code = issue(&store, alice, "code", T0, T0 + 600).await;
        assert_eq!(
            store
                .live_code(alice, "reset", T0 + 599)
                .await
                .unwrap()
                .unwrap()
                .id,
            code
        );
        assert!(store
            .live_code(alice, "reset", T0 + 600)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn a_user_is_found_with_their_live_code_by_username_email_or_phone(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = alice_1(&store).await;
        let bob = user(&store, "bob").await;
        let alices = ["ALICE_1", "alice.smith@example.com", "+1 (415) 555-0100"];
        // No code asked for: the user, whole, and no code.
        for by in alices {
            let (found, code) = with_code(&store, by, T0).await;
            assert_is_alice_1(&found, alice, by);
            assert!(code.is_none(), "{by:?}: {code:?}");
        }
        // A live code comes with the tries already taken on it.
        let code = issue(&store, alice, "code-a", T0, T0 + 600).await;
        assert!(store.claim_attempt(code, T0 + 1, 5).await.unwrap());
        assert!(store.claim_attempt(code, T0 + 1, 5).await.unwrap());
        for by in alices {
            let (found, live) = with_code(&store, by, T0 + 2).await;
            assert_eq!(found.id, alice, "{by:?}");
            let live = live.unwrap_or_else(|| panic!("{by:?}: no live code"));
            assert_eq!(
                (live.id, live.code_hash.as_str(), live.attempts),
                (code, "code-a", 2),
                "{by:?}"
            );
        }
        // Another user's code is not theirs.
        let (found, live) = with_code(&store, "bob", T0 + 2).await;
        assert_eq!((found.id, found.phone), (bob, None));
        assert!(live.is_none(), "{live:?}");
        // A disabled user is still found, code and all: the caller refuses them, uniformly.
        raw.exec(&format!(
            "UPDATE users SET disabled_at = {} WHERE id = {alice}",
            T0 + 3
        ))
        .await;
        let (found, live) = with_code(&store, "alice_1", T0 + 4).await;
        assert_eq!(found.disabled_at, Some(T0 + 3));
        assert_eq!(live.map(|c| c.id), Some(code));
    }

    /// PostgreSQL answers concurrent lookups in shared statements (batches): each caller
    /// must still get exactly its own user, and its code as live at its own `now`.
    pub async fn two_hundred_concurrent_lookups_with_codes_each_get_their_own_answer(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        const USERS: usize = 40;
        let mut ids = Vec::new();
        for i in 0..USERS {
            let tel = format!("+1415555{i:04}");
            let tel = (i % 4 != 3).then_some(tel.as_str());
            let uid = create(
                &store,
                &format!("user{i}"),
                &format!("user{i}@example.com"),
                tel,
            )
            .await
            .unwrap();
            // Even users have a code live until T0 + 600; odd ones none.
            if i % 2 == 0 {
                issue(&store, uid, &format!("code-{i}"), T0, T0 + 600).await;
            }
            ids.push(uid);
        }
        let ids = Arc::new(ids);
        let answers = at_once(200, |k| {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                let i = k % USERS;
                // Alternately before and after the codes expire, so that one statement
                // answers keys with different times.
                let now = if (k / USERS).is_multiple_of(2) {
                    T0 + 1
                } else {
                    T0 + 700
                };
                let by = match (k % 7, k % 3) {
                    (0, _) => format!("nobody{k}"),
                    (_, 0) => format!("USER{i}"),
                    (_, 1) => format!("user{i}@EXAMPLE.com"),
                    _ if i % 4 != 3 => format!("+1 415 555 {i:04}"),
                    _ => format!("user{i}"),
                };
                let found = store.find_user_with_live_code(&id(&by), "reset", now).await;
                (k, i, now, by, found.unwrap(), ids[i])
            }
        })
        .await;
        assert_eq!(answers.len(), 200);
        for (k, i, now, by, found, uid) in answers {
            if k % 7 == 0 {
                assert!(found.is_none(), "{by:?} finds {found:?}");
                continue;
            }
            let (user, code) = found.unwrap_or_else(|| panic!("{by:?} finds nobody"));
            assert_eq!(
                (user.id, user.username.as_str()),
                (uid, format!("user{i}").as_str()),
                "{by:?}"
            );
            let expected = (i % 2 == 0 && now < T0 + 600).then(|| format!("code-{i}"));
            assert_eq!(code.map(|c| c.code_hash), expected, "{by:?} at {now}");
        }
    }

    pub async fn only_the_newest_unused_unexpired_code_is_found_with_the_user(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        // Newer than the live one: an expired code, a used one, and another user's.
        let older = raw_code(&raw, alice, "older", T0 + 600, None, 3).await;
        raw_code(&raw, alice, "expired", T0 + 100, None, 0).await;
        raw_code(&raw, alice, "used", T0 + 600, Some(T0 + 50), 0).await;
        raw_code(&raw, bob, "bobs", T0 + 600, None, 0).await;
        // Each check also asks live_code: the join must pick the very code it picks.
        let check = |at: i64, want: Option<(i64, &'static str, i32)>| {
            let store = store.clone();
            async move {
                let (found, live) = with_code(&store, "alice", at).await;
                assert_eq!(found.id, alice);
                let got = live.map(|c| (c.id, c.code_hash, c.attempts));
                let want = want.map(|(id, hash, tries)| (id, hash.to_string(), tries));
                assert_eq!(got, want, "at T0 + {}", at - T0);
                let plain = store.live_code(alice, "reset", at).await.unwrap();
                assert_eq!(plain.map(|c| c.id), got.map(|c| c.0), "live_code differs");
            }
        };
        check(T0 + 200, Some((older, "older", 3))).await;
        // Of two live codes, the newer.
        let newest = raw_code(&raw, alice, "newest", T0 + 300, None, 0).await;
        check(T0 + 200, Some((newest, "newest", 0))).await;
        // Expiry is exclusive: at its expires_at the newest is dead and the older shows.
        check(T0 + 299, Some((newest, "newest", 0))).await;
        check(T0 + 300, Some((older, "older", 3))).await;
        // Once every code of hers is dead: the user alone.
        check(T0 + 600, None).await;
    }

    pub async fn twenty_concurrent_attempts_on_a_code_allowing_five_take_exactly_five(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let code = issue(&store, alice, "code", T0, T0 + 600).await;
        let taken = at_once(20, |_| {
            let store = store.clone();
            async move { store.claim_attempt(code, T0 + 1, 5).await.unwrap() }
        })
        .await;
        assert_eq!(taken.iter().filter(|&&t| t).count(), 5);
        assert!(!store.claim_attempt(code, T0 + 2, 5).await.unwrap());
        // Spent attempts do not kill the code; a higher cap would allow more.
        assert!(store.claim_attempt(code, T0 + 2, 6).await.unwrap());
    }

    pub async fn an_attempt_on_a_used_or_expired_code_is_refused(store: Arc<dyn Store>, _: Raw) {
        let alice = user(&store, "alice").await;
        let code = issue(&store, alice, "code", T0, T0 + 600).await;
        assert!(store.claim_attempt(code, T0 + 599, 5).await.unwrap());
        assert!(!store.claim_attempt(code, T0 + 600, 5).await.unwrap());
        assert!(store.claim_attempt(code, T0 + 1, 5).await.unwrap());
        assert!(redeem(&store, alice, code, "tok", T0 + 1, T0 + 600).await);
        assert!(!store.claim_attempt(code, T0 + 2, 5).await.unwrap());
        assert!(!store.claim_attempt(code + 1000, T0 + 2, 5).await.unwrap());
    }

    pub async fn ten_concurrent_redemptions_of_one_code_give_one_token(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let code = issue(&store, alice, "code", T0, T0 + 600).await;
        let results = at_once(10, |i| {
            let store = store.clone();
            async move {
                let token = format!("tok-{i}");
                let won = redeem(&store, alice, code, &token, T0 + 1, T0 + 900).await;
                (won, token)
            }
        })
        .await;
        let (winners, losers): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.0);
        let winners: Vec<String> = winners.into_iter().map(|r| r.1).collect();
        let losers: Vec<String> = losers.into_iter().map(|r| r.1).collect();
        assert_eq!(winners.len(), 1, "winners {winners:?}");
        assert!(store
            .live_reset_token(alice, &winners[0], T0 + 2)
            .await
            .unwrap()
            .is_some());
        // The losers' tokens were never stored (their transactions wrote nothing).
        for token in &losers {
            assert!(
                store
                    .live_reset_token(alice, token, T0 + 2)
                    .await
                    .unwrap()
                    .is_none(),
                "{token}"
            );
        }
        assert!(store
            .live_code(alice, "reset", T0 + 2)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn an_expired_or_killed_code_cannot_be_redeemed(store: Arc<dyn Store>, _: Raw) {
        let alice = user(&store, "alice").await;
        let expiring = issue(&store, alice, "code-1", T0, T0 + 600).await;
        assert!(!redeem(&store, alice, expiring, "tok-1", T0 + 600, T0 + 1200).await);
        assert!(store
            .live_reset_token(alice, "tok-1", T0 + 601)
            .await
            .unwrap()
            .is_none());
        let killed = issue(&store, alice, "code-2", T0 + 1, T0 + 600).await;
        issue(&store, alice, "code-3", T0 + 2, T0 + 600).await;
        assert!(!redeem(&store, alice, killed, "tok-2", T0 + 3, T0 + 600).await);
        assert!(store
            .live_reset_token(alice, "tok-2", T0 + 4)
            .await
            .unwrap()
            .is_none());
    }

    // --- password reset ------------------------------------------------------------------

    pub async fn a_reset_token_is_live_only_for_its_user_until_used_or_expired(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        reset_token(&store, alice, "tok").await;
        assert!(store
            .live_reset_token(alice, "tok", T0 + 599)
            .await
            .unwrap()
            .is_some());
        assert!(store
            .live_reset_token(alice, "tok", T0 + 600)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .live_reset_token(bob, "tok", T0 + 1)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .live_reset_token(alice, "other", T0 + 1)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .reset_password(alice, "tok", "new", T0 + 1, None, &[], &[])
            .await
            .unwrap());
        assert!(store
            .live_reset_token(alice, "tok", T0 + 2)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn a_password_reset_consumes_the_token_and_revokes_everything_else(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        reset_token(&store, alice, "tok-1").await;
        reset_token(&store, alice, "tok-2").await;
        issue(&store, alice, "code-live", T0, T0 + 600).await;
        session(&store, alice, "sess-1", T0, T0 + 10_000).await;
        session(&store, alice, "sess-2", T0, T0 + 10_000).await;
        reset_token(&store, bob, "tok-bob").await;
        issue(&store, bob, "code-bob", T0, T0 + 600).await;
        session(&store, bob, "sess-bob", T0, T0 + 10_000).await;
        // Clear the five code messages, so that only what the reset queues is left.
        assert_eq!(drain(&store, T0).await.len(), 5);

        let notice = NewOutbox {
            channel: "sms",
            payload: "notice:alice",
            user_id: None,
            now: T0 + 5,
        };
        assert!(store
            .reset_password(
                alice,
                "tok-1",
                "new-hash",
                T0 + 5,
                None,
                std::slice::from_ref(&notice),
                &[]
            )
            .await
            .unwrap());

        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.password_hash, "new-hash");
        assert!(!live(&store, "sess-1", T0 + 6).await);
        assert!(!live(&store, "sess-2", T0 + 6).await);
        assert!(store
            .live_code(alice, "reset", T0 + 6)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .live_reset_token(alice, "tok-1", T0 + 6)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .live_reset_token(alice, "tok-2", T0 + 6)
            .await
            .unwrap()
            .is_none());
        // Consumed once: neither token works again.
        assert!(!store
            .reset_password(alice, "tok-1", "again", T0 + 7, None, &[], &[])
            .await
            .unwrap());
        assert!(!store
            .reset_password(alice, "tok-2", "again", T0 + 7, None, &[], &[])
            .await
            .unwrap());
        assert_eq!(
            store
                .find_user(&id("alice"))
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            "new-hash"
        );
        // The notice was queued, once, as given.
        let items = drain(&store, T0 + 10).await;
        assert_eq!(payloads(&items), ["notice:alice"]);
        assert_eq!(items[0].channel, "sms");
        // Bob is untouched.
        assert!(live(&store, "sess-bob", T0 + 6).await);
        assert_eq!(
            store
                .live_code(bob, "reset", T0 + 6)
                .await
                .unwrap()
                .unwrap()
                .code_hash,
            "code-bob"
        );
        assert!(store
            .live_reset_token(bob, "tok-bob", T0 + 6)
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            store
                .find_user(&id("bob"))
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            HASH
        );
    }

    pub async fn a_password_reset_without_a_live_token_of_the_user_writes_nothing(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        reset_token(&store, alice, "tok-alice").await;
        reset_token(&store, bob, "tok-used").await;
        assert!(store
            .reset_password(bob, "tok-used", "bob-new", T0 + 1, None, &[], &[])
            .await
            .unwrap());
        reset_token(&store, bob, "tok-bob").await;
        for who in [alice, bob] {
            issue(&store, who, &format!("code-{who}"), T0 + 2, T0 + 600).await;
            session(&store, who, &format!("sess-{who}"), T0 + 2, T0 + 10_000).await;
        }
        drain(&store, T0 + 2).await;

        let notice = NewOutbox {
            channel: "email",
            payload: "notice",
            user_id: None,
            now: T0 + 3,
        };
        for (who, token, now, why) in [
            (bob, "tok-alice", T0 + 3, "another user's token"),
            (alice, "tok-bob", T0 + 3, "another user's token"),
            (bob, "tok-used", T0 + 3, "a used token"),
            (alice, "tok-alice", T0 + 600, "an expired token"),
            (alice, "no-such-token", T0 + 3, "an unknown token"),
        ] {
            let done = store
                .reset_password(
                    who,
                    token,
                    "evil",
                    now,
                    None,
                    std::slice::from_ref(&notice),
                    &[],
                )
                .await
                .unwrap();
            assert!(!done, "reset with {why} succeeded");
        }
        for (who, name, hash) in [(alice, "alice", HASH), (bob, "bob", "bob-new")] {
            assert_eq!(
                store
                    .find_user(&id(name))
                    .await
                    .unwrap()
                    .unwrap()
                    .password_hash,
                hash
            );
            assert!(
                live(&store, &format!("sess-{who}"), T0 + 4).await,
                "{name}'s session"
            );
            let code = store.live_code(who, "reset", T0 + 4).await.unwrap();
            assert_eq!(code.unwrap().code_hash, format!("code-{who}"));
        }
        assert!(store
            .live_reset_token(alice, "tok-alice", T0 + 4)
            .await
            .unwrap()
            .is_some());
        assert!(store
            .live_reset_token(bob, "tok-bob", T0 + 4)
            .await
            .unwrap()
            .is_some());
        assert!(
            drain(&store, T0 + 10).await.is_empty(),
            "a notice was queued"
        );
    }

    pub async fn ten_concurrent_resets_with_one_token_give_one_success(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        reset_token(&store, alice, "tok").await;
        drain(&store, T0).await;
        let results = at_once(10, |i| {
            let store = store.clone();
            async move {
                let hash = format!("hash-{i}");
                let notice = NewOutbox {
                    channel: "email",
                    payload: &hash,
                    user_id: None,
                    now: T0 + 1,
                };
                let done = store
                    .reset_password(
                        alice,
                        "tok",
                        &hash,
                        T0 + 1,
                        None,
                        std::slice::from_ref(&notice),
                        &[],
                    )
                    .await;
                (done.unwrap(), hash)
            }
        })
        .await;
        let winners: Vec<String> = results.into_iter().filter(|r| r.0).map(|r| r.1).collect();
        assert_eq!(winners.len(), 1, "winners {winners:?}");
        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.password_hash, winners[0]);
        assert_eq!(
            payloads(&drain(&store, T0 + 2).await),
            [winners[0].as_str()]
        );
    }

    // --- outbox --------------------------------------------------------------------------

    pub async fn ten_concurrent_claims_of_one_due_message_give_it_to_one_caller(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        // Several rounds, since a race lost only some of the time must still fail here.
        // Each round queues one message at T0 + round; earlier ones stay leased.
        for round in 0..10 {
            let now = T0 + round;
            issue(&store, alice, &format!("code-{round}"), now, now + 600).await;
            let results = at_once(10, |_| {
                let store = store.clone();
                async move { store.claim_outbox(now, T0 + 1_000_000).await.unwrap() }
            })
            .await;
            let claimed: Vec<OutboxItem> = results.into_iter().flatten().collect();
            let expected = format!("msg:code-{round}");
            assert_eq!(payloads(&claimed), [expected.as_str()], "round {round}");
            assert_eq!(
                (claimed[0].channel.as_str(), claimed[0].attempts),
                ("email", 1)
            );
        }
    }

    pub async fn a_claimed_message_is_not_claimed_again_until_its_lease_passes(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        issue(&store, alice, "code", T0, T0 + 600).await;
        let first = store.claim_outbox(T0, T0 + 60).await.unwrap().unwrap();
        assert_eq!(first.attempts, 1);
        assert!(store.claim_outbox(T0 + 1, T0 + 61).await.unwrap().is_none());
        assert!(store
            .claim_outbox(T0 + 59, T0 + 119)
            .await
            .unwrap()
            .is_none());
        // The claimer died without reporting: at the lease's end the message is due again,
        // with its attempt counted.
        let again = store
            .claim_outbox(T0 + 60, T0 + 120)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.id, again.attempts), (first.id, 2));
        assert_eq!(again.payload, "msg:code");
    }

    pub async fn due_messages_are_claimed_oldest_first_and_future_ones_not_at_all(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        issue(&store, bob, "later", T0 + 10, T0 + 600).await;
        issue(&store, alice, "sooner", T0 + 5, T0 + 600).await;
        // A message is due from the moment it was queued, not before.
        assert!(store
            .claim_outbox(T0 + 4, T0 + 100)
            .await
            .unwrap()
            .is_none());
        let items = drain(&store, T0 + 10).await;
        assert_eq!(payloads(&items), ["msg:sooner", "msg:later"]);
    }

    pub async fn retried_sent_and_failed_messages_move_along_as_documented(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        issue(&store, alice, "retried", T0, T0 + 600).await;
        let item = store.claim_outbox(T0, T0 + 60).await.unwrap().unwrap();
        // A retry releases the lease but is due only at next_attempt_at.
        store
            .outbox_retry(item.id, T0 + 30, "smtp: 421 try later")
            .await
            .unwrap();
        assert!(store
            .claim_outbox(T0 + 29, T0 + 89)
            .await
            .unwrap()
            .is_none());
        let item = store.claim_outbox(T0 + 30, T0 + 90).await.unwrap().unwrap();
        assert_eq!((item.attempts, item.payload.as_str()), (2, "msg:retried"));
        // Sent: never claimed again, even after its lease.
        store.outbox_sent(item.id, T0 + 31).await.unwrap();
        assert!(store
            .claim_outbox(T0 + 1000, T0 + 1060)
            .await
            .unwrap()
            .is_none());

        issue(&store, alice, "failing", T0 + 40, T0 + 600).await;
        let item = store
            .claim_outbox(T0 + 40, T0 + 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(item.payload, "msg:failing");
        // Failed: given up, never claimed again.
        store
            .outbox_failed(item.id, T0 + 41, "smtp: 550 no such user")
            .await
            .unwrap();
        assert!(store
            .claim_outbox(T0 + 1000, T0 + 1060)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn purging_removes_expired_and_used_rows_and_old_finished_messages(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let (u, v, w) = (
            user(&store, "uma").await,
            user(&store, "vic").await,
            user(&store, "wes").await,
        );
        session(&store, u, "sess-live", T0, T0 + 1000).await;
        session(&store, u, "sess-dead", T0, T0 + 10).await;
        issue(&store, u, "u-killed", T0, T0 + 1000).await; // killed by the next: used
        issue(&store, u, "u-live", T0 + 1, T0 + 1000).await; // stays
        issue(&store, v, "v-expired", T0 + 2, T0 + 10).await; // expired
        let w_code = issue(&store, w, "w-redeemed", T0 + 3, T0 + 1000).await; // used…
        assert!(redeem(&store, w, w_code, "tok-expired", T0 + 3, T0 + 10).await); // …expired
        let items = drain(&store, T0 + 3).await;
        assert_eq!(items.len(), 4);
        // Sent before the cutoff, failed before it, sent after it, still pending.
        store.outbox_sent(items[0].id, T0 + 5).await.unwrap();
        store
            .outbox_failed(items[1].id, T0 + 6, "gave up")
            .await
            .unwrap();
        store.outbox_sent(items[2].id, T0 + 500).await.unwrap();
        store
            .outbox_retry(items[3].id, T0 + 5000, "later")
            .await
            .unwrap();

        // 1 session + 3 codes + 1 token + 2 messages.
        assert_eq!(store.purge_expired(T0 + 100, T0 + 10).await.unwrap(), 7);
        assert_eq!(store.purge_expired(T0 + 100, T0 + 10).await.unwrap(), 0);

        assert_eq!(raw.count("SELECT COUNT(*) FROM sessions").await, 1);
        assert_eq!(raw.count("SELECT COUNT(*) FROM otp_codes").await, 1);
        assert_eq!(raw.count("SELECT COUNT(*) FROM reset_tokens").await, 0);
        assert_eq!(raw.count("SELECT COUNT(*) FROM outbox").await, 2);
        assert_eq!(raw.count("SELECT COUNT(*) FROM users").await, 3);
        assert!(live(&store, "sess-live", T0 + 100).await);
        let code = store
            .live_code(u, "reset", T0 + 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.code_hash, "u-live");
        let pending = drain(&store, T0 + 5000).await;
        assert_eq!(payloads(&pending), [items[3].payload.as_str()]);
    }

    // --- server secret and housekeeping --------------------------------------------------

    pub async fn the_first_server_secret_wins(store: Arc<dyn Store>, _: Raw) {
        let results = at_once(10, |i| {
            let store = store.clone();
            async move {
                store
                    .server_secret(&format!("secret-{i:02}"))
                    .await
                    .unwrap()
            }
        })
        .await;
        let seen: HashSet<String> = results.into_iter().collect();
        assert_eq!(seen.len(), 1, "instances disagree on the secret: {seen:?}");
        let winner = seen.into_iter().next().unwrap();
        assert!(winner.starts_with("secret-"), "{winner}");
        assert_eq!(
            store.server_secret("a-later-candidate").await.unwrap(),
            winner
        );
    }

    pub async fn a_stored_server_secret_is_read_and_forgotten_only_by_its_value(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        assert_eq!(store.stored_server_secret().await.unwrap(), None);
        assert!(!store.forget_server_secret("nothing-stored").await.unwrap());
        let secret = "0123456789abcdef0123456789abcdef";
        assert_eq!(store.server_secret(secret).await.unwrap(), secret);
        assert_eq!(
            store.stored_server_secret().await.unwrap().as_deref(),
            Some(secret)
        );
        // Another value, or the same one in another case or padded, deletes nothing.
        for other in [
            "another-secret",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdef ",
        ] {
            assert!(!store.forget_server_secret(other).await.unwrap(), "{other}");
        }
        assert_eq!(raw.count("SELECT COUNT(*) FROM server_secret").await, 1);
        assert!(store.forget_server_secret(secret).await.unwrap());
        assert_eq!(raw.count("SELECT COUNT(*) FROM server_secret").await, 0);
        assert_eq!(store.stored_server_secret().await.unwrap(), None);
        assert!(!store.forget_server_secret(secret).await.unwrap());
        // Forgotten, the slot is free again.
        assert_eq!(store.server_secret("a-new-one").await.unwrap(), "a-new-one");
    }

    pub async fn the_schema_version_is_the_newest_migration_and_ping_answers(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        assert!(store.schema_version().await.unwrap() >= 1);
        store.ping().await.unwrap();
    }

    // --- administration ------------------------------------------------------------------

    /// No user has this id.
    const NOBODY: UserId = 999_999;

    fn usernames(users: &[User]) -> Vec<&str> {
        users.iter().map(|u| u.username.as_str()).collect()
    }

    pub async fn users_are_listed_oldest_first_matching_a_search_ignoring_case_up_to_the_limit(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = alice_1(&store).await;
        user(&store, "bob").await;
        create(&store, "carol", "Carol@ALICE.org", Some("+44 20 7946 0000"))
            .await
            .unwrap();

        let all = store.list_users(None, 100).await.unwrap();
        assert_eq!(usernames(&all), ["Alice_1", "bob", "carol"]);
        assert_eq!(all[0].id, alice);
        assert_eq!(all[0].email, "Alice.Smith@Example.COM");
        assert_eq!(all[0].phone.as_deref(), Some("+14155550100"));
        assert_eq!((all[0].created_at, all[0].disabled_at), (T0, None));
        assert_eq!(
            usernames(&store.list_users(Some(""), 100).await.unwrap()),
            ["Alice_1", "bob", "carol"]
        );
        assert_eq!(
            usernames(&store.list_users(None, 2).await.unwrap()),
            ["Alice_1", "bob"]
        );

        for (search, expected) in [
            // Username of one, email domain of the other, in any case.
            ("alice", &["Alice_1", "carol"][..]),
            ("ALICE", &["Alice_1", "carol"]),
            ("aLiCe_1", &["Alice_1"]),
            ("SMITH@example", &["Alice_1"]),
            ("BOB@EXAMPLE.COM", &["bob"]),
            ("4155550", &["Alice_1"]),
            ("+44", &["carol"]),
            ("example.com", &["Alice_1", "bob"]),
            ("nobody", &[]),
        ] {
            let found = store.list_users(Some(search), 100).await.unwrap();
            assert_eq!(usernames(&found), expected, "search {search:?}");
        }
        assert_eq!(
            usernames(&store.list_users(Some("Alice"), 1).await.unwrap()),
            ["Alice_1"]
        );
        assert!(store.list_users(None, 0).await.unwrap().is_empty());
    }

    pub async fn disabling_a_user_revokes_their_sessions_and_enabling_lets_them_back(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        session(&store, alice, "sess-1", T0, T0 + 10_000).await;
        session(&store, alice, "sess-2", T0, T0 + 10_000).await;
        session(&store, bob, "sess-bob", T0, T0 + 10_000).await;

        assert!(store.set_disabled(alice, Some(T0 + 5), &[]).await.unwrap());
        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.disabled_at, Some(T0 + 5));
        assert!(!live(&store, "sess-1", T0 + 6).await);
        assert!(!live(&store, "sess-2", T0 + 6).await);
        let left = format!("SELECT COUNT(*) FROM sessions WHERE user_id = {alice}");
        assert_eq!(raw.count(&left).await, 0, "disabling left sessions behind");
        // A session created while disabled finds nobody either.
        session(&store, alice, "sess-3", T0 + 6, T0 + 10_000).await;
        assert!(!live(&store, "sess-3", T0 + 7).await);
        // Bob is untouched.
        assert!(live(&store, "sess-bob", T0 + 6).await);
        let bob_row = store.find_user(&id("bob")).await.unwrap().unwrap();
        assert_eq!(bob_row.disabled_at, None);

        assert!(store.set_disabled(alice, None, &[]).await.unwrap());
        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.disabled_at, None);
        session(&store, alice, "sess-4", T0 + 8, T0 + 10_000).await;
        let back = store
            .session_user("sess-4", T0 + 9, i64::MIN, i64::MIN)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.user.id, alice);
        // Enabling an enabled user is no error: the user exists.
        assert!(store.set_disabled(bob, None, &[]).await.unwrap());
        assert!(live(&store, "sess-bob", T0 + 9).await);

        assert!(!store.set_disabled(NOBODY, Some(T0), &[]).await.unwrap());
        assert!(!store.set_disabled(NOBODY, None, &[]).await.unwrap());
    }

    pub async fn revoking_sessions_deletes_only_that_users_and_counts_them(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        for i in 0..3 {
            session(&store, alice, &format!("sess-{i}"), T0, T0 + 10_000).await;
        }
        session(&store, bob, "sess-bob", T0, T0 + 10_000).await;

        assert_eq!(store.revoke_sessions(alice, None, &[]).await.unwrap(), 3);
        for i in 0..3 {
            assert!(!live(&store, &format!("sess-{i}"), T0 + 1).await);
        }
        assert!(live(&store, "sess-bob", T0 + 1).await);
        assert_eq!(store.revoke_sessions(alice, None, &[]).await.unwrap(), 0);
        assert_eq!(store.revoke_sessions(NOBODY, None, &[]).await.unwrap(), 0);
        // The user is not disabled: a new login works.
        session(&store, alice, "sess-new", T0 + 2, T0 + 10_000).await;
        assert!(live(&store, "sess-new", T0 + 3).await);
    }

    pub async fn an_admin_password_change_sets_the_hash_and_revokes_sessions_codes_and_tokens(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        reset_token(&store, alice, "tok-alice").await;
        issue(&store, alice, "code-alice", T0, T0 + 600).await;
        session(&store, alice, "sess-1", T0, T0 + 10_000).await;
        session(&store, alice, "sess-2", T0, T0 + 10_000).await;
        reset_token(&store, bob, "tok-bob").await;
        issue(&store, bob, "code-bob", T0, T0 + 600).await;
        session(&store, bob, "sess-bob", T0, T0 + 10_000).await;

        assert!(store
            .set_password_hash(alice, "admin-hash", T0 + 5, &[])
            .await
            .unwrap());
        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.password_hash, "admin-hash");
        let stamped = format!(
            "SELECT COUNT(*) FROM users WHERE id = {alice} AND updated_at = {}",
            T0 + 5
        );
        assert_eq!(raw.count(&stamped).await, 1, "updated_at not set");
        assert!(!live(&store, "sess-1", T0 + 6).await);
        assert!(!live(&store, "sess-2", T0 + 6).await);
        assert!(store
            .live_code(alice, "reset", T0 + 6)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .live_reset_token(alice, "tok-alice", T0 + 6)
            .await
            .unwrap()
            .is_none());
        assert!(!store
            .reset_password(alice, "tok-alice", "evil", T0 + 6, None, &[], &[])
            .await
            .unwrap());
        assert_eq!(
            store
                .find_user(&id("alice"))
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            "admin-hash"
        );
        // Bob is untouched.
        let bob_row = store.find_user(&id("bob")).await.unwrap().unwrap();
        assert_eq!(bob_row.password_hash, HASH);
        assert!(live(&store, "sess-bob", T0 + 6).await);
        let code = store
            .live_code(bob, "reset", T0 + 6)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.code_hash, "code-bob");
        assert!(store
            .live_reset_token(bob, "tok-bob", T0 + 6)
            .await
            .unwrap()
            .is_some());

        assert!(!store
            .set_password_hash(NOBODY, "admin-hash", T0 + 7, &[])
            .await
            .unwrap());
    }

    pub async fn audit_events_are_listed_per_user_since_a_time_in_order_and_purged_by_age(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        // Recorded out of time order; two at the same second keep their insertion order.
        for (user_id, event, at) in [
            (Some(alice), "password_set", T0 + 20),
            (Some(alice), "registered", T0),
            (Some(bob), "registered", T0 + 5),
            (Some(alice), "login_failed", T0 + 10),
            (Some(alice), "login_succeeded", T0 + 10),
            (None, "login_failed", T0 + 15),
            // Not a foreign key: the trail may name an account that no longer exists.
            (Some(NOBODY), "account_disabled", T0 + 1),
        ] {
            store
                .record_audit(&AuditEvent {
                    user_id,
                    event,
                    ip: (event != "registered").then_some("203.0.113.7"),
                    user_agent: (event == "login_succeeded").then_some("curl/8.0"),
                    at,
                })
                .await
                .unwrap();
        }
        assert_eq!(raw.count("SELECT COUNT(*) FROM audit_events").await, 7);

        let events = |records: &[gatehouse::store::AuditRecord]| -> Vec<(String, i64)> {
            records
                .iter()
                .map(|r| (r.event.clone(), r.created_at))
                .collect()
        };
        let all = store.audit_for_user(alice, T0, 100).await.unwrap();
        assert_eq!(
            events(&all),
            [
                ("registered".to_owned(), T0),
                ("login_failed".to_owned(), T0 + 10),
                ("login_succeeded".to_owned(), T0 + 10),
                ("password_set".to_owned(), T0 + 20),
            ]
        );
        assert!(all.iter().all(|r| r.user_id == Some(alice)));
        assert!(all[1].id < all[2].id);
        assert_eq!(
            (all[0].ip.as_deref(), all[0].user_agent.as_deref()),
            (None, None)
        );
        assert_eq!(
            (all[2].ip.as_deref(), all[2].user_agent.as_deref()),
            (Some("203.0.113.7"), Some("curl/8.0"))
        );
        // `since` is inclusive; `limit` keeps the oldest.
        let since = store.audit_for_user(alice, T0 + 10, 100).await.unwrap();
        assert_eq!(
            events(&since),
            [
                ("login_failed".to_owned(), T0 + 10),
                ("login_succeeded".to_owned(), T0 + 10),
                ("password_set".to_owned(), T0 + 20),
            ]
        );
        let first = store.audit_for_user(alice, T0, 2).await.unwrap();
        assert_eq!(
            events(&first),
            [
                ("registered".to_owned(), T0),
                ("login_failed".to_owned(), T0 + 10),
            ]
        );
        assert!(store
            .audit_for_user(alice, T0 + 21, 100)
            .await
            .unwrap()
            .is_empty());
        let of_bob = store.audit_for_user(bob, T0, 100).await.unwrap();
        assert_eq!(events(&of_bob), [("registered".to_owned(), T0 + 5)]);
        assert_eq!(
            store.audit_for_user(NOBODY, T0, 100).await.unwrap().len(),
            1
        );

        // Strictly older than `before`: alice's T0, NOBODY's T0 + 1 and bob's T0 + 5.
        assert_eq!(store.purge_audit(T0 + 10).await.unwrap(), 3);
        assert_eq!(store.purge_audit(T0 + 10).await.unwrap(), 0);
        assert_eq!(raw.count("SELECT COUNT(*) FROM audit_events").await, 4);
        assert_eq!(store.audit_for_user(alice, T0, 100).await.unwrap().len(), 3);
        assert!(store.audit_for_user(bob, T0, 100).await.unwrap().is_empty());
        assert_eq!(store.purge_audit(T0 + 1000).await.unwrap(), 4);
        assert_eq!(raw.count("SELECT COUNT(*) FROM audit_events").await, 0);
    }

    /// An import row, normalised as `import-seed` does.
    fn import_row(name: &str, mail: &str, tel: Option<&str>, created_at: i64) -> ImportUser {
        let (u, e) = (username(name), email(mail));
        ImportUser {
            username: u.as_str().to_owned(),
            username_norm: u.key().to_owned(),
            email: e.as_str().to_owned(),
            email_norm: e.key().to_owned(),
            phone: tel.map(|t| phone(t).as_str().to_owned()),
            password_hash: format!("hash-of-{name}"),
            created_at,
        }
    }

    pub async fn importing_users_skips_collisions_with_existing_rows_and_within_the_batch(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        create(
            &store,
            "alice",
            "alice@example.com",
            Some("+1 415 555 0100"),
        )
        .await
        .unwrap();
        let batch = [
            import_row("newbie", "newbie@example.com", None, T0 - 100),
            // Collide with the existing alice on username, email and phone.
            import_row("ALICE", "alice2@example.com", None, T0),
            import_row("other", "Alice@Example.COM", None, T0),
            import_row("third", "third@example.com", Some("+14155550100"), T0),
            // Collide with an earlier row of the same batch.
            import_row("dup", "dup@example.com", Some("+44 20 7946 0001"), T0 - 50),
            import_row("Dup", "dup2@example.com", None, T0),
            import_row("dupmail", "DUP@example.com", None, T0),
            import_row(
                "dupphone",
                "dupphone@example.com",
                Some("+442079460001"),
                T0,
            ),
            // Users without a phone never collide on it.
            import_row("nophone1", "nophone1@example.com", None, T0 - 10),
            import_row("nophone2", "nophone2@example.com", None, T0 - 20),
        ];
        assert_eq!(store.import_users(&batch).await.unwrap(), 4);
        assert_eq!(raw.count("SELECT COUNT(*) FROM users").await, 5);

        for (name, created_at, tel) in [
            ("newbie", T0 - 100, None),
            ("dup", T0 - 50, Some("+442079460001")),
            ("nophone1", T0 - 10, None),
            ("nophone2", T0 - 20, None),
        ] {
            let found = store.find_user(&id(name)).await.unwrap();
            let found = found.unwrap_or_else(|| panic!("{name} was not imported"));
            // The first of the colliding batch rows is the one kept.
            assert_eq!(found.username, name);
            assert_eq!(found.email, format!("{name}@example.com"));
            assert_eq!(found.phone.as_deref(), tel);
            assert_eq!(found.password_hash, format!("hash-of-{name}"));
            assert_eq!((found.created_at, found.disabled_at), (created_at, None));
        }
        for name in ["other", "third", "dupmail", "dupphone"] {
            assert!(
                store.find_user(&id(name)).await.unwrap().is_none(),
                "{name} was imported despite colliding"
            );
        }
        let alice = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(
            (
                alice.username.as_str(),
                alice.email.as_str(),
                alice.password_hash.as_str()
            ),
            ("alice", "alice@example.com", HASH)
        );

        // Importing the same file again changes nothing.
        assert_eq!(store.import_users(&batch).await.unwrap(), 0);
        assert_eq!(raw.count("SELECT COUNT(*) FROM users").await, 5);
        assert_eq!(store.import_users(&[]).await.unwrap(), 0);
        // Imported users are ordinary users: registering their names is a conflict.
        let taken = create(&store, "NEWBIE", "fresh@example.com", None).await;
        assert!(matches!(taken, Err(StoreError::Conflict)), "{taken:?}");
    }

    pub async fn stats_count_pending_and_failed_messages(store: Arc<dyn Store>, _: Raw) {
        let empty = store.stats().await.unwrap();
        assert_eq!((empty.outbox_pending, empty.outbox_failed), (0, 0));

        let alice = user(&store, "alice").await;
        for i in 0..5 {
            issue(&store, alice, &format!("code-{i}"), T0 + i, T0 + 600).await;
        }
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.outbox_pending, stats.outbox_failed), (5, 0));

        let items = drain(&store, T0 + 10).await;
        assert_eq!(items.len(), 5);
        // Claimed but unreported messages are still pending.
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.outbox_pending, stats.outbox_failed), (5, 0));
        store.outbox_sent(items[0].id, T0 + 11).await.unwrap();
        store
            .outbox_failed(items[1].id, T0 + 11, "no")
            .await
            .unwrap();
        store
            .outbox_failed(items[2].id, T0 + 11, "no")
            .await
            .unwrap();
        store
            .outbox_retry(items[3].id, T0 + 100, "later")
            .await
            .unwrap();
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.outbox_pending, stats.outbox_failed), (2, 2));

        // Purging finished messages takes the failed ones out of the count.
        store.purge_expired(T0 + 20, T0 + 1000).await.unwrap();
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.outbox_pending, stats.outbox_failed), (2, 0));

        // The store has used at least one connection, and never more than its pools allow.
        let connections = stats.pool_idle + stats.pool_in_use;
        assert!((1..=16).contains(&connections), "{stats:?}");
    }

    /// Issues a code on `channel` and redeems it for `token`.
    async fn token_via(store: &Arc<dyn Store>, user_id: UserId, channel: &str, token: &str) {
        let payload = format!("msg:{token}");
        let code_hash = format!("code-for-{token}");
        store
            .issue_code(
                &NewCode {
                    user_id,
                    code_hash: &code_hash,
                    purpose: "reset",
                    address: None,
                    channel,
                    device: None,
                    now: T0,
                    expires_at: T0 + 600,
                },
                &NewOutbox {
                    channel,
                    payload: &payload,
                    user_id: None,
                    now: T0,
                },
                &[],
            )
            .await
            .unwrap();
        let code = store
            .live_code(user_id, "reset", T0)
            .await
            .unwrap()
            .unwrap();
        assert!(redeem(store, user_id, code.id, token, T0, T0 + 600).await);
    }

    async fn proven(store: &Arc<dyn Store>, user_id: UserId) -> Vec<String> {
        store.proven_channels(user_id).await.unwrap()
    }

    pub async fn a_reset_token_inherits_its_codes_channel_and_the_reset_proves_it(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = create(&store, "alice", "alice@example.com", Some("+14155550101"))
            .await
            .unwrap();
        assert!(proven(&store, alice).await.is_empty());
        token_via(&store, alice, "sms", "tok-sms").await;
        let live = store
            .live_reset_token(alice, "tok-sms", T0 + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.channel.as_deref(), Some("sms"));
        assert!(store
            .reset_password(alice, "tok-sms", "new", T0 + 1, Some("sms"), &[], &[])
            .await
            .unwrap());
        assert_eq!(proven(&store, alice).await, ["sms"]);
        // An SMS proof leaves the email where it is.
        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.phone.as_deref(), Some("+14155550101"));
        assert_eq!(found.email, "alice@example.com");
    }

    pub async fn proving_the_email_drops_a_phone_nobody_proved_but_keeps_a_proven_one(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        // Someone registered alice's email with their own phone: alice proves the email.
        let alice = create(&store, "alice", "alice@example.com", Some("+14155550101"))
            .await
            .unwrap();
        token_via(&store, alice, "email", "tok-a").await;
        assert!(store
            .reset_password(alice, "tok-a", "new", T0 + 1, Some("email"), &[], &[])
            .await
            .unwrap());
        let found = store.find_user(&id("alice")).await.unwrap().unwrap();
        assert_eq!(found.phone, None);
        assert_eq!(proven(&store, alice).await, ["email"]);
        assert!(store
            .find_user(&id("+14155550101"))
            .await
            .unwrap()
            .is_none());

        // Bob proved his phone first: proving his email later keeps it.
        let bob = create(&store, "bob", "bob@example.com", Some("+14155550102"))
            .await
            .unwrap();
        token_via(&store, bob, "sms", "tok-b1").await;
        assert!(store
            .reset_password(bob, "tok-b1", "new", T0 + 1, Some("sms"), &[], &[])
            .await
            .unwrap());
        token_via(&store, bob, "email", "tok-b2").await;
        assert!(store
            .reset_password(bob, "tok-b2", "newer", T0 + 2, Some("email"), &[], &[])
            .await
            .unwrap());
        let found = store.find_user(&id("bob")).await.unwrap().unwrap();
        assert_eq!(found.phone.as_deref(), Some("+14155550102"));
        assert_eq!(proven(&store, bob).await, ["email", "sms"]);
    }

    pub async fn a_proof_counts_only_for_the_address_it_was_made_for(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = create(&store, "alice", "alice@example.com", Some("+14155550101"))
            .await
            .unwrap();
        token_via(&store, alice, "sms", "tok-1").await;
        assert!(store
            .reset_password(alice, "tok-1", "new", T0 + 1, Some("sms"), &[], &[])
            .await
            .unwrap());
        token_via(&store, alice, "email", "tok-2").await;
        assert!(store
            .reset_password(alice, "tok-2", "newer", T0 + 2, Some("email"), &[], &[])
            .await
            .unwrap());
        assert_eq!(proven(&store, alice).await, ["email", "sms"]);
        raw.exec(&format!(
            "UPDATE users SET phone = '+14155550199' WHERE id = {alice}"
        ))
        .await;
        assert_eq!(proven(&store, alice).await, ["email"]);
        raw.exec(&format!(
            "UPDATE users SET email_norm = 'new@example.com' WHERE id = {alice}"
        ))
        .await;
        assert!(proven(&store, alice).await.is_empty());
        // A token from before channels were kept proves nothing.
        reset_token(&store, alice, "tok-3").await;
        raw.exec("UPDATE reset_tokens SET channel = NULL WHERE used_at IS NULL")
            .await;
        let live = store
            .live_reset_token(alice, "tok-3", T0 + 3)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.channel, None);
    }

    pub async fn a_device_claims_only_the_tries_of_a_code_bound_to_it(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        store
            .issue_code(
                &NewCode {
                    user_id: alice,
                    code_hash: "h",
                    purpose: "reset",
                    address: None,
                    channel: "email",
                    device: Some("dev-1"),
                    now: T0,
                    expires_at: T0 + 600,
                },
                &NewOutbox {
                    channel: "email",
                    payload: "p",
                    user_id: None,
                    now: T0,
                },
                &[],
            )
            .await
            .unwrap();
        let code = store.live_code(alice, "reset", T0).await.unwrap().unwrap();
        // Everyone else's tries run out; the device's do not.
        for _ in 0..3 {
            assert!(store.claim_attempt(code.id, T0 + 1, 3).await.unwrap());
        }
        assert!(!store.claim_attempt(code.id, T0 + 1, 3).await.unwrap());
        assert!(!store
            .claim_device_attempt(code.id, "dev-2", T0 + 1, 3)
            .await
            .unwrap());
        let claims = at_once(10, |_| {
            let store = store.clone();
            async move {
                store
                    .claim_device_attempt(code.id, "dev-1", T0 + 1, 3)
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(claims.iter().filter(|c| **c).count(), 3);
        assert!(!store
            .claim_device_attempt(code.id, "dev-1", T0 + 600, 30)
            .await
            .unwrap());
        // A code with no device has no device tries.
        let bob = user(&store, "bob").await;
        let bobs = issue(&store, bob, "b", T0, T0 + 600).await;
        assert!(!store
            .claim_device_attempt(bobs, "dev-1", T0 + 1, 3)
            .await
            .unwrap());
    }

    pub async fn a_queued_message_is_claimed_like_any_other(store: Arc<dyn Store>, _: Raw) {
        store
            .queue_message(&NewOutbox {
                channel: "email",
                payload: "notice",
                user_id: None,
                now: T0,
            })
            .await
            .unwrap();
        assert_eq!(payloads(&drain(&store, T0).await), ["notice"]);
    }

    pub async fn users_are_paged_in_id_order_after_a_given_id_without_skips_or_repeats(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        assert!(store.users_after(0, 10).await.unwrap().is_empty());
        let mut ids = Vec::new();
        for name in ["ann", "ben", "cat", "dan", "eve"] {
            ids.push(user(&store, name).await);
        }
        raw.exec(&format!("DELETE FROM users WHERE id = {}", ids[2]))
            .await;
        ids.remove(2);
        let (mut seen, mut after) = (Vec::new(), 0);
        loop {
            let page = store.users_after(after, 2).await.unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = last.id;
            seen.extend(page.iter().map(|u| (u.id, u.username.clone())));
        }
        let names: Vec<_> = seen.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["ann", "ben", "dan", "eve"]);
        assert_eq!(seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(), ids);
        // Whole rows, as every other read gives them.
        let first = &store.users_after(0, 1).await.unwrap()[0];
        assert_eq!(first.email, "ann@example.com");
        assert_eq!(first.password_hash, HASH);
        assert!(store.users_after(ids[3], 10).await.unwrap().is_empty());
    }

    pub async fn an_email_key_is_rewritten_only_from_the_old_key_and_never_onto_a_taken_one(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        // A row as stored before today's key: `straße@…` under NFKC and lower case only.
        let alice = create(&store, "alice", "Straße@example.com", None)
            .await
            .unwrap();
        raw.exec(&format!(
            "UPDATE users SET email_norm = 'straße@example.com' WHERE id = {alice}"
        ))
        .await;
        assert!(store
            .find_user(&id("STRASSE@example.com"))
            .await
            .unwrap()
            .is_none());
        // Her email proof was made under the old key.
        token_via(&store, alice, "email", "tok-a").await;
        assert!(store
            .reset_password(alice, "tok-a", "new", T0 + 1, Some("email"), &[], &[])
            .await
            .unwrap());
        assert_eq!(proven(&store, alice).await, ["email"]);

        // From another key (or for nobody) nothing changes.
        for (who, old) in [
            (alice, "strasse@example.com"),
            (alice + 1000, "straße@example.com"),
        ] {
            assert!(!store
                .rekey_email(who, old, "strasse@example.com")
                .await
                .unwrap());
        }
        assert!(store
            .rekey_email(alice, "straße@example.com", "strasse@example.com")
            .await
            .unwrap());
        let found = store
            .find_user(&id("STRASSE@example.com"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, alice);
        assert_eq!(found.email, "Straße@example.com");
        // The proof moved with the key; done once, it is not done again.
        assert_eq!(proven(&store, alice).await, ["email"]);
        assert!(!store
            .rekey_email(alice, "straße@example.com", "strasse@example.com")
            .await
            .unwrap());

        // Another account registered the new key meanwhile: a conflict, the row untouched.
        let bob = create(&store, "bob", "Maß@example.com", None)
            .await
            .unwrap();
        raw.exec(&format!(
            "UPDATE users SET email_norm = 'maß@example.com' WHERE id = {bob}"
        ))
        .await;
        create(&store, "carol", "mass@example.com", None)
            .await
            .unwrap();
        assert!(matches!(
            store
                .rekey_email(bob, "maß@example.com", "mass@example.com")
                .await,
            Err(StoreError::Conflict)
        ));
        let kept = raw
            .count(&format!(
                "SELECT COUNT(*) FROM users WHERE id = {bob} AND email_norm = 'maß@example.com'"
            ))
            .await;
        assert_eq!(kept, 1);
        let carol = store.find_user(&id("MASS@example.com")).await.unwrap();
        assert_eq!(carol.unwrap().username, "carol");
    }

    /// Issues a code for `purpose` (its hash `hash`, for `address`), with a message of
    /// the user's; returns its id.
    async fn issue_for(
        store: &Arc<dyn Store>,
        user_id: UserId,
        purpose: &str,
        address: Option<&str>,
        hash: &str,
    ) -> i64 {
        store
            .issue_code(
                &NewCode {
                    user_id,
                    code_hash: hash,
                    purpose,
                    address,
                    channel: "email",
                    device: None,
                    now: T0,
                    expires_at: T0 + 600,
                },
                &NewOutbox {
                    channel: "email",
                    payload: "p",
                    user_id: Some(user_id),
                    now: T0,
                },
                &[],
            )
            .await
            .unwrap();
        let live = store
            .live_code(user_id, purpose, T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.code_hash, hash);
        assert_eq!(live.address.as_deref(), address);
        live.id
    }

    async fn change(
        store: &Arc<dyn Store>,
        user_id: UserId,
        code_id: Option<i64>,
        change: AccountChange<'_>,
    ) -> Result<bool, StoreError> {
        let events = [event("changed", Some(user_id), T0 + 1)];
        store
            .apply_change(user_id, code_id, &change, T0 + 1, &[], &events)
            .await
    }

    async fn found(store: &Arc<dyn Store>, by: &str) -> Option<User> {
        store.find_user(&id(by)).await.unwrap()
    }

    pub async fn codes_of_each_purpose_live_side_by_side_and_are_found_only_for_it(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let reset = issue_for(&store, alice, "reset", None, "h-reset").await;
        let verify = issue_for(&store, alice, "verify_email", None, "h-verify").await;
        // A new code of one purpose kills only that purpose's older code.
        assert_eq!(
            store
                .live_code(alice, "reset", T0)
                .await
                .unwrap()
                .unwrap()
                .id,
            reset
        );
        let (_, code) = store
            .find_user_with_live_code(&id("alice"), "verify_email", T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.unwrap().id, verify);
        let (_, code) = with_code(&store, "alice", T0).await;
        assert_eq!(code.unwrap().id, reset);
        let (_, none) = store
            .find_user_with_live_code(&id("alice"), "change_email", T0)
            .await
            .unwrap()
            .unwrap();
        assert!(none.is_none());
        let newer = issue_for(&store, alice, "verify_email", None, "h-verify-2").await;
        assert_ne!(newer, verify);
        assert_eq!(
            store
                .live_code(alice, "reset", T0)
                .await
                .unwrap()
                .unwrap()
                .id,
            reset
        );
    }

    pub async fn a_verification_code_proves_the_address_the_user_has_once(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = create(&store, "alice", "Alice@example.com", Some("+14155550101"))
            .await
            .unwrap();
        let bob = user(&store, "bob").await;
        let before = found(&store, "alice").await.unwrap();
        assert!(!before.email_verified && !before.phone_verified);
        let code = issue_for(&store, alice, "verify_email", None, "h").await;
        let prove_email = AccountChange::Prove { channel: "email" };
        // Another user's code proves nothing for them, nor for its owner.
        assert!(!change(&store, bob, Some(code), prove_email).await.unwrap());
        assert!(change(&store, alice, Some(code), prove_email)
            .await
            .unwrap());
        let after = found(&store, "ALICE@example.com").await.unwrap();
        assert!(after.email_verified && !after.phone_verified);
        // Used once.
        assert!(!change(&store, alice, Some(code), prove_email)
            .await
            .unwrap());
        assert_eq!(proven(&store, alice).await, ["email"]);
        // No phone, no proof of one.
        let prove_sms = AccountChange::Prove { channel: "sms" };
        assert!(!change(&store, bob, None, prove_sms).await.unwrap());
        assert!(change(&store, alice, None, prove_sms).await.unwrap());
        let both = found(&store, "+14155550101").await.unwrap();
        assert!(both.email_verified && both.phone_verified);
        assert!(!change(&store, NOBODY, None, prove_email).await.unwrap());
    }

    pub async fn an_email_change_moves_and_proves_the_address_and_kills_old_recovery(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        reset_token(&store, alice, "tok-old").await;
        let new = email("Alice.New@Example.com");
        let code = issue_for(&store, alice, "change_email", Some(new.as_str()), "h").await;
        let to_new = AccountChange::Email {
            email: new.as_str(),
            key: new.key(),
        };
        assert!(change(&store, alice, Some(code), to_new).await.unwrap());
        assert!(found(&store, "alice@example.com").await.is_none());
        let moved = found(&store, "alice.new@example.com").await.unwrap();
        assert_eq!(moved.id, alice);
        assert_eq!(moved.email, "Alice.New@Example.com");
        assert!(moved.email_verified);
        // The reset token earned through the old address is dead; the code is used.
        assert!(store
            .live_reset_token(alice, "tok-old", T0 + 2)
            .await
            .unwrap()
            .is_none());
        assert!(!change(&store, alice, Some(code), to_new).await.unwrap());
        // The old address is free again.
        user(&store, "alice2").await;
        create(&store, "carol", "alice@example.com", None)
            .await
            .unwrap();
    }

    pub async fn an_email_change_onto_a_taken_address_is_a_conflict_and_writes_nothing(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        user(&store, "bob").await;
        let taken = email("bob@example.com");
        let code = issue_for(&store, alice, "change_email", Some(taken.as_str()), "h").await;
        let onto_bob = AccountChange::Email {
            email: taken.as_str(),
            key: taken.key(),
        };
        assert!(matches!(
            change(&store, alice, Some(code), onto_bob).await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(found(&store, "alice@example.com").await.unwrap().id, alice);
        // The code was not used up by the refused change.
        assert!(store
            .live_code(alice, "change_email", T0 + 1)
            .await
            .unwrap()
            .is_some());
    }

    pub async fn removing_the_phone_drops_its_proof_and_frees_the_number(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = create(&store, "alice", "alice@example.com", Some("+14155550101"))
            .await
            .unwrap();
        let code = issue_for(&store, alice, "change_phone", Some("+14155550199"), "h").await;
        let to_new = AccountChange::Phone {
            phone: Some("+14155550199"),
        };
        assert!(change(&store, alice, Some(code), to_new).await.unwrap());
        let moved = found(&store, "+14155550199").await.unwrap();
        assert!(moved.phone_verified);
        assert!(found(&store, "+14155550101").await.is_none());
        let remove = AccountChange::Phone { phone: None };
        assert!(change(&store, alice, None, remove).await.unwrap());
        let bare = found(&store, "alice").await.unwrap();
        assert_eq!(bare.phone, None);
        assert!(!bare.phone_verified);
        assert!(proven(&store, alice).await.is_empty());
        create(&store, "bob", "bob@example.com", Some("+14155550199"))
            .await
            .unwrap();
    }

    fn password_change<'a>(
        user_id: UserId,
        old_hash: &'a str,
        old_token: &'a str,
        new_token: &'a str,
        sign_out_others: bool,
    ) -> PasswordChange<'a> {
        PasswordChange {
            user_id,
            old_hash,
            new_hash: "new-hash",
            old_token_hash: old_token,
            new_token_hash: new_token,
            sign_out_others,
            now: T0 + 5,
        }
    }

    pub async fn a_password_change_moves_the_callers_session_and_ends_the_others_when_asked(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        for t in ["a-1", "a-2", "a-3"] {
            session(&store, alice, t, T0, T0 + 10_000).await;
        }
        session(&store, bob, "b-1", T0, T0 + 10_000).await;
        reset_token(&store, alice, "tok").await;
        let keep = password_change(alice, HASH, "a-1", "a-1-new", false);
        assert!(store.change_password(&keep, &[], &[]).await.unwrap());
        assert!(!live(&store, "a-1", T0 + 6).await);
        for t in ["a-1-new", "a-2", "a-3", "b-1"] {
            assert!(live(&store, t, T0 + 6).await, "{t}");
        }
        assert_eq!(
            found(&store, "alice").await.unwrap().password_hash,
            "new-hash"
        );
        assert!(store
            .live_reset_token(alice, "tok", T0 + 6)
            .await
            .unwrap()
            .is_none());
        let end = password_change(alice, "new-hash", "a-2", "a-2-new", true);
        assert!(store.change_password(&end, &[], &[]).await.unwrap());
        for (t, alive) in [
            ("a-2-new", true),
            ("a-1-new", false),
            ("a-3", false),
            ("b-1", true),
        ] {
            assert_eq!(live(&store, t, T0 + 6).await, alive, "{t}");
        }
    }

    pub async fn a_password_change_against_a_stale_hash_or_a_gone_session_writes_nothing(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        session(&store, alice, "a-1", T0, T0 + 10_000).await;
        session(&store, alice, "a-2", T0, T0 + 10_000).await;
        session(&store, bob, "b-1", T0, T0 + 10_000).await;
        let stale = password_change(alice, "not-the-hash", "a-1", "x", true);
        assert!(!store.change_password(&stale, &[], &[]).await.unwrap());
        // Bob's session is not alice's to move.
        let foreign = password_change(alice, HASH, "b-1", "y", true);
        assert!(!store.change_password(&foreign, &[], &[]).await.unwrap());
        for t in ["a-1", "a-2", "b-1"] {
            assert!(live(&store, t, T0 + 6).await, "{t}");
        }
        assert_eq!(found(&store, "alice").await.unwrap().password_hash, HASH);
    }

    pub async fn sessions_are_listed_newest_first_and_revoked_one_by_one_only_by_their_owner(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        session(&store, alice, "a-1", T0, T0 + 10_000).await;
        session(&store, alice, "a-2", T0 + 1, T0 + 10_000).await;
        session(&store, alice, "a-old", T0 - 100, T0 + 1).await;
        session(&store, bob, "b-1", T0, T0 + 10_000).await;
        let list = store
            .list_sessions(alice, "a-1", T0 + 2, T0 - 50)
            .await
            .unwrap();
        let ids: Vec<&str> = list.iter().map(|s| s.public_id.as_str()).collect();
        // The expired one is not listed.
        assert_eq!(ids, ["pub-a-2", "pub-a-1"]);
        assert_eq!(
            list.iter().map(|s| s.current).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(list[1].created_at, T0);
        assert_eq!(list[1].expires_at, T0 + 10_000);
        // Bob's id is not alice's to revoke.
        assert!(!store.revoke_session(alice, "pub-b-1", &[]).await.unwrap());
        assert!(live(&store, "b-1", T0 + 2).await);
        assert!(store.revoke_session(alice, "pub-a-2", &[]).await.unwrap());
        assert!(!live(&store, "a-2", T0 + 2).await);
        assert!(!store.revoke_session(alice, "pub-a-2", &[]).await.unwrap());
        session(&store, alice, "a-3", T0 + 3, T0 + 10_000).await;
        assert_eq!(
            store
                .revoke_sessions(alice, Some("a-1"), &[])
                .await
                .unwrap(),
            2
        );
        assert!(live(&store, "a-1", T0 + 4).await);
        assert!(!live(&store, "a-3", T0 + 4).await);
    }

    pub async fn deleting_a_user_removes_all_of_theirs_keeps_an_anonymous_trail_and_frees_the_names(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = create(&store, "alice", "alice@example.com", Some("+14155550101"))
            .await
            .unwrap();
        let bob = user(&store, "bob").await;
        session(&store, alice, "a-1", T0, T0 + 10_000).await;
        session(&store, bob, "b-1", T0, T0 + 10_000).await;
        reset_token(&store, alice, "tok").await;
        issue_for(&store, alice, "verify_email", None, "alice-code").await;
        issue_for(&store, bob, "reset", None, "bob-code").await;
        store
            .record_audit(&event("login_failed", Some(alice), T0))
            .await
            .unwrap();
        let goodbye = NewOutbox {
            channel: "email",
            payload: "goodbye",
            user_id: None,
            now: T0 + 1,
        };
        let gone = AuditEvent {
            ip: None,
            user_agent: None,
            ..event("account_deleted", Some(alice), T0 + 1)
        };
        assert!(store.delete_user(alice, &[goodbye], &[gone]).await.unwrap());
        assert!(!store.delete_user(alice, &[], &[]).await.unwrap());
        assert!(found(&store, "alice").await.is_none());
        assert!(!live(&store, "a-1", T0 + 2).await);
        assert!(live(&store, "b-1", T0 + 2).await);
        for table in ["sessions", "otp_codes", "reset_tokens", "proven_channels"] {
            let n = raw
                .count(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE user_id = {alice}"
                ))
                .await;
            assert_eq!(n, 0, "{table}");
        }
        // Alice's undelivered messages went; bob's and the goodbye stay.
        let count = |sql: String| {
            let raw = raw.clone();
            async move { raw.count(&sql).await }
        };
        let of = |who: UserId| format!("SELECT COUNT(*) FROM outbox WHERE user_id = {who}");
        assert_eq!(count(of(alice)).await, 0);
        assert_eq!(count(of(bob)).await, 1);
        let goodbye = "SELECT COUNT(*) FROM outbox WHERE payload = 'goodbye'";
        assert_eq!(count(goodbye.into()).await, 1);
        let trail = store.audit_for_user(alice, 0, 100).await.unwrap();
        assert!(trail.len() >= 2);
        assert!(trail
            .iter()
            .all(|e| e.ip.is_none() && e.user_agent.is_none()));
        assert_eq!(trail.last().unwrap().event, "account_deleted");
        create(&store, "alice", "alice@example.com", Some("+14155550101"))
            .await
            .unwrap();
    }

    pub async fn ten_concurrent_confirmations_with_one_code_make_one_change(
        store: Arc<dyn Store>,
        raw: Raw,
    ) {
        let alice = user(&store, "alice").await;
        let new = email("alice.new@example.com");
        let code = issue_for(&store, alice, "change_email", Some(new.as_str()), "h").await;
        let done = at_once(10, |_| {
            let store = store.clone();
            let new = new.clone();
            async move {
                let to_new = AccountChange::Email {
                    email: new.as_str(),
                    key: new.key(),
                };
                let events = [event("email_changed", Some(alice), T0 + 1)];
                store
                    .apply_change(alice, Some(code), &to_new, T0 + 1, &[], &events)
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(done.iter().filter(|&&d| d).count(), 1);
        let changes = raw
            .count(&format!(
                "SELECT COUNT(*) FROM audit_events WHERE user_id = {alice} AND event = 'email_changed'"
            ))
            .await;
        assert_eq!(changes, 1);
    }

    pub async fn ten_concurrent_password_changes_from_one_session_make_one(
        store: Arc<dyn Store>,
        _: Raw,
    ) {
        let alice = user(&store, "alice").await;
        session(&store, alice, "a-1", T0, T0 + 10_000).await;
        let done = at_once(10, |i| {
            let store = store.clone();
            async move {
                let token = format!("a-1-new-{i}");
                let change = password_change(alice, HASH, "a-1", &token, true);
                store.change_password(&change, &[], &[]).await.unwrap()
            }
        })
        .await;
        assert_eq!(done.iter().filter(|&&d| d).count(), 1);
        let live_ones = at_once(10, |i| {
            let store = store.clone();
            async move { live(&store, &format!("a-1-new-{i}"), T0 + 6).await }
        })
        .await;
        assert_eq!(live_ones.iter().filter(|&&l| l).count(), 1);
    }
}
