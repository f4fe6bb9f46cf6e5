//! Proving an email address or a phone number: a code sent to it, typed back.
//!
//! A code goes out on registration (to the email, and by SMS to the phone if there is
//! one), on `/send-verification`, and on a login refused under REQUIRE_VERIFIED_EMAIL.
//! Asking answers the same whether or not the account exists or is verified already:
//! what only an existing, unverified account costs runs after the answer, in the
//! background. A right code records the proof (`proven_channels`) of the address the
//! account has now; changing an address kills the codes sent to the old one, so that is
//! always the address the code went to. A proven address is what the ownership rule
//! (`auth::ownership`) counts: an unproven one is never a way into an account whose other
//! channel is proven.

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::audit::Origin;
use crate::auth::codes::{self, Outgoing, Purpose};
use crate::auth::lookup;
use crate::domain::{Identifier, OtpCode};
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::notify::{sms_policy, Channel};
use crate::state::{now, AppState};
use crate::store::{AccountChange, User};

/// The channel a verification is about: asked for, or by the identifier's kind.
pub fn channel_for(identifier: &Identifier, asked: Option<Channel>) -> Channel {
    asked.unwrap_or(match identifier {
        Identifier::Phone(_) => Channel::Sms,
        _ => Channel::Email,
    })
}

fn purpose(channel: Channel) -> Purpose {
    match channel {
        Channel::Email => Purpose::VerifyEmail,
        Channel::Sms => Purpose::VerifyPhone,
    }
}

/// `/send-verification`: a code for the account `identifier` names, on `channel`.
/// Errors only for the client's own limits.
pub async fn request(
    state: &AppState,
    identifier: &Identifier,
    channel: Option<Channel>,
    meta: &RequestMeta,
) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.send_verification_per_ip,
        "send-verification:ip",
        &meta.ip_key,
    )
    .await?;
    // Every request takes a slot, account or not, so a full queue delays both alike.
    let slot = state.background_slot().await?;
    let user = lookup::find_enabled(&*state.store, identifier).await?;
    limit::spend(
        &*state.limiter,
        &limits.send_verification_per_account,
        "send-verification:account",
        identifier.key(),
    )
    .await?;
    if let Some(user) = user {
        let channel = channel_for(identifier, channel);
        send_in(state, slot, user, vec![channel], Origin::of(meta));
    }
    Ok(())
}

/// Sends a verification code on each of `channels` to `user`, after the answer.
pub async fn send_later(
    state: &AppState,
    user: User,
    channels: Vec<Channel>,
    origin: Origin,
) -> Result<()> {
    let slot = state.background_slot().await?;
    send_in(state, slot, user, channels, origin);
    Ok(())
}

/// `send_later` in a slot the caller took.
fn send_in(
    state: &AppState,
    slot: OwnedSemaphorePermit,
    user: User,
    channels: Vec<Channel>,
    origin: Origin,
) {
    let job_state = state.clone();
    state.run_in(slot, async move {
        for channel in channels {
            if let Err(e) = send(&job_state, &user, channel, &origin).await {
                tracing::warn!(user_id = user.id, error = %e, "verification code not sent");
            }
        }
    });
}

/// A verification code to `user` on `channel`, unless the address is proven already,
/// there is none (no phone), the account's hourly cap of codes is reached or the SMS
/// policy refuses the number: then silently nothing.
async fn send(state: &AppState, user: &User, channel: Channel, origin: &Origin) -> Result<()> {
    let (to, proven) = match channel {
        Channel::Email => (user.email.as_str(), user.email_verified),
        Channel::Sms => match &user.phone {
            Some(phone) => (phone.as_str(), user.phone_verified),
            None => return Ok(()),
        },
    };
    if proven || !codes::under_cap(state, &format!("codes:verify:{}", user.id)).await {
        return Ok(());
    }
    if channel == Channel::Sms
        && sms_policy::take(&state.settings.sms_policy, &*state.limiter, to)
            .await
            .is_err()
    {
        tracing::info!(user_id = user.id, "verification code not sent: SMS policy");
        return Ok(());
    }
    let (subject, what) = match channel {
        Channel::Email => ("Verify your email address", "this email address"),
        Channel::Sms => ("Verify your phone number", "this phone number"),
    };
    let explain = format!(
        "Enter it to confirm that {what} belongs to your account {}. If you did not sign \
         up or ask for this, ignore this message.",
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
            subject,
            explain: &explain,
            event: origin.event("verification_requested", Some(user.id)),
        },
    )
    .await
}

/// `/verify`: a guess at the verification code of the account `identifier` names, for
/// `channel`. Right: the address is proven. Every refusal is `InvalidCode`, held to the
/// response floor.
pub async fn verify(
    state: &AppState,
    identifier: &Identifier,
    otp: &OtpCode,
    channel: Option<Channel>,
    meta: &RequestMeta,
) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.verify_per_ip,
        "verify:ip",
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
        &limits.verify_per_account,
        "verify:account",
        identifier.key(),
    )
    .await?;
    let origin = Origin::of(meta);
    let proved = async {
        let (user, code) = found.ok_or(ApiError::InvalidCode)?;
        let code = code.ok_or(ApiError::InvalidCode)?;
        codes::check_guess(state, &user, &code, false, otp, now, &origin).await?;
        let event = match channel {
            Channel::Email => "email_verified",
            Channel::Sms => "phone_verified",
        };
        let change = AccountChange::Prove {
            channel: channel.as_str(),
        };
        let events = [origin.event(event, Some(user.id))];
        if !state
            .store
            .apply_change(user.id, Some(code.id), &change, now, &[], &events)
            .await?
        {
            return Err(ApiError::InvalidCode);
        }
        tracing::info!(user_id = user.id, event, "address verified");
        crate::metrics::account_event(event);
        Ok(())
    };
    match proved.await {
        Ok(()) => Ok(()),
        Err(ApiError::InvalidOtp | ApiError::InvalidCode) => {
            super::hold_refusal(state, started).await;
            Err(ApiError::InvalidCode)
        }
        Err(e) => Err(e),
    }
}
