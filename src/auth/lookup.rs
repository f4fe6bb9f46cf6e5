//! Finding a user by identifier under both email keys: the one `Email` computes today and
//! the one earlier versions stored (see `crate::domain::Email`).
//!
//! Why here and not in the store: the legacy key is a domain rule, and the three store
//! backends stay one query per lookup, unchanged. Rows stored before the current email
//! normalisation keep their old `email_norm`; for the rare identifier whose two keys differ
//! (an email with non-ASCII characters) both are looked up — always both, so that the time
//! a lookup takes does not depend on which key matched or whether any did — and a match on
//! today's key wins. Every other identifier costs one lookup, as before.
//!
//! The gap this leaves, while a row still holds its old key: an old row stored as
//! `straße@…` is found by `straße@…` but not by `STRASSE@…`, and a new account may register
//! `strasse@…` beside it (whose key the old row does not hold). The upgrade pass
//! (`crate::upgrade`: `gatehouse upgrade-hashes`, and every server start unless
//! `HASH_UPGRADE_ON_START=false`) closes it by rewriting each old row's `email_norm` to
//! today's key; the double lookup stays for rows the pass has not reached yet (a database
//! from an earlier version, before its first start) and for those it had to leave because
//! another account already held the new key.

use crate::auth::codes::Purpose;
use crate::domain::Identifier;
use crate::store::{LiveCode, Store, StoreResult, User};

/// Whether an account may act at all. A disabled account gets nothing — no session, no
/// code, no reset — and every flow refuses it exactly as it refuses an identifier that
/// names nobody. (The session check applies the same rule in its query.)
pub fn enabled(user: &User) -> bool {
    user.disabled_at.is_none()
}

/// The enabled account an identifier names, if any ([`enabled`]).
pub async fn find_enabled(store: &dyn Store, identifier: &Identifier) -> StoreResult<Option<User>> {
    Ok(find_user(store, identifier).await?.filter(enabled))
}

/// The enabled account an identifier names with its live code, if any ([`enabled`]).
pub async fn find_enabled_with_live_code(
    store: &dyn Store,
    identifier: &Identifier,
    purpose: Purpose,
    now: i64,
) -> StoreResult<Option<(User, Option<LiveCode>)>> {
    Ok(find_user_with_live_code(store, identifier, purpose, now)
        .await?
        .filter(|(user, _)| enabled(user)))
}

/// `Store::find_user` under today's key, then the legacy one.
pub async fn find_user(store: &dyn Store, identifier: &Identifier) -> StoreResult<Option<User>> {
    let current = store.find_user(identifier).await?;
    let Some(legacy) = identifier.legacy() else {
        return Ok(current);
    };
    let old = store.find_user(&legacy).await?;
    Ok(current.or(old))
}

/// `Store::find_user_with_live_code` under today's key, then the legacy one.
pub async fn find_user_with_live_code(
    store: &dyn Store,
    identifier: &Identifier,
    purpose: Purpose,
    now: i64,
) -> StoreResult<Option<(User, Option<LiveCode>)>> {
    let purpose = purpose.as_str();
    let current = store
        .find_user_with_live_code(identifier, purpose, now)
        .await?;
    let Some(legacy) = identifier.legacy() else {
        return Ok(current);
    };
    let old = store
        .find_user_with_live_code(&legacy, purpose, now)
        .await?;
    Ok(current.or(old))
}
