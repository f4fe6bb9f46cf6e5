//! Reset tokens: what a right code is traded for (`auth::codes`), and the one thing a
//! token does — set a new password.
//!
//! A token is 256 random bits, stored as its SHA-256, bound to the user whose code it was
//! traded for and to the channel that code went out on, and single use: consuming it kills
//! every other code and token of the user and revokes all their sessions, in one
//! transaction. The channel it proves becomes a proven channel of the account
//! (`auth::ownership`); proving the email drops a phone nobody proved.

use tokio::time::Instant;

use crate::audit::Origin;
use crate::auth::account::new_password_for;
use crate::auth::lookup;
use crate::auth::ownership::Proofs;
use crate::auth::token::{looks_like_token, token_hash};
use crate::domain::Identifier;
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::notify::{outbox, sms_policy, Channel, Message};
use crate::state::{now, AppState};
use crate::store::{NewOutbox, User};

pub const NO_TOKEN: ApiError =
    ApiError::Unauthorized("A reset token is required: validate the OTP first");
pub const BAD_TOKEN: ApiError = ApiError::Unauthorized("Invalid or expired reset token");

/// Sets `new_password` on the account `identifier` names, with the reset `token` issued
/// for it. An unknown identifier, a disabled account and a wrong, expired or used token are
/// refused alike, after the same response floor; the new password is checked only once
/// the token is (so a stranger learns nothing from password rules).
pub async fn reset_password(
    state: &AppState,
    identifier: &Identifier,
    token: Option<String>,
    new_password: String,
    meta: &RequestMeta,
) -> Result<()> {
    let token = token.ok_or(NO_TOKEN)?;
    let token = token.trim();
    if !looks_like_token(token) {
        return Err(BAD_TOKEN);
    }
    let hash = token_hash(token);
    limit::spend(
        &*state.limiter,
        &state.settings.limits.reset_per_ip,
        "reset:ip",
        &meta.ip_key,
    )
    .await?;

    let started = Instant::now();
    let now = now();
    let found = lookup::find_enabled(&*state.store, identifier).await?;
    let live = match &found {
        Some(user) => state.store.live_reset_token(user.id, &hash, now).await?,
        None => None,
    };
    let (Some(user), Some(live)) = (found, live) else {
        super::hold_refusal(state, started).await;
        return Err(BAD_TOKEN);
    };
    let password = new_password_for(&user, "new_password", new_password)?;
    let new_hash = state
        .hasher
        .hash(&password)
        .await
        .map_err(ApiError::internal)?;

    // The channel the token's code went out on is now proven; proving the email drops a
    // phone nobody proved (the store does it, in the reset's transaction).
    let proven = match live.channel.as_deref() {
        Some("email") => Some(Channel::Email),
        Some("sms") => Some(Channel::Sms),
        _ => None,
    };
    let proofs = Proofs::from_names(&state.store.proven_channels(user.id).await?);
    let phone_dropped = proven == Some(Channel::Email) && user.phone.is_some() && !proofs.sms;
    let notices = notices(state, &user, proven, phone_dropped).await?;
    let outbox: Vec<NewOutbox<'_>> = notices
        .iter()
        .map(|(channel, payload)| NewOutbox {
            channel: channel.as_str(),
            payload,
            user_id: Some(user.id),
            now,
        })
        .collect();
    let origin = Origin::of(meta);
    let mut events = vec![
        origin.event("password_reset", Some(user.id)),
        origin.event("sessions_revoked", Some(user.id)),
    ];
    if phone_dropped {
        events.push(origin.event("unproven_phone_removed", Some(user.id)));
    }
    if !state
        .store
        .reset_password(
            user.id,
            &hash,
            &new_hash,
            now,
            proven.map(Channel::as_str),
            &outbox,
            &events,
        )
        .await?
    {
        return Err(BAD_TOKEN);
    }
    state.outbox_wake.notify_one();
    tracing::info!(user_id = user.id, "password reset; all sessions revoked");
    Ok(())
}

/// "Your password was changed", sealed for the outbox: to the email always, and by SMS to
/// a phone that stays on the account, within the SMS policy — every address that can
/// still reach the account hears of it.
async fn notices(
    state: &AppState,
    user: &User,
    proven: Option<Channel>,
    phone_dropped: bool,
) -> Result<Vec<(Channel, String)>> {
    let how = match proven {
        Some(Channel::Sms) => "with a code sent to your phone",
        Some(Channel::Email) => "with a code sent to this email address",
        None => "with a one-time code",
    };
    let dropped = if phone_dropped {
        "\n\nThe phone number on the account had never been confirmed, so it was removed: \
         only this email address can recover the account now."
    } else {
        ""
    };
    let email = Message {
        channel: Channel::Email,
        to: user.email.clone(),
        subject: "Your password was changed".into(),
        body: format!(
            "The password of your account {} was just reset {how}, and every session was \
             signed out.{dropped}\n\n\
             If this was not you, recover your account now and contact support.",
            user.username
        ),
    };
    let seal = |message: &Message| outbox::seal(&state.keys, message).map_err(ApiError::internal);
    let mut notices = vec![(Channel::Email, seal(&email)?)];
    let kept_phone = user.phone.as_deref().filter(|_| !phone_dropped);
    if let Some(phone) = kept_phone {
        if sms_policy::take(&state.settings.sms_policy, &*state.limiter, phone)
            .await
            .is_ok()
        {
            let sms = Message {
                channel: Channel::Sms,
                to: phone.to_owned(),
                subject: String::new(),
                body: format!(
                    "The password of your account {} was just reset. If this was not you, \
                     recover your account now.",
                    user.username
                ),
            };
            notices.push((Channel::Sms, seal(&sms)?));
        }
    }
    Ok(notices)
}
