//! What the second factors keep (issue 17): TOTP secrets, recovery codes, passkeys, and
//! the short-lived challenges between the halves of a login or a WebAuthn ceremony.
//! Written once for every database, like the rest of `SqlStore`.
//!
//! Every rule that must hold under parallel requests is one conditional statement: a time
//! step is taken by raising `last_step` only while it is lower, a recovery code by setting
//! `used_at` only while it is NULL, an attempt on a challenge by raising `attempts` only
//! while under the cap, a challenge used up by deleting its row. Changes to a user's
//! factors take the user's row lock first, like every other change of a user
//! (`sql.rs`), and keep the counts on the user row in the same transaction.
//!
//! The reads a passkey sign-in makes (its ceremony, the credential, its user) go to the
//! read pool: on SQLite the one writer connection was what held passwordless sign-ins
//! at about 350 a second (`bench/RESULTS.md`). What they read was committed before the
//! request that reads it began.

use async_trait::async_trait;
use sqlx::{Decode, Encode, Executor, IntoArguments, Type};

use super::{retry, Dialect, SqlStore};
use crate::store::{
    AuditEvent, Challenge, FactorChange, NewChallenge, NewOutbox, PasskeyRecord, StoreResult,
    TotpRecord, User, UserId,
};

#[async_trait]
pub trait FactorStore: Send + Sync {
    /// Applies `change` to the user's factors, with `notices` and `events`, in one
    /// transaction. False (and nothing written) when the user is gone or the change does
    /// not apply (see `FactorChange`); `Conflict` when a passkey's credential is
    /// registered already.
    async fn change_factors(
        &self,
        user_id: UserId,
        change: &FactorChange<'_>,
        now: i64,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool>;

    /// The user with this id, disabled or not.
    async fn user_by_id(&self, user_id: UserId) -> StoreResult<Option<User>>;

    /// The user's TOTP secret, confirmed or waiting for its first code.
    async fn totp_secret(&self, user_id: UserId) -> StoreResult<Option<TotpRecord>>;

    /// Takes time step `step` of the user's confirmed TOTP: false when that step or a
    /// later one was taken already (a code is accepted at most once).
    async fn take_totp_step(&self, user_id: UserId, step: i64) -> StoreResult<bool>;

    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user_id: UserId) -> StoreResult<Vec<PasskeyRecord>>;

    /// The passkey whose credential id hashes to `credential_key`, whoever's it is.
    async fn passkey_by_credential(
        &self,
        credential_key: &str,
    ) -> StoreResult<Option<PasskeyRecord>>;

    /// Records a use of a passkey: its updated record (signature counter) and when.
    async fn passkey_used(
        &self,
        credential_key: &str,
        credential: &str,
        now: i64,
    ) -> StoreResult<()>;

    /// Stores a challenge.
    async fn create_challenge(&self, challenge: &NewChallenge<'_>) -> StoreResult<()>;

    /// The live challenge of `kind` stored under `token_hash`.
    async fn challenge(
        &self,
        token_hash: &str,
        kind: &str,
        now: i64,
    ) -> StoreResult<Option<Challenge>>;

    /// Takes one of a challenge's `max_attempts` tries; false when none is left or it
    /// expired or was used meanwhile. A guess is only compared after this.
    async fn claim_challenge_attempt(
        &self,
        id: i64,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<bool>;

    /// Replaces a live challenge's ceremony state; false when it is gone.
    async fn set_challenge_state(&self, id: i64, state: &str, now: i64) -> StoreResult<bool>;

    /// Uses a challenge up; false when it was used already (by a parallel request).
    async fn take_challenge(&self, id: i64) -> StoreResult<bool>;
}

#[async_trait]
impl<DB: Dialect> FactorStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'r> &'r str: sqlx::ColumnIndex<DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    async fn change_factors(
        &self,
        user_id: UserId,
        change: &FactorChange<'_>,
        now: i64,
        notices: &[NewOutbox<'_>],
        events: &[AuditEvent<'_>],
    ) -> StoreResult<bool> {
        retry::<DB, _, _, _>(|| async move {
            let mut tx = self.begin().await?;
            let applies = Self::lock_user(&mut tx, user_id).await?
                && Self::apply_factor_change(&mut tx, user_id, change, now).await?;
            if !applies {
                tx.rollback().await?;
                return Ok(false);
            }
            Self::finish(tx, notices, events).await?;
            Ok(true)
        })
        .await
    }

    async fn user_by_id(&self, user_id: UserId) -> StoreResult<Option<User>> {
        Ok(
            bound!(query_as, "SELECT {user} FROM users u WHERE u.id = ?"; user_id)
                .fetch_optional(self.read())
                .await?,
        )
    }

    async fn totp_secret(&self, user_id: UserId) -> StoreResult<Option<TotpRecord>> {
        Ok(
            bound!(query_as, "SELECT {t}secret{/t} AS secret, confirmed_at
            FROM totp_secrets WHERE user_id = ?";
            user_id)
            .fetch_optional(&self.write)
            .await?,
        )
    }

    async fn take_totp_step(&self, user_id: UserId, step: i64) -> StoreResult<bool> {
        let n = self
            .execute(|| {
                bound!(query, "UPDATE totp_secrets SET last_step = ?
                    WHERE user_id = ? AND confirmed_at IS NOT NULL AND last_step < ?";
                    step, user_id, step)
            })
            .await?;
        Ok(n == 1)
    }

    async fn passkeys(&self, user_id: UserId) -> StoreResult<Vec<PasskeyRecord>> {
        Ok(
            bound!(query_as, "SELECT {t}public_id{/t} AS public_id, user_id,
                {t}credential{/t} AS credential, {t}name{/t} AS name, created_at, last_used_at
            FROM passkeys WHERE user_id = ? ORDER BY id"; user_id)
            .fetch_all(&self.write)
            .await?,
        )
    }

    async fn passkey_by_credential(
        &self,
        credential_key: &str,
    ) -> StoreResult<Option<PasskeyRecord>> {
        Ok(
            bound!(query_as, "SELECT {t}public_id{/t} AS public_id, user_id,
                {t}credential{/t} AS credential, {t}name{/t} AS name, created_at, last_used_at
            FROM passkeys WHERE credential_key = ?"; credential_key)
            .fetch_optional(self.read())
            .await?,
        )
    }

    async fn passkey_used(
        &self,
        credential_key: &str,
        credential: &str,
        now: i64,
    ) -> StoreResult<()> {
        self.execute(|| {
            bound!(query, "UPDATE passkeys SET credential = ?, last_used_at = ?
                WHERE credential_key = ?"; credential, now, credential_key)
        })
        .await?;
        Ok(())
    }

    async fn create_challenge(&self, c: &NewChallenge<'_>) -> StoreResult<()> {
        self.execute(|| {
            bound!(query, "INSERT INTO challenges (token_hash, kind, user_id, binding, state,
                    created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)";
                c.token_hash, c.kind, c.user_id, c.binding, c.state, c.now, c.expires_at)
        })
        .await?;
        Ok(())
    }

    async fn challenge(
        &self,
        token_hash: &str,
        kind: &str,
        now: i64,
    ) -> StoreResult<Option<Challenge>> {
        Ok(
            bound!(query_as, "SELECT id, user_id, {t}binding{/t} AS binding,
                {t}state{/t} AS state, attempts FROM challenges
            WHERE token_hash = ? AND kind = ? AND expires_at > ?"; token_hash, kind, now)
            .fetch_optional(self.read())
            .await?,
        )
    }

    async fn claim_challenge_attempt(
        &self,
        id: i64,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        let n = self
            .execute(|| {
                bound!(query, "UPDATE challenges SET attempts = attempts + 1
                    WHERE id = ? AND attempts < ? AND expires_at > ?";
                    id, i64::from(max_attempts), now)
            })
            .await?;
        Ok(n == 1)
    }

    async fn set_challenge_state(&self, id: i64, state: &str, now: i64) -> StoreResult<bool> {
        let n = self
            .execute(|| {
                bound!(query, "UPDATE challenges SET state = ? WHERE id = ? AND expires_at > ?";
                    state, id, now)
            })
            .await?;
        Ok(n == 1)
    }

    async fn take_challenge(&self, id: i64) -> StoreResult<bool> {
        let n = self
            .execute(|| bound!(query, "DELETE FROM challenges WHERE id = ?"; id))
            .await?;
        Ok(n == 1)
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'r> &'r str: sqlx::ColumnIndex<DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    /// `change_factors` inside its transaction, the user's row locked: whether it applied.
    async fn apply_factor_change(
        tx: &mut DB::Connection,
        user_id: UserId,
        change: &FactorChange<'_>,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        match *change {
            FactorChange::TotpBegin { secret } => {
                let confirmed: Option<i64> = bound!(query_scalar, "SELECT user_id
                    FROM totp_secrets WHERE user_id = ? AND confirmed_at IS NOT NULL"; user_id)
                .fetch_optional(&mut *tx)
                .await?;
                if confirmed.is_some() {
                    return Ok(false);
                }
                exec!(&mut *tx, "DELETE FROM totp_secrets WHERE user_id = ?"; user_id);
                exec!(&mut *tx, "INSERT INTO totp_secrets (user_id, secret, created_at)
                    VALUES (?, ?, ?)"; user_id, secret, now);
                Ok(true)
            }
            FactorChange::TotpConfirm { step, recovery } => {
                let n = exec!(&mut *tx, "UPDATE totp_secrets SET confirmed_at = ?, last_step = ?
                    WHERE user_id = ? AND confirmed_at IS NULL AND last_step < ?";
                    now, step, user_id, step);
                if n != 1 {
                    return Ok(false);
                }
                exec!(&mut *tx, "UPDATE users SET totp_enabled = TRUE WHERE id = ?"; user_id);
                Self::replace_recovery(tx, user_id, recovery, now).await?;
                Ok(true)
            }
            FactorChange::TotpRemove => {
                let n = exec!(&mut *tx, "DELETE FROM totp_secrets
                    WHERE user_id = ? AND confirmed_at IS NOT NULL"; user_id);
                if n != 1 {
                    return Ok(false);
                }
                exec!(&mut *tx, "UPDATE users SET totp_enabled = FALSE WHERE id = ?"; user_id);
                Self::drop_recovery_without_factor(tx, user_id).await?;
                Ok(true)
            }
            FactorChange::RecoveryReplace { recovery } => {
                Self::replace_recovery(tx, user_id, recovery, now).await?;
                Ok(true)
            }
            FactorChange::RecoveryUse { hash } => {
                let n = exec!(&mut *tx, "UPDATE recovery_codes SET used_at = ?
                    WHERE user_id = ? AND code_hash = ? AND used_at IS NULL"; now, user_id, hash);
                if n != 1 {
                    return Ok(false);
                }
                exec!(&mut *tx, "UPDATE users SET recovery_codes_left = recovery_codes_left - 1
                    WHERE id = ?"; user_id);
                Ok(true)
            }
            FactorChange::PasskeyAdd { passkey: p } => {
                exec!(&mut *tx, "INSERT INTO passkeys (public_id, user_id, credential_key,
                        credential, name, created_at) VALUES (?, ?, ?, ?, ?, ?)";
                    p.public_id, user_id, p.credential_key, p.credential, p.name, now);
                exec!(&mut *tx, "UPDATE users SET passkey_count = passkey_count + 1
                    WHERE id = ?"; user_id);
                Ok(true)
            }
            FactorChange::PasskeyRemove { public_id } => {
                let n = exec!(&mut *tx, "DELETE FROM passkeys WHERE user_id = ? AND public_id = ?";
                    user_id, public_id);
                if n != 1 {
                    return Ok(false);
                }
                exec!(&mut *tx, "UPDATE users SET passkey_count = passkey_count - 1
                    WHERE id = ?"; user_id);
                Self::drop_recovery_without_factor(tx, user_id).await?;
                Ok(true)
            }
            FactorChange::ResetAll => {
                for statement in [
                    sql!("DELETE FROM totp_secrets WHERE user_id = ?"),
                    sql!("DELETE FROM recovery_codes WHERE user_id = ?"),
                    sql!("DELETE FROM passkeys WHERE user_id = ?"),
                    sql!("DELETE FROM challenges WHERE user_id = ?"),
                    sql!("DELETE FROM sessions WHERE user_id = ?"),
                    sql!(
                        "UPDATE users SET totp_enabled = FALSE, passkey_count = 0,
                        recovery_codes_left = 0 WHERE id = ?"
                    ),
                ] {
                    sqlx::query(statement)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(true)
            }
        }
    }

    /// Replaces the user's recovery codes with these hashes. Part of a transaction.
    async fn replace_recovery(
        tx: &mut DB::Connection,
        user_id: UserId,
        recovery: &[String],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        exec!(&mut *tx, "DELETE FROM recovery_codes WHERE user_id = ?"; user_id);
        for hash in recovery {
            exec!(&mut *tx, "INSERT INTO recovery_codes (user_id, code_hash, created_at)
                VALUES (?, ?, ?)"; user_id, hash.as_str(), now);
        }
        let left = i64::try_from(recovery.len()).unwrap_or(i64::MAX);
        exec!(&mut *tx, "UPDATE users SET recovery_codes_left = ? WHERE id = ?"; left, user_id);
        Ok(())
    }

    /// Recovery codes stand in for a second factor: without one left they go too.
    async fn drop_recovery_without_factor(
        tx: &mut DB::Connection,
        user_id: UserId,
    ) -> Result<(), sqlx::Error> {
        let none_left = exec!(&mut *tx, "UPDATE users SET recovery_codes_left = 0
            WHERE id = ? AND totp_enabled = FALSE AND passkey_count = 0"; user_id);
        if none_left == 1 {
            exec!(&mut *tx, "DELETE FROM recovery_codes WHERE user_id = ?"; user_id);
        }
        Ok(())
    }
}
