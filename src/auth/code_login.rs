//! Signing in by a one-time code instead of a password (CODE_LOGIN): a code sent to the
//! account's email, or by SMS to its phone, typed back. The identifier may be the email,
//! the phone or the username.
//!
//! Asking answers the same whether or not the account exists (the code goes out after
//! the answer, in the background); a code goes only to an address the ownership rule lets
//! into the account (`auth::ownership`: an unproven address never opens an account whose
//! other address is proven); every guess takes one of the code's tries and one of the
//! account's compared guesses before it is compared, and every refusal is the same 400,
//! held to RESPONSE_FLOOR. A right code proves the address it went to, and signs in at
//! `aal1`; an account with a second factor still needs it (an `mfa_token`, as after a
//! password).

use tokio::time::Instant;

use crate::audit::Origin;
use crate::auth::codes::{self, Outgoing, Purpose};
use crate::auth::login::{self, FirstFactor, Outcome};
use crate::auth::lookup;
use crate::auth::ownership::Proofs;
use crate::auth::verification::channel_for;
use crate::domain::{Identifier, OtpCode};
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::notify::{sms_policy, Channel};
use crate::state::{now, AppState};
use crate::store::{AccountChange, User};

fn purpose(channel: Channel) -> Purpose {
    match channel {
        Channel::Email => Purpose::LoginEmail,
        Channel::Sms => Purpose::LoginSms,
    }
}

/// `POST /login/code/request`: a login code for the account `identifier` names, on
/// `channel` (by default the identifier's: SMS for a phone, else email). Errors only for
/// the client's own limits.
pub async fn request(
    state: &AppState,
    identifier: &Identifier,
    channel: Option<Channel>,
    meta: &RequestMeta,
) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.login_code_per_ip,
        "login-code:ip",
        &meta.ip_key,
    )
    .await?;
    // Every request takes a slot, account or not, so a full queue delays both alike.
    let slot = state.background_slot().await?;
    let user = lookup::find_enabled(&*state.store, identifier).await?;
    limit::spend(
        &*state.limiter,
        &limits.login_code_per_account,
        "login-code:account",
        identifier.key(),
    )
    .await?;
    if let Some(user) = user {
        let channel = channel_for(identifier, channel);
        let origin = Origin::of(meta);
        let job_state = state.clone();
        state.run_in(slot, async move {
            if let Err(e) = send(&job_state, &user, channel, &origin).await {
                tracing::warn!(user_id = user.id, error = %e, "login code not sent");
            }
        });
    }
    Ok(())
}

/// A login code to `user` on `channel`, unless there is no such address, the ownership
/// rule keeps it out, the account's hourly cap of codes is reached or the SMS policy
/// refuses the number: then silently nothing.
async fn send(state: &AppState, user: &User, channel: Channel, origin: &Origin) -> Result<()> {
    let to = match channel {
        Channel::Email => user.email.as_str(),
        Channel::Sms => match &user.phone {
            Some(phone) => phone.as_str(),
            None => return Ok(()),
        },
    };
    let proofs = Proofs {
        email: user.email_verified,
        sms: user.phone_verified,
    };
    if !proofs.may_recover_through(channel) {
        tracing::info!(user_id = user.id, "login code not sent: address not proven");
        return Ok(());
    }
    if !codes::under_cap(state, &format!("codes:user:{}", user.id)).await {
        return Ok(());
    }
    if channel == Channel::Sms
        && sms_policy::take(&state.settings.sms_policy, &*state.limiter, to)
            .await
            .is_err()
    {
        tracing::info!(user_id = user.id, "login code not sent: SMS policy");
        return Ok(());
    }
    let explain = format!(
        "Enter it to sign in to your account {}. If you did not ask for it, ignore this \
         message: nobody can sign in without it.",
        user.username
    );
    codes::send(
        state,
        &Outgoing {
            user_id: user.id,
            purpose: purpose(channel),
            channel,
            to,
            address: None,
            device: None,
            subject: "Your sign-in code",
            explain: &explain,
            event: origin.event("login_code_requested", Some(user.id)),
        },
    )
    .await
}

/// `POST /login/code`: a guess at the login code of the account `identifier` names (sent
/// on `channel`, by default the identifier's). Right: a session, or the second-factor
/// step. Every refusal is `InvalidCode`, held to the response floor.
pub async fn login(
    state: &AppState,
    identifier: &Identifier,
    otp: &OtpCode,
    channel: Option<Channel>,
    meta: &RequestMeta,
) -> Result<Outcome> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.login_code_per_ip,
        "login-code:ip",
        &meta.ip_key,
    )
    .await?;
    let started = Instant::now();
    let now = now();
    let channel = channel_for(identifier, channel);
    let found =
        lookup::find_enabled_with_live_code(&*state.store, identifier, purpose(channel), now)
            .await?;
    limit::spend(
        &*state.limiter,
        &limits.validate_per_account,
        "login-code:guess",
        identifier.key(),
    )
    .await?;
    let origin = Origin::of(meta);
    let proved = async {
        let (user, code) = found.ok_or(ApiError::InvalidCode)?;
        let code = code.ok_or(ApiError::InvalidCode)?;
        codes::check_guess(state, &user, &code, false, otp, now, &origin).await?;
        // The code is used up, and proves the address it went to, with the event.
        let change = AccountChange::Prove {
            channel: channel.as_str(),
        };
        let events = [origin.event("login_code_used", Some(user.id))];
        if !state
            .store
            .apply_change(user.id, Some(code.id), &change, now, &[], &events)
            .await?
        {
            return Err(ApiError::InvalidCode);
        }
        Ok(user)
    };
    let user = match proved.await {
        Ok(user) => user,
        Err(ApiError::InvalidOtp | ApiError::InvalidCode) => {
            super::hold_refusal(state, started).await;
            return Err(ApiError::InvalidCode);
        }
        Err(e) => return Err(e),
    };
    tracing::info!(user_id = user.id, "login code right");
    if user.has_second_factor() {
        return login::second_factor_needed(state, &user, FirstFactor::Code, &origin).await;
    }
    let opened = login::open(state, &user, 1, None, meta, true).await?;
    Ok(Outcome::Opened(opened))
}
