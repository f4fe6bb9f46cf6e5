//! The in-place upgrade pass over stored users (issue 14): argon2 hashes weaker than the
//! configured `ARGON2_*` parameters are wrapped in argon2id at those parameters
//! (`PasswordHasher::wrap_weaker`), and email keys stored under the old rule are rewritten
//! to today's (`crate::domain::Email`). `gatehouse upgrade-hashes` runs it once; the server
//! runs it in the background at every start unless `HASH_UPGRADE_ON_START=false`.
//!
//! Why a pass and not a migration: both need this Rust code (argon2, IDNA and case
//! folding), not SQL. Why it is safe anywhere, any time: every write is conditional on the
//! row still holding what the pass read — the hash (`replace_password_hash`), the old key
//! (`rekey_email`) — so a login, reset or admin change made meanwhile wins, an interrupted
//! pass leaves each row either done or untouched, and several instances starting at once
//! only repeat each other's reads. Why it never starves requests: it hashes one row at a
//! time, so it holds at most one of the hashing threads (which run at lower priority), and
//! it reads a page of users at a time.
//!
//! An old key whose new form another account already holds (someone registered `strasse@…`
//! beside an old `straße@…` row) is left as it is, counted and logged with the user id for
//! the operator to settle; lookups still find that row by its own spelling
//! (`crate::auth::lookup`).

use crate::auth::password::{HashError, PasswordHasher};
use crate::domain::Email;
use crate::state::now;
use crate::store::{Store, StoreError, User};

/// Users read per query.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Users looked at.
    pub users: u64,
    /// Weaker argon2 hashes replaced by their wrapped form.
    pub hashes_wrapped: u64,
    /// Email keys rewritten from the old rule to today's.
    pub emails_rekeyed: u64,
    /// Old email keys left because another account holds the new one.
    pub email_conflicts: u64,
}

impl Upgraded {
    fn changed(&self) -> bool {
        self.changed_since(&Upgraded::default())
    }

    fn changed_since(&self, before: &Upgraded) -> bool {
        (
            self.hashes_wrapped,
            self.emails_rekeyed,
            self.email_conflicts,
        ) != (
            before.hashes_wrapped,
            before.emails_rekeyed,
            before.email_conflicts,
        )
    }
}

/// One pass over every user, in id order. A row changed by someone else while the pass
/// looked at it is skipped, not counted.
pub async fn run(store: &dyn Store, hasher: &PasswordHasher) -> Result<Upgraded, UpgradeError> {
    let mut done = Upgraded::default();
    let mut after = 0;
    loop {
        let page = store.users_after(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let before = done;
        for user in &page {
            done.users += 1;
            rekey_email(store, user, &mut done).await?;
            wrap_hash(store, hasher, user, &mut done).await?;
        }
        if done.changed_since(&before) {
            tracing::info!(
                users = done.users,
                hashes_wrapped = done.hashes_wrapped,
                emails_rekeyed = done.emails_rekeyed,
                email_conflicts = done.email_conflicts,
                "upgrading stored users"
            );
        }
    }
    if done.changed() {
        tracing::info!(
            users = done.users,
            hashes_wrapped = done.hashes_wrapped,
            emails_rekeyed = done.emails_rekeyed,
            email_conflicts = done.email_conflicts,
            "upgrade pass done"
        );
    } else {
        tracing::debug!(users = done.users, "upgrade pass done: nothing to upgrade");
    }
    Ok(done)
}

/// The row's key recomputed from its stored address; rewritten when the row still holds
/// the old key. Addresses are read as lookups read them, so an address the rules for new
/// accounts would refuse keeps whatever key it has.
async fn rekey_email(
    store: &dyn Store,
    user: &User,
    done: &mut Upgraded,
) -> Result<(), StoreError> {
    let Ok(email) = Email::parse_lookup(&user.email) else {
        return Ok(());
    };
    let Some(old) = email.legacy() else {
        return Ok(());
    };
    match store.rekey_email(user.id, old.key(), email.key()).await {
        Ok(true) => done.emails_rekeyed += 1,
        Ok(false) => {}
        Err(StoreError::Conflict) => {
            done.email_conflicts += 1;
            // The user id only: addresses stay out of logs.
            tracing::warn!(
                user_id = user.id,
                "email key not rewritten: another account holds the address under today's key"
            );
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

async fn wrap_hash(
    store: &dyn Store,
    hasher: &PasswordHasher,
    user: &User,
    done: &mut Upgraded,
) -> Result<(), UpgradeError> {
    if !hasher.is_weaker_argon2(&user.password_hash) {
        return Ok(());
    }
    let wrapped = hasher.wrap_weaker(&user.password_hash).await?;
    if store
        .replace_password_hash(user.id, &user.password_hash, &wrapped, now())
        .await?
    {
        done.hashes_wrapped += 1;
    }
    Ok(())
}
