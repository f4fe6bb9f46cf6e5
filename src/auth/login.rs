//! Logging in: a password opens a session, or, on an account with a second factor,
//! an `mfa_token` that the second factor trades for one.
//!
//! Unknown identifier, wrong password and disabled account are refused alike, after the
//! same work (one hash, against a dummy when there is no user), held until the slowest
//! verification seen lately has had time to run (whatever format the stored hash is in),
//! so neither the answer nor its timing tells which accounts exist. A hash under older
//! parameters is replaced on the way in; the session row and its audit row are written
//! together.

use crate::audit::{self, Origin};
use crate::auth::device;
use crate::auth::factors::{self, Method};
use crate::auth::lookup;
use crate::auth::token::{looks_like_token, new_public_id, new_token, token_hash};
use crate::auth::verification;
use crate::domain::{Identifier, Password};
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::notify::Channel;
use crate::state::{now, AppState};
use crate::store::{NewChallenge, NewSession, User, UserId};

/// How long an `mfa_token` lives.
pub const MFA_TOKEN_TTL: i64 = 300;
/// Wrong second factors after which an `mfa_token` is dead.
pub const MFA_TOKEN_TRIES: u32 = 5;
/// The challenge kind of an `mfa_token`.
const MFA_KIND: &str = "mfa";

/// A session just opened.
pub struct Opened {
    /// The session token, for the client (it is stored only as its hash).
    pub token: String,
    pub user_id: UserId,
    /// The login came from a browser that is not yet a device of the account
    /// (`auth::device`); it becomes one.
    pub new_device: bool,
}

/// What a right first factor earns.
pub enum Outcome {
    /// A session.
    Opened(Opened),
    /// The account has a second factor: a token to present it with, and the methods it
    /// can be.
    SecondFactor {
        mfa_token: String,
        methods: Vec<&'static str>,
    },
}

/// The first factor that earned an `mfa_token`, recorded in its binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstFactor {
    Password,
    Code,
}

impl FirstFactor {
    fn as_str(self) -> &'static str {
        match self {
            FirstFactor::Password => "pwd",
            FirstFactor::Code => "code",
        }
    }
}

/// What an `mfa_token` is bound to: the first factor, and the user's password hash as it
/// was (a password changed or reset meanwhile kills the token).
fn binding(first: FirstFactor, user: &User) -> String {
    format!("{}:{}", first.as_str(), token_hash(&user.password_hash))
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
) -> Result<Outcome> {
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
    if user.has_second_factor() {
        // The password was right, but it is not enough: no session, and no clearing of
        // the account's login budget until the second factor is right too.
        if verdict.needs_rehash {
            rehash(state, &user, password).await?;
        }
        return second_factor_needed(state, &user, FirstFactor::Password, &Origin::of(meta)).await;
    }
    clear_login_budget(state, &account).await;
    if verdict.needs_rehash {
        rehash(state, &user, password).await?;
    }
    let opened = open(state, &user, 1, None, meta, device.is_none()).await?;
    Ok(Outcome::Opened(opened))
}

/// Clears an account's login budget after a complete login.
async fn clear_login_budget(state: &AppState, account: &str) {
    state
        .limiter
        .reset(&format!("login:account:{account}"))
        .await;
    state
        .limiter
        .reset(&format!("login:account-long:{account}"))
        .await;
}

/// Replaces a hash under older parameters, conditional on the old hash: never undo a
/// reset that raced with this login.
async fn rehash(state: &AppState, user: &User, password: &Password) -> Result<()> {
    let new_hash = state
        .hasher
        .hash(password)
        .await
        .map_err(ApiError::internal)?;
    state
        .store
        .replace_password_hash(user.id, &user.password_hash, &new_hash, now())
        .await?;
    tracing::info!(
        user_id = user.id,
        "password rehashed to current argon2id parameters"
    );
    Ok(())
}

/// Opens a session for `user` at assurance level `aal`, using up `challenge` (an
/// `mfa_token`, a passkey ceremony) in the same commit.
pub(crate) async fn open(
    state: &AppState,
    user: &User,
    aal: i32,
    challenge: Option<i64>,
    meta: &RequestMeta,
    new_device: bool,
) -> Result<Opened> {
    let now = now();
    let token = new_token();
    let lifetime = state.settings.sessions.session_absolute_timeout;
    let origin = Origin::of(meta);
    let ip = meta.ip.to_string();
    let opened = state
        .store
        .create_session(
            &NewSession {
                user_id: user.id,
                token_hash: &token_hash(&token),
                public_id: &new_public_id(),
                ip: Some(&ip),
                user_agent: meta.user_agent.as_deref(),
                aal,
                challenge,
                now,
                expires_at: now + lifetime.as_secs() as i64,
            },
            &origin.event("login_succeeded", Some(user.id)),
        )
        .await?;
    if !opened {
        return Err(ApiError::SignInExpired);
    }
    tracing::info!(user_id = user.id, aal, "login succeeded");
    metrics::counter!("gatehouse_logins_total", "result" => "succeeded").increment(1);
    Ok(Opened {
        token,
        user_id: user.id,
        new_device,
    })
}

/// A right first factor on an account with a second one: an `mfa_token` (stored as its
/// hash, bound to the user and to the proof, alive `MFA_TOKEN_TTL` seconds).
pub(crate) async fn second_factor_needed(
    state: &AppState,
    user: &User,
    first: FirstFactor,
    origin: &Origin,
) -> Result<Outcome> {
    let token = new_token();
    let now = now();
    state
        .store
        .create_challenge(&NewChallenge {
            token_hash: &token_hash(&token),
            kind: MFA_KIND,
            user_id: Some(user.id),
            binding: Some(&binding(first, user)),
            state: None,
            now,
            expires_at: now + MFA_TOKEN_TTL,
        })
        .await?;
    audit::attempt(state, "mfa_required", Some(user.id), origin).await;
    tracing::info!(
        user_id = user.id,
        "first factor right; second factor required"
    );
    Ok(Outcome::SecondFactor {
        mfa_token: token,
        methods: factors::methods(user),
    })
}

/// A live `mfa_token`: its challenge and its user, still bound as when it was issued.
pub(crate) struct Pending {
    pub challenge_id: i64,
    pub user: User,
    pub state: Option<String>,
}

/// The live `mfa_token` `token` names, with its user (enabled, password unchanged since).
pub(crate) async fn pending(state: &AppState, token: &str) -> Result<Pending> {
    if !looks_like_token(token) {
        return Err(ApiError::SignInExpired);
    }
    let challenge = state
        .store
        .challenge(&token_hash(token), MFA_KIND, now())
        .await?
        .ok_or(ApiError::SignInExpired)?;
    let user = match challenge.user_id {
        Some(id) => state.store.user_by_id(id).await?,
        None => None,
    };
    let user = user
        .filter(lookup::enabled)
        .ok_or(ApiError::SignInExpired)?;
    let bound = challenge.binding.as_deref().is_some_and(|b| {
        [FirstFactor::Password, FirstFactor::Code]
            .iter()
            .any(|f| b == binding(*f, &user))
    });
    if !bound {
        return Err(ApiError::SignInExpired);
    }
    Ok(Pending {
        challenge_id: challenge.id,
        user,
        state: challenge.state,
    })
}

/// `POST /login/mfa` with a code: the second step of a login. A right TOTP or recovery
/// code opens an `aal2` session and uses the token up; each try takes one of the token's
/// `MFA_TOKEN_TRIES` (atomically, before comparing) and one of the account's attempts.
pub async fn second_step(
    state: &AppState,
    token: &str,
    method: Method,
    code: &str,
    meta: &RequestMeta,
) -> Result<Opened> {
    let pending = pending(state, token).await?;
    let user = &pending.user;
    factors::spend_attempt(state, user, meta).await?;
    if !state
        .store
        .claim_challenge_attempt(pending.challenge_id, now(), MFA_TOKEN_TRIES)
        .await?
    {
        return Err(ApiError::SignInExpired);
    }
    let origin = Origin::of(meta);
    if !factors::check_code(state, user, method, code, &origin).await? {
        return Err(ApiError::InvalidSecondFactor);
    }
    finish(state, user, pending.challenge_id, meta).await
}

/// A right second factor: the session, and the account's budgets start afresh.
pub(crate) async fn finish(
    state: &AppState,
    user: &User,
    challenge_id: i64,
    meta: &RequestMeta,
) -> Result<Opened> {
    factors::clear_attempts(state, user).await;
    clear_login_budget(state, &format!("user:{}", user.id)).await;
    open(state, user, 2, Some(challenge_id), meta, true).await
}
