//! `PostgresStore`: the backend for several instances sharing one PostgreSQL database.
//!
//! Unlike SQLite there is no single writer to serialise on: many instances write at once,
//! each through its own pool. Every rule that must hold under concurrency is therefore one
//! conditional statement (PostgreSQL re-checks an UPDATE's WHERE clause against the newest
//! committed row after waiting for a row lock, so `attempts < max` or `used_at IS NULL`
//! cannot be passed twice), or a transaction that begins with the user's row lock (`sql.rs`),
//! or, for the outbox, a row lock taken with `SKIP LOCKED`. All statements run at the
//! default READ COMMITTED level, where each statement sees what committed before it
//! started. This file holds only what PostgreSQL does its own way; the statements are in
//! `sql.rs`.

use std::str::FromStr;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgQueryResult};
use sqlx::{PgPool, Postgres};

use super::hot::HotConnections;
use super::sql::{self, Dialect, PointReads, SqlStore};
use super::{ImportUser, OutboxItem, StoreError, StoreResult};
use crate::config::DatabaseSettings;

pub type PostgresStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const SLOT: usize = 1;
    const NUMBERED: bool = true;
    /// NO KEY UPDATE (not UPDATE) so that logins inserting sessions for this user, which
    /// only take a key-share lock through the foreign key, are not held up.
    const LOCK_ROW: &'static str = " FOR NO KEY UPDATE";
    /// LATERAL, with `live_code`'s plan (the user's codes through otp_codes_user_id,
    /// newest first), rather than the correlated `c.id = (SELECT id …)` the other
    /// databases need, which costs PostgreSQL an extra subplan and primary-key probe
    /// (pgbench: 19k against 25k lookups per second).
    const USER_WITH_LIVE_CODE: &'static str = "SELECT {user}, c.id AS code_id, {code_hash},
            c.attempts AS code_attempts, c.address AS code_address
        FROM users u LEFT JOIN LATERAL (
            SELECT id, code_hash, attempts, address FROM otp_codes
            WHERE user_id = u.id AND used_at IS NULL AND expires_at > ? AND purpose = ?
            ORDER BY id DESC LIMIT 1) c ON TRUE
        WHERE u.{column} = ?";

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn claim_outbox(
        pool: &PgPool,
        now: i64,
        locked_until: i64,
    ) -> BoxFuture<'_, StoreResult<Option<OutboxItem>>> {
        // Every instance's worker polls the same table. FOR UPDATE locks the chosen row
        // until this statement commits, and SKIP LOCKED makes a concurrent claimer pass
        // over it to the next due row instead of waiting for it (and then, on the re-check,
        // finding it leased and getting nothing). A row another claimer committed after
        // this statement's snapshot is re-checked on its newest version, where the raised
        // locked_until excludes it. So no two callers ever get the same message, and
        // workers never queue behind each other.
        Box::pin(async move {
            Ok(sqlx::query_as(
                "WITH next AS (
                     SELECT id FROM outbox
                     WHERE status = 'pending' AND next_attempt_at <= $2 AND locked_until <= $2
                     ORDER BY next_attempt_at, id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE outbox o SET locked_until = $1, attempts = o.attempts + 1
                 FROM next WHERE o.id = next.id
                 RETURNING o.id, o.channel, o.payload, o.attempts",
            )
            .bind(locked_until)
            .bind(now)
            .fetch_optional(pool)
            .await?)
        })
    }

    fn import_users<'a>(
        pool: &'a PgPool,
        users: &'a [ImportUser],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        // No conflict target: a row colliding on any unique index, with an existing row or
        // an earlier row of this batch, is skipped rather than failing the statement, and
        // the row count is what went in (as on SQLite; MySQL has to count).
        Box::pin(async move {
            let done = sql::insert_users::<Postgres>(users)
                .build()
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn forget_server_secret<'a>(
        pool: &'a PgPool,
        secret: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(sql::delete_secret(pool, secret))
    }
}

impl PostgresStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(&settings.database_url)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let options = super::quiet_statements(options);
        let kept = HotConnections::new(options.clone(), settings);
        let pool = super::server_pool::<Postgres>(settings)
            .connect_with(options)
            .await?;
        // sqlx takes an advisory lock around migrations, so instances starting together
        // apply each migration once.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(SqlStore::new(pool, None, PointReads::Kept(kept)))
    }
}
