//! Second factors: TOTP with its recovery codes, the check of a second factor wherever
//! one is asked for (the second step of a login, re-authentication, removing TOTP), and
//! step-up: the recent proof a sensitive change needs. Passkeys are `auth::passkey`.
//!
//! What parallel requests cannot slip past: a TOTP time step is accepted at most once
//! per user (the store raises `last_step` only while it is lower, on every instance), a
//! recovery code is used once (its `used_at` set only while NULL), and every check spends
//! the account's budget of second-factor attempts (RATE_MFA_PER_ACCOUNT, atomic in the
//! limiter, shared through Redis) before anything is compared; a success clears it.

use rand::rngs::OsRng;
use rand::Rng;

use crate::audit::{self, Origin};
use crate::auth::account::{self, sealed};
use crate::auth::totp;
use crate::error::{ApiError, Result};
use crate::extract::{AuthSession, RequestMeta};
use crate::limit;
use crate::state::{now, AppState};
use crate::store::{FactorChange, User};

/// How many recovery codes a set has.
pub const RECOVERY_CODES: usize = 10;
/// Crockford's base32 alphabet, lower case: no i, l, o or u to misread.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters of a recovery code (5 bits each: 50 bits), shown as two groups of five.
const RECOVERY_LEN: usize = 10;

/// A second factor's kind, as the API names it (`method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Totp,
    RecoveryCode,
    Passkey,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "totp" => Ok(Method::Totp),
            "recovery_code" => Ok(Method::RecoveryCode),
            "passkey" => Ok(Method::Passkey),
            _ => Err(ApiError::invalid(
                "method",
                "must be `totp`, `recovery_code` or `passkey`",
            )),
        }
    }
}

/// The second factors the user can sign in with, as `methods` lists them.
pub fn methods(user: &User) -> Vec<&'static str> {
    let mut methods = Vec::with_capacity(3);
    if user.totp_enabled {
        methods.push("totp");
    }
    if user.recovery_codes_left > 0 {
        methods.push("recovery_code");
    }
    if user.passkey_count > 0 {
        methods.push("passkey");
    }
    methods
}

/// Step-up: a sensitive change needs the session's user to have proved themselves within
/// REAUTH_MAX_AGE, and with a second factor when the account has one.
pub fn step_up(state: &AppState, session: &AuthSession) -> Result<()> {
    let max_age = state.settings.factors.reauth_max_age.as_secs() as i64;
    let recent = now() - session.proved_at <= max_age;
    let strong = session.aal >= 2 || !session.user.has_second_factor();
    if recent && strong {
        Ok(())
    } else {
        Err(ApiError::ReauthRequired)
    }
}

/// At most one "someone is guessing your second factor" notice a day per account.
const GUESSING_NOTICE: crate::config::Rule = crate::config::Rule {
    count: 1,
    period: std::time::Duration::from_secs(24 * 3600),
};

/// Spends one second-factor attempt of the client IP and of the account. When the
/// account's budget is spent, its owner is told (once a day): whoever is guessing has
/// their password.
pub async fn spend_attempt(state: &AppState, user: &User, meta: &RequestMeta) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(&*state.limiter, &limits.mfa_per_ip, "mfa:ip", &meta.ip_key).await?;
    let spent = limit::spend(
        &*state.limiter,
        &limits.mfa_per_account,
        "mfa:account",
        &user.id.to_string(),
    )
    .await;
    if spent.is_err() {
        tracing::warn!(
            user_id = user.id,
            "second factor refused: the account's budget of attempts is spent"
        );
        warn_owner(state, user).await;
    }
    spent
}

/// Tells the owner that someone with their password is failing the second factor.
async fn warn_owner(state: &AppState, user: &User) {
    if state
        .limiter
        .check(
            &GUESSING_NOTICE,
            &format!("notice:mfa-guessing:{}", user.id),
        )
        .await
        .is_err()
    {
        return;
    }
    let notice = account::email_to(
        user,
        "Someone is trying to sign in to your account",
        format!(
            "Someone who knows the password of your account {} is entering wrong \
             second-factor codes. Further tries are refused for now.\n\n\
             If this is not you, change your password now: that also ends every sign-in \
             waiting for its second factor.",
            user.username
        ),
    );
    if let Err(e) = crate::auth::codes::notify(state, &notice, Some(user.id)).await {
        tracing::warn!(user_id = user.id, error = %e, "second-factor guessing notice not queued");
    }
}

/// After a right second factor, the account's attempts start afresh.
pub async fn clear_attempts(state: &AppState, user: &User) {
    state
        .limiter
        .reset(&format!("mfa:account:{}", user.id))
        .await;
}

/// Counts a second factor checked (`gatehouse_second_factors_total`).
pub fn count(method: Method, right: bool) {
    let method = match method {
        Method::Totp => "totp",
        Method::RecoveryCode => "recovery_code",
        Method::Passkey => "passkey",
    };
    let result = if right { "succeeded" } else { "failed" };
    metrics::counter!("gatehouse_second_factors_total", "method" => method, "result" => result)
        .increment(1);
}

/// Checks a TOTP or recovery code of `user`'s, the attempt already spent: true when right,
/// and then used up (its time step taken, or the recovery code spent with a notice and an
/// audit row). A wrong one is audited.
pub async fn check_code(
    state: &AppState,
    user: &User,
    method: Method,
    code: &str,
    origin: &Origin,
) -> Result<bool> {
    let right = match method {
        Method::Totp => check_totp(state, user, code).await?,
        Method::RecoveryCode => use_recovery_code(state, user, code, origin).await?,
        Method::Passkey => false,
    };
    count(method, right);
    if !right {
        tracing::info!(user_id = user.id, "wrong second factor");
        audit::attempt(state, "mfa_failed", Some(user.id), origin).await;
    }
    Ok(right)
}

/// A guess at the user's confirmed TOTP: right, and its time step not taken before.
async fn check_totp(state: &AppState, user: &User, guess: &str) -> Result<bool> {
    let guess: String = guess.chars().filter(|c| !c.is_whitespace()).collect();
    if guess.len() != 6 || !guess.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(false);
    }
    let Some(record) = state.store.totp_secret(user.id).await? else {
        return Ok(false);
    };
    if record.confirmed_at.is_none() {
        return Ok(false);
    }
    let secret = state
        .keys
        .open_factor(&record.secret)
        .map_err(ApiError::internal)?;
    match totp::matching_step(&secret, &guess, now()) {
        Some(step) => Ok(state.store.take_totp_step(user.id, step).await?),
        None => Ok(false),
    }
}

/// A recovery code as typed, in its canonical form (lower case, no separators, the
/// letters Crockford's alphabet leaves out read as the digits they look like), if it can
/// be one.
fn canonical_recovery_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        })
        .collect();
    (code.len() == RECOVERY_LEN && code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
        .then_some(code)
}

/// Spends one of the user's recovery codes: false when it is not one of their unused ones.
async fn use_recovery_code(
    state: &AppState,
    user: &User,
    typed: &str,
    origin: &Origin,
) -> Result<bool> {
    let Some(code) = canonical_recovery_code(typed) else {
        return Ok(false);
    };
    let now = now();
    let left = user.recovery_codes_left.saturating_sub(1);
    let notice = account::email_to(
        user,
        "A recovery code was used",
        format!(
            "One of the recovery codes of your account {} was just used to sign in or to \
             confirm a change. {left} unused codes are left.\n\n\
             If this was not you, someone has your password and a recovery code: reset \
             your password and replace your recovery codes now.",
            user.username
        ),
    );
    let mut payload = String::new();
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let hash = state.keys.recovery_hash(user.id, &code);
    let used = state
        .store
        .change_factors(
            user.id,
            &FactorChange::RecoveryUse { hash: &hash },
            now,
            &notices,
            &[origin.event("recovery_code_used", Some(user.id))],
        )
        .await?;
    if used {
        state.outbox_wake.notify_one();
        crate::metrics::account_event("recovery_code_used");
    }
    Ok(used)
}

/// A new set of recovery codes: the codes to show, once, and their stored hashes.
fn new_recovery_codes(state: &AppState, user: &User) -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let raw: String = (0..RECOVERY_LEN)
                .map(|_| char::from(RECOVERY_ALPHABET[OsRng.gen_range(0..32)]))
                .collect();
            format!("{}-{}", &raw[..5], &raw[5..])
        })
        .collect();
    let hashes = codes
        .iter()
        .filter_map(|c| canonical_recovery_code(c))
        .map(|c| state.keys.recovery_hash(user.id, &c))
        .collect();
    (codes, hashes)
}

/// A TOTP enrolment waiting for its first code: what the authenticator app needs.
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

/// `POST /mfa/totp/setup`: a new secret, stored sealed and unconfirmed (replacing an
/// earlier enrolment that was never confirmed). Nothing changes until it is confirmed.
pub async fn begin_totp(state: &AppState, user: &User, meta: &RequestMeta) -> Result<Enrolment> {
    account::spend_limits(state, user, meta).await?;
    const ENABLED: ApiError = ApiError::Conflict("Two-factor authentication is already enabled");
    if user.totp_enabled {
        return Err(ENABLED);
    }
    let secret = totp::new_secret();
    let issuer = &state.settings.factors.mfa_issuer;
    let made = || -> Option<Enrolment> {
        let otpauth_uri = totp::otpauth_uri(&secret, issuer, &user.username)?;
        Some(Enrolment {
            secret: totp::base32(&secret)?,
            qr_svg: totp::qr_svg(&otpauth_uri)?,
            otpauth_uri,
        })
    };
    let enrolment = made().ok_or_else(|| ApiError::internal(EnrolmentError))?;
    let sealed_secret = state
        .keys
        .seal_factor(&secret)
        .map_err(ApiError::internal)?;
    let stored = state
        .store
        .change_factors(
            user.id,
            &FactorChange::TotpBegin {
                secret: &sealed_secret,
            },
            now(),
            &[],
            &[],
        )
        .await?;
    if !stored {
        return Err(ENABLED);
    }
    Ok(enrolment)
}

#[derive(Debug, thiserror::Error)]
#[error("the TOTP enrolment could not be encoded")]
struct EnrolmentError;

/// `POST /mfa/totp/confirm`: the first code from the app turns TOTP on, with a new set of
/// recovery codes (returned, to be shown once), a notice and an audit row. The session
/// that confirmed has proved a second factor.
pub async fn confirm_totp(
    state: &AppState,
    session: &AuthSession,
    otp: &str,
    meta: &RequestMeta,
) -> Result<Vec<String>> {
    let user = &session.user;
    account::spend_limits(state, user, meta).await?;
    if user.totp_enabled {
        return Err(ApiError::Conflict(
            "Two-factor authentication is already enabled",
        ));
    }
    let Some(record) = state.store.totp_secret(user.id).await? else {
        return Err(ApiError::Missing(
            "No two-factor enrolment to confirm: start one with POST /mfa/totp/setup",
        ));
    };
    spend_attempt(state, user, meta).await?;
    let secret = state
        .keys
        .open_factor(&record.secret)
        .map_err(ApiError::internal)?;
    let guess: String = otp.chars().filter(|c| !c.is_whitespace()).collect();
    let origin = Origin::of(meta);
    let now = now();
    let Some(step) = totp::matching_step(&secret, &guess, now) else {
        audit::attempt(state, "mfa_failed", Some(user.id), &origin).await;
        return Err(ApiError::InvalidCode);
    };
    let (codes, hashes) = new_recovery_codes(state, user);
    let notice = account::email_to(
        user,
        "Two-factor authentication enabled",
        format!(
            "Two-factor authentication with an authenticator app was turned on for your \
             account {}. Signing in now takes your password and a code from the app.\n\n\
             If this was not you, reset your password and contact support.",
            user.username
        ),
    );
    let mut payload = String::new();
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let enabled = state
        .store
        .change_factors(
            user.id,
            &FactorChange::TotpConfirm {
                step,
                recovery: &hashes,
            },
            now,
            &notices,
            &[origin.event("totp_enabled", Some(user.id))],
        )
        .await?;
    if !enabled {
        return Err(ApiError::InvalidCode);
    }
    state.outbox_wake.notify_one();
    clear_attempts(state, user).await;
    state
        .store
        .prove_session(&session.token_hash, 2, now)
        .await?;
    tracing::info!(user_id = user.id, "TOTP enabled");
    crate::metrics::account_event("totp_enabled");
    Ok(codes)
}

/// `DELETE /mfa/totp`: a code from the app, or a recovery code, turns TOTP off (and the
/// recovery codes with it when no passkey is left), with a notice and an audit row.
pub async fn remove_totp(
    state: &AppState,
    user: &User,
    code: &str,
    meta: &RequestMeta,
) -> Result<()> {
    account::spend_limits(state, user, meta).await?;
    if !user.totp_enabled {
        return Err(ApiError::Missing(
            "Two-factor authentication is not enabled",
        ));
    }
    spend_attempt(state, user, meta).await?;
    let origin = Origin::of(meta);
    let method = if canonical_recovery_code(code).is_some() {
        Method::RecoveryCode
    } else {
        Method::Totp
    };
    if !check_code(state, user, method, code, &origin).await? {
        return Err(ApiError::InvalidCode);
    }
    clear_attempts(state, user).await;
    let now = now();
    let notice = account::email_to(
        user,
        "Two-factor authentication disabled",
        format!(
            "Two-factor authentication with an authenticator app was turned off for your \
             account {}.\n\nIf this was not you, reset your password and contact support.",
            user.username
        ),
    );
    let mut payload = String::new();
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let removed = state
        .store
        .change_factors(
            user.id,
            &FactorChange::TotpRemove,
            now,
            &notices,
            &[origin.event("totp_disabled", Some(user.id))],
        )
        .await?;
    if !removed {
        return Err(ApiError::Missing(
            "Two-factor authentication is not enabled",
        ));
    }
    state.outbox_wake.notify_one();
    tracing::info!(user_id = user.id, "TOTP disabled");
    crate::metrics::account_event("totp_disabled");
    Ok(())
}

/// `POST /mfa/recovery-codes`: a new set replaces the old one (returned, to be shown
/// once), with a notice and an audit row.
pub async fn replace_recovery_codes(
    state: &AppState,
    user: &User,
    meta: &RequestMeta,
) -> Result<Vec<String>> {
    account::spend_limits(state, user, meta).await?;
    if !user.has_second_factor() {
        return Err(ApiError::Conflict(
            "Recovery codes stand in for a second factor: turn on TOTP or add a passkey first",
        ));
    }
    let (codes, hashes) = new_recovery_codes(state, user);
    let now = now();
    let notice = account::email_to(
        user,
        "New recovery codes",
        format!(
            "A new set of recovery codes was made for your account {}; the old codes no \
             longer work.\n\nIf this was not you, reset your password and contact support.",
            user.username
        ),
    );
    let mut payload = String::new();
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let origin = Origin::of(meta);
    let replaced = state
        .store
        .change_factors(
            user.id,
            &FactorChange::RecoveryReplace { recovery: &hashes },
            now,
            &notices,
            &[origin.event("recovery_codes_replaced", Some(user.id))],
        )
        .await?;
    if !replaced {
        return Err(ApiError::Unauthorized(
            "Not logged in, or the session has expired",
        ));
    }
    state.outbox_wake.notify_one();
    crate::metrics::account_event("recovery_codes_replaced");
    Ok(codes)
}

/// What `POST /reauthenticate` was given.
pub struct Reauthentication {
    pub password: Option<crate::domain::Password>,
    pub method: Option<Method>,
    pub code: Option<String>,
    pub credential: Option<serde_json::Value>,
}

/// `POST /reauthenticate`: refreshes the session's proof. An account with a second factor
/// needs it (a TOTP or recovery code, or a passkey assertion; the password too, if given,
/// is checked); one without needs its password. The session is `aal2` after a second
/// factor.
pub async fn reauthenticate(
    state: &AppState,
    session: &AuthSession,
    given: Reauthentication,
    meta: &RequestMeta,
) -> Result<()> {
    let user = &session.user;
    account::spend_limits(state, user, meta).await?;
    let origin = Origin::of(meta);
    let method = match (given.method, &given.credential) {
        (None, Some(_)) => Some(Method::Passkey),
        (method, _) => method,
    };
    if user.has_second_factor() && method.is_none() {
        return Err(ApiError::invalid(
            "method",
            "this account has a second factor: re-authenticate with it (`method` and \
             `code`, or a passkey `credential`)",
        ));
    }
    if method.is_none() && given.password.is_none() {
        return Err(ApiError::invalid("password", "is required"));
    }
    if let Some(password) = &given.password {
        account::check_password(state, user, password, &origin).await?;
    }
    let mut unverified = false;
    if let Some(method) = method {
        spend_attempt(state, user, meta).await?;
        match method {
            Method::Passkey => {
                let credential = given
                    .credential
                    .ok_or_else(|| ApiError::invalid("credential", "is required for `passkey`"))?;
                // Possession alone is not a second proof on top of the session: an
                // unverified passkey raises it to aal2 only with the password.
                let verified =
                    crate::auth::passkey::reauth_finish(state, user, credential, &origin).await?;
                unverified = !verified && given.password.is_none();
            }
            Method::Totp | Method::RecoveryCode => {
                let code = given
                    .code
                    .ok_or_else(|| ApiError::invalid("code", "is required"))?;
                if !check_code(state, user, method, &code, &origin).await? {
                    return Err(ApiError::InvalidSecondFactor);
                }
            }
        }
        clear_attempts(state, user).await;
    }
    // Never lowered: a proof at aal1 refreshes an aal2 session's proof time.
    let aal = if method.is_some() && !unverified {
        2
    } else {
        1
    };
    if !state
        .store
        .prove_session(&session.token_hash, aal, now())
        .await?
    {
        return Err(ApiError::Unauthorized(
            "Not logged in, or the session has expired",
        ));
    }
    audit::attempt(state, "reauthenticated", Some(user.id), &origin).await;
    tracing::info!(user_id = user.id, aal, "re-authenticated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_read_forgivingly() {
        assert_eq!(
            canonical_recovery_code("ABCDE-FGH1K").as_deref(),
            Some("abcdefgh1k")
        );
        assert_eq!(
            canonical_recovery_code(" abcde fghik ").as_deref(),
            Some("abcdefgh1k")
        );
        assert_eq!(
            canonical_recovery_code("0o0o0-lLiI1").as_deref(),
            Some("0000011111")
        );
        assert_eq!(
            canonical_recovery_code("abcde-fghu1"),
            None,
            "u is not in it"
        );
        assert_eq!(canonical_recovery_code("123456"), None, "a TOTP code");
        assert_eq!(canonical_recovery_code("abcde-fghjkm"), None, "too long");
    }

    #[test]
    fn methods_parse_and_others_name_the_field() {
        assert_eq!(Method::parse("totp").unwrap(), Method::Totp);
        assert_eq!(Method::parse("passkey").unwrap(), Method::Passkey);
        let e = Method::parse("sms").unwrap_err();
        assert!(e.to_string().starts_with("method:"), "{e}");
    }
}
