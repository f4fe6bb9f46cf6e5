//! Contracts of what the second factors keep (`FactorStore`): TOTP steps, recovery codes,
//! passkeys, challenges, and the assurance level of sessions. `contract` re-exports them,
//! so `contract_tests!` runs them on every backend like the others.

use std::sync::Arc;

use gatehouse::store::{
    FactorChange, NewChallenge, NewPasskey, NewSession, Store, StoreError, UserId,
};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::contract::{event, live, login_event, session, user, T0};
use super::Raw;

fn hashes(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Alice with a confirmed TOTP secret (step T0/30 taken) and ten recovery codes `rc-0`…`rc-9`.
async fn alice_with_totp(store: &Arc<dyn Store>) -> UserId {
    let alice = user(store, "alice").await;
    let begin = FactorChange::TotpBegin { secret: "sealed" };
    assert!(store
        .change_factors(alice, &begin, T0, &[], &[])
        .await
        .unwrap());
    let codes = hashes("rc", 10);
    let confirm = FactorChange::TotpConfirm {
        step: T0 / 30,
        recovery: &codes,
    };
    assert!(store
        .change_factors(alice, &confirm, T0, &[], &[])
        .await
        .unwrap());
    alice
}

fn passkey<'a>(public_id: &'a str, key: &'a str) -> NewPasskey<'a> {
    NewPasskey {
        public_id,
        credential_key: key,
        credential: "{}",
        name: "Laptop",
    }
}

fn challenge<'a>(hash: &'a str, kind: &'a str, user: Option<UserId>) -> NewChallenge<'a> {
    NewChallenge {
        token_hash: hash,
        kind,
        user_id: user,
        binding: Some("pwd:x"),
        state: None,
        now: T0,
        expires_at: T0 + 300,
    }
}

pub async fn totp_turns_on_only_by_its_confirmation_and_a_time_step_is_taken_once(
    store: Arc<dyn Store>,
    _: Raw,
) {
    let alice = user(&store, "alice").await;
    let begin = FactorChange::TotpBegin { secret: "sealed-1" };
    assert!(store
        .change_factors(alice, &begin, T0, &[], &[])
        .await
        .unwrap());
    let pending = store.totp_secret(alice).await.unwrap().unwrap();
    assert_eq!(
        (pending.secret.as_str(), pending.confirmed_at),
        ("sealed-1", None)
    );
    let u = store.user_by_id(alice).await.unwrap().unwrap();
    assert!(
        !u.totp_enabled && !u.has_second_factor(),
        "nothing changes before confirmation"
    );
    // An unconfirmed secret takes no step, and a second setup replaces it.
    assert!(!store.take_totp_step(alice, 5).await.unwrap());
    let again = FactorChange::TotpBegin { secret: "sealed-2" };
    assert!(store
        .change_factors(alice, &again, T0, &[], &[])
        .await
        .unwrap());
    assert_eq!(
        store.totp_secret(alice).await.unwrap().unwrap().secret,
        "sealed-2"
    );

    let codes = hashes("rc", 10);
    let confirm = FactorChange::TotpConfirm {
        step: 100,
        recovery: &codes,
    };
    let events = [event("totp_enabled", Some(alice), T0)];
    assert!(store
        .change_factors(alice, &confirm, T0, &[], &events)
        .await
        .unwrap());
    assert!(
        !store
            .change_factors(alice, &confirm, T0, &[], &[])
            .await
            .unwrap(),
        "confirmed once"
    );
    let u = store.user_by_id(alice).await.unwrap().unwrap();
    assert!(u.totp_enabled && u.has_second_factor());
    assert_eq!(u.recovery_codes_left, 10);
    // A confirmed secret is not replaced by a new setup.
    assert!(!store
        .change_factors(alice, &again, T0, &[], &[])
        .await
        .unwrap());
    // The confirming step is taken; later steps once each; earlier ones never.
    assert!(!store.take_totp_step(alice, 100).await.unwrap());
    assert!(!store.take_totp_step(alice, 99).await.unwrap());
    assert!(store.take_totp_step(alice, 101).await.unwrap());
    assert!(!store.take_totp_step(alice, 101).await.unwrap());
    assert!(store.take_totp_step(alice, 103).await.unwrap());
    assert!(!store.take_totp_step(alice, 102).await.unwrap());
}

pub async fn twenty_concurrent_uses_of_one_time_step_take_it_once(store: Arc<dyn Store>, _: Raw) {
    let alice = alice_with_totp(&store).await;
    let step = T0 / 30 + 1;
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            store.take_totp_step(alice, step).await.unwrap()
        });
    }
    let taken = tasks.join_all().await.into_iter().filter(|t| *t).count();
    assert_eq!(taken, 1);
}

pub async fn twenty_concurrent_uses_of_one_recovery_code_succeed_once(
    store: Arc<dyn Store>,
    raw: Raw,
) {
    let alice = alice_with_totp(&store).await;
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let used = FactorChange::RecoveryUse { hash: "rc-3" };
            let events = [event("recovery_code_used", Some(alice), T0)];
            store
                .change_factors(alice, &used, T0 + 1, &[], &events)
                .await
                .unwrap()
        });
    }
    let used = tasks.join_all().await.into_iter().filter(|u| *u).count();
    assert_eq!(used, 1);
    let u = store.user_by_id(alice).await.unwrap().unwrap();
    assert_eq!(u.recovery_codes_left, 9);
    let events = raw
        .count("SELECT COUNT(*) FROM audit_events WHERE event = 'recovery_code_used'")
        .await;
    assert_eq!(events, 1, "a refused use records nothing");
    // Another user's code, or none at all, is no use.
    let bob = user(&store, "bob").await;
    let theirs = FactorChange::RecoveryUse { hash: "rc-4" };
    assert!(!store
        .change_factors(bob, &theirs, T0, &[], &[])
        .await
        .unwrap());
    let unknown = FactorChange::RecoveryUse { hash: "nope" };
    assert!(!store
        .change_factors(alice, &unknown, T0, &[], &[])
        .await
        .unwrap());
    // A new set replaces the old one.
    let fresh = hashes("new", 10);
    let replace = FactorChange::RecoveryReplace { recovery: &fresh };
    assert!(store
        .change_factors(alice, &replace, T0, &[], &[])
        .await
        .unwrap());
    assert!(!store
        .change_factors(alice, &theirs, T0, &[], &[])
        .await
        .unwrap());
    let old = FactorChange::RecoveryUse { hash: "rc-5" };
    assert!(!store
        .change_factors(alice, &old, T0, &[], &[])
        .await
        .unwrap());
    let new = FactorChange::RecoveryUse { hash: "new-5" };
    assert!(store
        .change_factors(alice, &new, T0, &[], &[])
        .await
        .unwrap());
    assert_eq!(
        store
            .user_by_id(alice)
            .await
            .unwrap()
            .unwrap()
            .recovery_codes_left,
        9
    );
}

pub async fn passkeys_are_counted_unique_per_credential_and_removed_only_by_their_owner(
    store: Arc<dyn Store>,
    _: Raw,
) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let laptop = passkey("pk-1", "cred-1");
    let add = FactorChange::PasskeyAdd { passkey: &laptop };
    assert!(store
        .change_factors(alice, &add, T0, &[], &[])
        .await
        .unwrap());
    let phone = passkey("pk-2", "cred-2");
    let add2 = FactorChange::PasskeyAdd { passkey: &phone };
    assert!(store
        .change_factors(alice, &add2, T0 + 1, &[], &[])
        .await
        .unwrap());
    // One credential, one account: the same credential again is a conflict.
    let stolen = passkey("pk-3", "cred-1");
    let again = FactorChange::PasskeyAdd { passkey: &stolen };
    assert!(matches!(
        store.change_factors(bob, &again, T0, &[], &[]).await,
        Err(StoreError::Conflict)
    ));
    let u = store.user_by_id(alice).await.unwrap().unwrap();
    assert_eq!(u.passkey_count, 2);
    assert!(u.has_second_factor());
    let listed = store.passkeys(alice).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|p| p.public_id.as_str()).collect();
    assert_eq!(ids, ["pk-1", "pk-2"], "oldest first");
    assert!(store.passkeys(bob).await.unwrap().is_empty());
    let found = store
        .passkey_by_credential("cred-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.user_id, found.last_used_at), (alice, None));
    store
        .passkey_used("cred-2", "{\"counter\":1}", T0 + 5)
        .await
        .unwrap();
    let used = store
        .passkey_by_credential("cred-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (used.credential.as_str(), used.last_used_at),
        ("{\"counter\":1}", Some(T0 + 5))
    );

    // Bob cannot remove Alice's; Alice can, once.
    let remove = FactorChange::PasskeyRemove { public_id: "pk-1" };
    assert!(!store
        .change_factors(bob, &remove, T0, &[], &[])
        .await
        .unwrap());
    assert!(store
        .change_factors(alice, &remove, T0, &[], &[])
        .await
        .unwrap());
    assert!(!store
        .change_factors(alice, &remove, T0, &[], &[])
        .await
        .unwrap());
    assert_eq!(
        store
            .user_by_id(alice)
            .await
            .unwrap()
            .unwrap()
            .passkey_count,
        1
    );
}

pub async fn recovery_codes_go_with_the_last_factor(store: Arc<dyn Store>, raw: Raw) {
    let alice = alice_with_totp(&store).await;
    let key = passkey("pk-1", "cred-1");
    let add = FactorChange::PasskeyAdd { passkey: &key };
    assert!(store
        .change_factors(alice, &add, T0, &[], &[])
        .await
        .unwrap());
    // TOTP goes; a passkey is left, so the codes stay.
    assert!(store
        .change_factors(alice, &FactorChange::TotpRemove, T0, &[], &[])
        .await
        .unwrap());
    assert!(!store
        .change_factors(alice, &FactorChange::TotpRemove, T0, &[], &[])
        .await
        .unwrap());
    let u = store.user_by_id(alice).await.unwrap().unwrap();
    assert!(!u.totp_enabled && u.has_second_factor());
    assert_eq!(u.recovery_codes_left, 10);
    assert!(store.totp_secret(alice).await.unwrap().is_none());
    // The last passkey goes: so do the codes.
    let remove = FactorChange::PasskeyRemove { public_id: "pk-1" };
    assert!(store
        .change_factors(alice, &remove, T0, &[], &[])
        .await
        .unwrap());
    let u = store.user_by_id(alice).await.unwrap().unwrap();
    assert!(!u.has_second_factor());
    assert_eq!(u.recovery_codes_left, 0);
    let left = raw
        .count(&format!(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = {alice}"
        ))
        .await;
    assert_eq!(left, 0);
}

pub async fn an_operators_reset_removes_every_factor_and_ends_every_session(
    store: Arc<dyn Store>,
    raw: Raw,
) {
    let alice = alice_with_totp(&store).await;
    let bob = user(&store, "bob").await;
    let key = passkey("pk-1", "cred-1");
    let add = FactorChange::PasskeyAdd { passkey: &key };
    assert!(store
        .change_factors(alice, &add, T0, &[], &[])
        .await
        .unwrap());
    session(&store, alice, "a-1", T0, T0 + 10_000).await;
    session(&store, bob, "b-1", T0, T0 + 10_000).await;
    store
        .create_challenge(&challenge("mfa-a", "mfa", Some(alice)))
        .await
        .unwrap();
    let events = [event("mfa_reset", Some(alice), T0 + 1)];
    assert!(store
        .change_factors(alice, &FactorChange::ResetAll, T0 + 1, &[], &events)
        .await
        .unwrap());
    let u = store.user_by_id(alice).await.unwrap().unwrap();
    assert!(!u.has_second_factor());
    assert_eq!((u.passkey_count, u.recovery_codes_left), (0, 0));
    assert!(!live(&store, "a-1", T0 + 2).await);
    assert!(live(&store, "b-1", T0 + 2).await);
    for table in ["totp_secrets", "recovery_codes", "passkeys", "challenges"] {
        let n = raw
            .count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE user_id = {alice}"
            ))
            .await;
        assert_eq!(n, 0, "{table}");
    }
    let recorded = raw
        .count("SELECT COUNT(*) FROM audit_events WHERE event = 'mfa_reset'")
        .await;
    assert_eq!(recorded, 1);
    // Deleting a user takes whatever factors they had.
    let bob_key = passkey("pk-b", "cred-b");
    let add = FactorChange::PasskeyAdd { passkey: &bob_key };
    assert!(store.change_factors(bob, &add, T0, &[], &[]).await.unwrap());
    assert!(store.delete_user(bob, &[], &[]).await.unwrap());
    assert!(store
        .passkey_by_credential("cred-b")
        .await
        .unwrap()
        .is_none());
}

pub async fn a_challenge_lives_until_it_expires_and_is_used_up_once(store: Arc<dyn Store>, _: Raw) {
    let alice = user(&store, "alice").await;
    store
        .create_challenge(&challenge("h-1", "mfa", Some(alice)))
        .await
        .unwrap();
    assert!(
        store
            .challenge("h-1", "passkey_login", T0)
            .await
            .unwrap()
            .is_none(),
        "kind"
    );
    assert!(store.challenge("h-2", "mfa", T0).await.unwrap().is_none());
    let live = store
        .challenge("h-1", "mfa", T0 + 299)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.user_id, Some(alice));
    assert_eq!(live.binding.as_deref(), Some("pwd:x"));
    assert_eq!((live.state, live.attempts), (None, 0));
    assert!(
        store
            .challenge("h-1", "mfa", T0 + 300)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(store
        .set_challenge_state(live.id, "state-1", T0 + 1)
        .await
        .unwrap());
    let with_state = store
        .challenge("h-1", "mfa", T0 + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(with_state.state.as_deref(), Some("state-1"));

    let barrier = Arc::new(Barrier::new(10));
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            store.take_challenge(live.id).await.unwrap()
        });
    }
    let taken = tasks.join_all().await.into_iter().filter(|t| *t).count();
    assert_eq!(taken, 1);
    assert!(store
        .challenge("h-1", "mfa", T0 + 2)
        .await
        .unwrap()
        .is_none());
    assert!(!store
        .set_challenge_state(live.id, "state-2", T0 + 3)
        .await
        .unwrap());
    // Disabling the user ends their pending challenges with their sessions.
    store
        .create_challenge(&challenge("h-3", "mfa", Some(alice)))
        .await
        .unwrap();
    assert!(store.set_disabled(alice, Some(T0 + 4), &[]).await.unwrap());
    assert!(store
        .challenge("h-3", "mfa", T0 + 5)
        .await
        .unwrap()
        .is_none());
}

pub async fn twenty_concurrent_attempts_on_a_challenge_allowing_five_take_exactly_five(
    store: Arc<dyn Store>,
    _: Raw,
) {
    let alice = user(&store, "alice").await;
    store
        .create_challenge(&challenge("h-1", "mfa", Some(alice)))
        .await
        .unwrap();
    let id = store.challenge("h-1", "mfa", T0).await.unwrap().unwrap().id;
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            store.claim_challenge_attempt(id, T0 + 1, 5).await.unwrap()
        });
    }
    let claimed = tasks.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(claimed, 5);
    let after = store
        .challenge("h-1", "mfa", T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.attempts, 5);
    // An expired challenge gives no try either.
    store
        .create_challenge(&challenge("h-2", "mfa", Some(alice)))
        .await
        .unwrap();
    let old = store.challenge("h-2", "mfa", T0).await.unwrap().unwrap().id;
    assert!(!store
        .claim_challenge_attempt(old, T0 + 300, 5)
        .await
        .unwrap());
}

pub async fn a_session_opened_with_a_challenge_uses_it_up_and_records_its_level(
    store: Arc<dyn Store>,
    raw: Raw,
) {
    let alice = user(&store, "alice").await;
    store
        .create_challenge(&challenge("h-1", "mfa", Some(alice)))
        .await
        .unwrap();
    let id = store.challenge("h-1", "mfa", T0).await.unwrap().unwrap().id;
    let open = |token: &'static str| {
        let store = store.clone();
        async move {
            store
                .create_session(
                    &NewSession {
                        user_id: alice,
                        token_hash: token,
                        public_id: token,
                        ip: None,
                        user_agent: None,
                        aal: 2,
                        challenge: Some(id),
                        now: T0 + 10,
                        expires_at: T0 + 1000,
                    },
                    &login_event(alice, T0 + 10),
                )
                .await
                .unwrap()
        }
    };
    assert!(open("tok-1").await);
    assert!(!open("tok-2").await, "the challenge is used up");
    assert_eq!(
        raw.count(&format!(
            "SELECT COUNT(*) FROM sessions WHERE user_id = {alice}"
        ))
        .await,
        1
    );
    let row = store
        .session_user("tok-1", T0 + 11, i64::MIN, i64::MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.aal, row.proved_at), (2, T0 + 10));
    // A proof later raises the time; a weaker proof never lowers the level.
    assert!(store.prove_session("tok-1", 1, T0 + 50).await.unwrap());
    let row = store
        .session_user("tok-1", T0 + 51, i64::MIN, i64::MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.aal, row.proved_at), (2, T0 + 50));
    assert!(!store.prove_session("gone", 2, T0 + 50).await.unwrap());
    // A password login's session starts at its own level, proved when opened.
    session(&store, alice, "tok-3", T0 + 20, T0 + 1000).await;
    let row = store
        .session_user("tok-3", T0 + 21, i64::MIN, i64::MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.aal, row.proved_at), (1, T0 + 20));
    assert!(store.prove_session("tok-3", 2, T0 + 30).await.unwrap());
    let listed = store
        .list_sessions(alice, "tok-3", T0 + 31, i64::MIN)
        .await
        .unwrap();
    let levels: Vec<_> = listed.iter().map(|s| (s.aal, s.proved_at)).collect();
    assert_eq!(levels, [(2, T0 + 30), (2, T0 + 50)]);
}
