//! One-time codes: the machinery every code shares (a code for a purpose, sent through
//! the outbox; a guess that takes a try before it is compared), and the recovery codes
//! of the seed's API: asking for one, and trading a right one for a reset token.
//!
//! Every code has a purpose (`Purpose`) and is only ever looked up for it: a recovery code
//! verifies nothing, a verification code resets nothing.
//!
//! Asking answers the same whether or not the account exists: what only an existing
//! account costs (the hourly cap, the channel choice, the code's transaction) runs after
//! the answer, in the background. A code is stored only as a keyed hash bound to its
//! user; each guess first takes one of the code's few tries (an atomic conditional
//! UPDATE) and only then is compared; a right code is redeemed exactly once, for a reset
//! token (`auth::reset`) bound to the same user and to the channel the code went out on.

use std::time::Duration;

use tokio::time::Instant;

use crate::audit::{self, Origin};
use crate::auth::device::{self, Device};
use crate::auth::lookup;
use crate::auth::ownership::{recovery_channels, Proofs};
use crate::auth::token::{new_code, new_token, token_hash};
use crate::config::Rule;
use crate::domain::{Identifier, OtpCode};
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::notify::{outbox, sms_policy, Channel, Message};
use crate::state::{now, AppState};
use crate::store::{AuditEvent, LiveCode, NewCode, NewOutbox, NewResetToken, User, UserId};

/// What a code is for. Each purpose has at most one live code per user: a new one kills
/// the older ones of its purpose, and only of its purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Recovery (`/forgot-password`, `/validate-otp`).
    Reset,
    /// Proving the account's email (`/verify`).
    VerifyEmail,
    /// Proving the account's phone (`/verify`).
    VerifyPhone,
    /// Moving to the new email the code was sent to (`/confirm-email-change`).
    ChangeEmail,
    /// Moving to the new phone the code was sent to (`/confirm-phone-change`).
    ChangePhone,
    /// Signing in by a code sent to the email (`/login/code`, CODE_LOGIN).
    LoginEmail,
    /// Signing in by a code sent by SMS.
    LoginSms,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Reset => "reset",
            Purpose::VerifyEmail => "verify_email",
            Purpose::VerifyPhone => "verify_phone",
            Purpose::ChangeEmail => "change_email",
            Purpose::ChangePhone => "change_phone",
            Purpose::LoginEmail => "login_email",
            Purpose::LoginSms => "login_sms",
        }
    }
}

/// A code to send: who it is for, what for, where, and the message around it.
pub struct Outgoing<'a> {
    pub user_id: UserId,
    pub purpose: Purpose,
    pub channel: Channel,
    /// The address the message goes to.
    pub to: &'a str,
    /// The new email or phone a change code proves (`NewCode::address`).
    pub address: Option<&'a str>,
    /// The device that asked (recovery codes only, `auth::device`).
    pub device: Option<&'a str>,
    pub subject: &'a str,
    /// What the code does, completing "Your one-time code is 123456. It expires in 10
    /// minutes." and saying what to do if the reader did not ask for it.
    pub explain: &'a str,
    /// The audit row of the code's issue.
    pub event: AuditEvent<'a>,
}

/// Stores a new code as its keyed hash, with the message that carries it and its audit
/// row, in one transaction that kills the user's older codes of the same purpose, and
/// wakes the outbox.
pub async fn send(state: &AppState, out: &Outgoing<'_>) -> Result<()> {
    let code = new_code();
    let ttl = state.settings.recovery.otp_ttl;
    let minutes = ttl.as_secs().div_ceil(60);
    let message = Message {
        channel: out.channel,
        to: out.to.to_owned(),
        subject: out.subject.to_owned(),
        body: format!(
            "Your one-time code is {code}. It expires in {minutes} minutes.\n\n{}",
            out.explain
        ),
    };
    let now = now();
    let sealed = outbox::seal(&state.keys, &message).map_err(ApiError::internal)?;
    state
        .store
        .issue_code(
            &NewCode {
                user_id: out.user_id,
                code_hash: &state.keys.code_hash(out.user_id, &code),
                purpose: out.purpose.as_str(),
                address: out.address,
                channel: out.channel.as_str(),
                device: out.device,
                now,
                expires_at: now + ttl.as_secs() as i64,
            },
            &NewOutbox {
                channel: out.channel.as_str(),
                payload: &sealed,
                user_id: Some(out.user_id),
                now,
            },
            std::slice::from_ref(&out.event),
        )
        .await?;
    state.outbox_wake.notify_one();
    tracing::info!(
        user_id = out.user_id,
        purpose = out.purpose.as_str(),
        channel = out.channel.as_str(),
        "code issued"
    );
    Ok(())
}

/// Queues one message of its own (a notice), sealed, and wakes the outbox; `user_id` is
/// whose it is (deleting that account drops it while undelivered).
pub async fn notify(state: &AppState, message: &Message, user_id: Option<UserId>) -> Result<()> {
    let sealed = outbox::seal(&state.keys, message).map_err(ApiError::internal)?;
    state
        .store
        .queue_message(&NewOutbox {
            channel: message.channel.as_str(),
            payload: &sealed,
            user_id,
            now: now(),
        })
        .await?;
    state.outbox_wake.notify_one();
    Ok(())
}

/// Whether `user` may be sent another code now: the hourly cap of codes per account
/// (RATE_CODES_PER_ACCOUNT), under `cap` (the account's, or one of its devices').
pub async fn under_cap(state: &AppState, cap: &str) -> bool {
    state
        .limiter
        .check(&state.settings.limits.codes_per_account, cap)
        .await
        .is_ok()
}

/// At most one "someone is guessing your code" notice per account a day.
const GUESSING_NOTICE: Rule = Rule {
    count: 1,
    period: Duration::from_secs(24 * 3600),
};

/// Asks for a code for whoever `identifier` names, on `channel` (by default SMS for a
/// phone number, email otherwise). Errors only for the client's own limits; whether a
/// code goes out, and where, is decided after the answer (see the module header).
/// `device_cookie` is the request's device cookie, if any (`auth::device`).
pub async fn request(
    state: &AppState,
    identifier: &Identifier,
    channel: Option<Channel>,
    device_cookie: Option<String>,
    meta: &RequestMeta,
) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.forgot_per_ip,
        "forgot:ip",
        &meta.ip_key,
    )
    .await?;

    // Every request takes a slot, account or not, so a full queue delays both alike.
    let slot = state.background_slot().await?;
    let user = lookup::find_enabled(&*state.store, identifier).await?;
    let device = user
        .as_ref()
        .and_then(|u| device::of_user(&state.keys, device_cookie, u.id));
    // From the owner's device, the device's budget: an attacker's requests for the same
    // identifier do not stop the owner's.
    let budget = match &device {
        Some(d) => format!("device:{}", d.id),
        None => identifier.key().to_owned(),
    };
    limit::spend(
        &*state.limiter,
        &limits.forgot_per_account,
        "forgot:account",
        &budget,
    )
    .await?;
    if let Some(user) = user {
        let job_state = state.clone();
        let wanted = channel.unwrap_or(match identifier {
            Identifier::Phone(_) => Channel::Sms,
            _ => Channel::Email,
        });
        let origin = Origin::of(meta);
        state.run_in(slot, async move {
            let device = device.as_ref();
            if let Err(e) = issue_if_allowed(&job_state, &user, wanted, device, &origin).await {
                tracing::warn!(user_id = user.id, error = %e, "recovery code not issued");
            }
        });
    }
    event("requested");
    Ok(())
}

/// Issues a code to an existing, enabled account, on the best channel the ownership rule
/// and the SMS policy allow; silently nothing past the hourly cap (the device's own cap
/// when asked from one of the account's devices, so that an attacker's requests cannot
/// use up the owner's).
async fn issue_if_allowed(
    state: &AppState,
    user: &User,
    wanted: Channel,
    device: Option<&Device>,
    origin: &Origin,
) -> Result<()> {
    let cap = match device {
        Some(d) => format!("codes:device:{}", d.id),
        None => format!("codes:user:{}", user.id),
    };
    if !under_cap(state, &cap).await {
        tracing::info!(user_id = user.id, "code not issued: hourly cap reached");
        return Ok(());
    }
    let proofs = Proofs::from_names(&state.store.proven_channels(user.id).await?);
    let mut chosen = None;
    for channel in recovery_channels(wanted, user.phone.is_some(), proofs) {
        if channel == Channel::Sms {
            let phone = user.phone.as_deref().unwrap_or_default();
            if sms_policy::take(&state.settings.sms_policy, &*state.limiter, phone)
                .await
                .is_err()
            {
                continue;
            }
        }
        chosen = Some(channel);
        break;
    }
    let Some(channel) = chosen else {
        tracing::info!(
            user_id = user.id,
            "code not issued: no channel may carry it"
        );
        return Ok(());
    };
    let to = match channel {
        Channel::Sms => user.phone.as_deref().unwrap_or_default(),
        Channel::Email => &user.email,
    };
    send(
        state,
        &Outgoing {
            user_id: user.id,
            purpose: Purpose::Reset,
            channel,
            to,
            address: None,
            device: device.map(|d| d.id.as_str()),
            subject: "Your password reset code",
            explain: "If you did not ask to reset your password, ignore this message: \
                      your password has not been changed.",
            event: origin.event("code_requested", Some(user.id)),
        },
    )
    .await
}

/// Counts a code event. `requested` counts every accepted request and `rejected` every
/// refused guess, account or not, so the counters cannot tell which identifiers exist.
fn event(event: &'static str) {
    metrics::counter!("gatehouse_otp_codes_total", "event" => event).increment(1);
}

/// A reset token just issued for a right code.
pub struct Redeemed {
    /// The token itself, for the client (it is stored only as its hash).
    pub reset_token: String,
    pub user_id: UserId,
    /// The guess came from a browser that is not yet a device of the account: having the
    /// code proves control of one of its addresses, so it becomes one.
    pub new_device: bool,
}

/// Checks a guess at the live code of whoever `identifier` names and, when right, trades
/// the code for a reset token. Every refusal is `InvalidOtp`, whatever its reason, held to
/// the same response floor.
pub async fn validate(
    state: &AppState,
    identifier: &Identifier,
    otp: &OtpCode,
    device_cookie: Option<String>,
    meta: &RequestMeta,
) -> Result<Redeemed> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.validate_per_ip,
        "validate:ip",
        &meta.ip_key,
    )
    .await?;

    let started = Instant::now();
    let now = now();
    let found =
        lookup::find_enabled_with_live_code(&*state.store, identifier, Purpose::Reset, now).await?;
    let device = found
        .as_ref()
        .and_then(|(u, _)| device::of_user(&state.keys, device_cookie, u.id));
    // From the owner's device, the device's budget; from anywhere else, the identifier's.
    let budget = match &device {
        Some(d) => format!("device:{}", d.id),
        None => identifier.key().to_owned(),
    };
    limit::spend(
        &*state.limiter,
        &limits.validate_per_account,
        "validate:account",
        &budget,
    )
    .await?;

    let origin = Origin::of(meta);
    match redeem(state, found, device.as_ref(), otp, now, &origin).await {
        Ok((reset_token, user_id)) => {
            event("validated");
            Ok(Redeemed {
                reset_token,
                user_id,
                new_device: device.is_none(),
            })
        }
        Err(ApiError::InvalidOtp) => {
            event("rejected");
            super::hold_refusal(state, started).await;
            Err(ApiError::InvalidOtp)
        }
        Err(e) => Err(e),
    }
}

/// Checks a guess and, when right, trades the code for a new reset token (its secret and
/// its user). Every refusal is `InvalidOtp`, whatever its reason.
///
/// A guess from the device the code was sent to takes one of the tries the code keeps
/// for that device and counts against the device's budget. Any other guess takes one of
/// the code's shared tries and counts against the account's budget of compared guesses
/// across all its codes (RATE_CODE_FAILURES_PER_ACCOUNT): that, not the tries of one code,
/// is what bounds an online guesser over a year. The owner hears of it when a code dies of
/// wrong guesses or the budget runs out.
async fn redeem(
    state: &AppState,
    found: Option<(User, Option<LiveCode>)>,
    device: Option<&Device>,
    otp: &OtpCode,
    now: i64,
    origin: &Origin,
) -> Result<(String, UserId)> {
    let (user, code) = found.ok_or(ApiError::InvalidOtp)?;
    // No live code: it expired, was used or cancelled, or none was asked for.
    let code = code.ok_or(ApiError::InvalidOtp)?;
    let max = state.settings.recovery.otp_max_attempts;
    let budget = &state.settings.limits.code_guesses_per_account;
    let on_device = match device {
        Some(d) => {
            state
                .limiter
                .check(budget, &format!("guesses:device:{}", d.id))
                .await
                .map_err(|_| ApiError::InvalidOtp)?;
            state
                .store
                .claim_device_attempt(code.id, &d.id, now, max)
                .await?
        }
        None => false,
    };
    check_guess(state, &user, &code, on_device, otp, now, origin).await?;
    let token = new_token();
    let ttl = state.settings.recovery.reset_token_ttl;
    let redeemed = state
        .store
        .redeem_code(
            code.id,
            &NewResetToken {
                user_id: user.id,
                token_hash: &token_hash(&token),
                now,
                expires_at: now + ttl.as_secs() as i64,
            },
            &[origin.event("code_validated", Some(user.id))],
        )
        .await?;
    if !redeemed {
        return Err(ApiError::InvalidOtp);
    }
    tracing::info!(user_id = user.id, "recovery code validated");
    Ok((token, user.id))
}

/// Compares a guess at `user`'s live `code`, after taking one of its shared tries
/// (unless `on_device`: the caller took one of the device's) within the account's budget
/// of compared guesses across all its codes, whatever their purpose. Every refusal is
/// `InvalidOtp`; a wrong guess is audited, and the owner hears when a code dies of them.
pub async fn check_guess(
    state: &AppState,
    user: &User,
    code: &LiveCode,
    on_device: bool,
    otp: &OtpCode,
    now: i64,
    origin: &Origin,
) -> Result<()> {
    let max = state.settings.recovery.otp_max_attempts;
    let budget = &state.settings.limits.code_guesses_per_account;
    if !on_device {
        // A dead code costs one read (the user and their code together) and no write:
        // the cheap path for guess floods. The conditional UPDATE below still decides,
        // atomically, for codes with tries left.
        if code.attempts >= max as i32 {
            return Err(ApiError::InvalidOtp);
        }
        if state
            .limiter
            .check(budget, &format!("guesses:user:{}", user.id))
            .await
            .is_err()
        {
            tracing::warn!(
                user_id = user.id,
                "code guess refused: the account's budget of guesses is spent"
            );
            warn_owner(state, user).await;
            return Err(ApiError::InvalidOtp);
        }
        if !state.store.claim_attempt(code.id, now, max).await? {
            return Err(ApiError::InvalidOtp);
        }
    }
    if !state
        .keys
        .code_matches(user.id, otp.expose(), &code.code_hash)
    {
        tracing::info!(user_id = user.id, "wrong code");
        audit::attempt(state, "code_failed", Some(user.id), origin).await;
        if !on_device && code.attempts + 1 >= max as i32 {
            warn_owner(state, user).await;
        }
        return Err(ApiError::InvalidOtp);
    }
    Ok(())
}

/// Tells the owner (once a day at most) that someone is guessing their recovery codes.
async fn warn_owner(state: &AppState, user: &User) {
    if state
        .limiter
        .check(&GUESSING_NOTICE, &format!("notice:guessing:{}", user.id))
        .await
        .is_err()
    {
        return;
    }
    let notice = Message {
        channel: Channel::Email,
        to: user.email.clone(),
        subject: "Someone is trying to guess your one-time code".into(),
        body: format!(
            "Someone is asking for one-time codes for your account {} and guessing \
             them wrong. Your password has not been changed, and further guesses are \
             being refused.\n\n\
             If it is you, ask for a new code from a browser where you have signed in \
             before: its guesses are not affected. If it is not you, nothing is needed; \
             consider a longer password.",
            user.username
        ),
    };
    if let Err(e) = notify(state, &notice, Some(user.id)).await {
        tracing::warn!(user_id = user.id, error = %e, "guessing notice not queued");
    }
}
