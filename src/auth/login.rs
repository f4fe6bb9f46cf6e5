//! Logging in: a password opens a session.
//!
//! Unknown identifier, wrong password and disabled account are refused alike, after the
//! same work (one hash, against a dummy when there is no user), held until the slowest
//! verification seen lately has had time to run (whatever format the stored hash is in),
//! so neither the answer nor its timing tells which accounts exist. A hash under older
//! parameters is replaced on the way in; the session row and its audit row are written
//! together.

use crate::audit::{self, Origin};
use crate::auth::device;
use crate::auth::lookup;
use crate::auth::token::{new_public_id, new_token, token_hash};
use crate::auth::verification;
use crate::domain::{Identifier, Password};
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::notify::Channel;
use crate::state::{now, AppState};
use crate::store::{NewSession, UserId};

/// A session just opened.
pub struct Opened {
    /// The session token, for the client (it is stored only as its hash).
    pub token: String,
    pub user_id: UserId,
    /// The login came from a browser that is not yet a device of the account
    /// (`auth::device`); it becomes one.
    pub new_device: bool,
}

/// Spends one attempt of an account's login budget (`account`: `user:<id>`, `device:<id>`
/// or `name:<key>`), in a burst and over the long run: every check of a password does,
/// at /login or behind a session (`auth::account`).
pub(crate) async fn spend_account_budget(state: &AppState, account: &str) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.login_per_account,
        "login:account",
        account,
    )
    .await?;
    limit::spend(
        &*state.limiter,
        &limits.login_per_account_long,
        "login:account-long",
        account,
    )
    .await
}

/// Checks `password` for the account `identifier` names and opens a session for it.
/// Rate limited per client IP and per account (per device, from one of its devices); a
/// success clears the account's budget. `device_cookie` is the request's, if any.
pub async fn open_session(
    state: &AppState,
    identifier: &Identifier,
    password: &Password,
    device_cookie: Option<String>,
    meta: &RequestMeta,
) -> Result<Opened> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.login_per_ip,
        "login:ip",
        &meta.ip_key,
    )
    .await?;

    let found = lookup::find_user(&*state.store, identifier).await?;
    // The budget of failed attempts belongs to the account, whichever of its identifiers
    // is typed (one budget, not three); attempts from one of its devices have their own,
    // so an attacker spending the account's cannot lock the owner out (auth::device).
    let device = found
        .as_ref()
        .and_then(|u| device::of_user(&state.keys, device_cookie, u.id));
    let account = match (&device, &found) {
        (Some(d), _) => format!("device:{}", d.id),
        (None, Some(u)) => format!("user:{}", u.id),
        (None, None) => format!("name:{}", identifier.key()),
    };
    spend_account_budget(state, &account).await?;
    let known_id = found.as_ref().map(|u| u.id);
    let user = found.filter(lookup::enabled);
    let (verdict, hold) = state
        .hasher
        .verify_held(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await
        .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|_| verdict.ok) else {
        tracing::info!("login failed");
        metrics::counter!("gatehouse_logins_total", "result" => "failed").increment(1);
        audit::attempt(state, "login_failed", known_id, &Origin::of(meta)).await;
        // A wrapped bcrypt hash costs more than the dummy, an older argon2 one less: the
        // refusal waits for the same floor either way. Success is not held.
        hold.wait().await;
        return Err(ApiError::InvalidCredentials);
    };
    if state.settings.recovery.require_verified_email && !user.email_verified {
        // The right password on an unproven email: no session, and a fresh code to prove
        // it (within the account's cap of codes).
        tracing::info!(user_id = user.id, "login refused: email not verified");
        verification::send_later(state, user, vec![Channel::Email], Origin::of(meta)).await?;
        return Err(ApiError::EmailNotVerified);
    }
    state
        .limiter
        .reset(&format!("login:account:{account}"))
        .await;
    state
        .limiter
        .reset(&format!("login:account-long:{account}"))
        .await;

    let now = now();
    if verdict.needs_rehash {
        let new_hash = state
            .hasher
            .hash(password)
            .await
            .map_err(ApiError::internal)?;
        // Conditional on the old hash: never undo a reset that raced with this login.
        state
            .store
            .replace_password_hash(user.id, &user.password_hash, &new_hash, now)
            .await?;
        tracing::info!(
            user_id = user.id,
            "password rehashed to current argon2id parameters"
        );
    }

    let token = new_token();
    let lifetime = state.settings.sessions.session_absolute_timeout;
    let origin = Origin::of(meta);
    let ip = meta.ip.to_string();
    state
        .store
        .create_session(
            &NewSession {
                user_id: user.id,
                token_hash: &token_hash(&token),
                public_id: &new_public_id(),
                ip: Some(&ip),
                user_agent: meta.user_agent.as_deref(),
                now,
                expires_at: now + lifetime.as_secs() as i64,
            },
            &origin.event("login_succeeded", Some(user.id)),
        )
        .await?;
    tracing::info!(user_id = user.id, "login succeeded");
    metrics::counter!("gatehouse_logins_total", "result" => "succeeded").increment(1);
    Ok(Opened {
        token,
        user_id: user.id,
        new_device: device.is_none(),
    })
}
