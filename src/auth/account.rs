//! What a signed-in user does to their own account: change the password, move to a new
//! email or phone (confirmed by a code sent to the new one), remove the phone, delete the
//! account.
//!
//! Every change asks for the current password again, so a session left open on a shared
//! computer is not enough to take the account over; a wrong one counts against the
//! account's login limits. A new email or phone that belongs to another account gets the
//! same answer as a free one and no code (that account's owner is told), so these
//! endpoints reveal no accounts. Each change commits with its audit row and the notices
//! that tell every address that could reach the account.

use crate::audit::{self, Origin};
use crate::auth::codes::{self, Outgoing, Purpose};
use crate::auth::token::{new_token, token_hash};
use crate::auth::{login, lookup};
use crate::domain::{
    Email, Identifier, NewPassword, OtpCode, ParseError, Password, Phone, Username,
};
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::notify::{outbox, sms_policy, Channel, Message};
use crate::state::{now, AppState};
use crate::store::{AccountChange, NewOutbox, PasswordChange, StoreError, User};

/// The answer to a session that is gone by the time its change commits.
const SESSION_GONE: ApiError = ApiError::Unauthorized("Not logged in, or the session has expired");

/// The self-service limits, per client IP and per account: every request of this module
/// and of the session list spends one.
pub async fn spend_limits(state: &AppState, user: &User, meta: &RequestMeta) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(
        &*state.limiter,
        &limits.account_per_ip,
        "account:ip",
        &meta.ip_key,
    )
    .await?;
    limit::spend(
        &*state.limiter,
        &limits.account_per_user,
        "account:user",
        &user.id.to_string(),
    )
    .await
}

/// Checks the user's current password, as a login would: it spends the account's login
/// budget (the one `/login` spends without a device cookie) and a wrong one is refused
/// with `InvalidCredentials` after the same floor a failed login waits for.
pub(crate) async fn check_password(
    state: &AppState,
    user: &User,
    password: &Password,
    origin: &Origin,
) -> Result<()> {
    login::spend_account_budget(state, &format!("user:{}", user.id)).await?;
    let (verdict, hold) = state
        .hasher
        .verify_held(password, Some(&user.password_hash))
        .await
        .map_err(ApiError::internal)?;
    if !verdict.ok {
        tracing::info!(user_id = user.id, "current password wrong");
        audit::attempt(state, "password_check_failed", Some(user.id), origin).await;
        hold.wait().await;
        return Err(ApiError::InvalidCredentials);
    }
    Ok(())
}

/// A message sealed for the outbox, for `user_id`'s account (or for nobody's: a notice
/// that must outlive the account).
pub(crate) fn sealed<'a>(
    state: &AppState,
    message: &Message,
    user_id: Option<i64>,
    payload: &'a mut String,
    now: i64,
) -> Result<NewOutbox<'a>> {
    *payload = outbox::seal(&state.keys, message).map_err(ApiError::internal)?;
    Ok(NewOutbox {
        channel: message.channel.as_str(),
        payload,
        user_id,
        now,
    })
}

pub(crate) fn email_to(user: &User, subject: &str, body: String) -> Message {
    Message {
        channel: Channel::Email,
        to: user.email.clone(),
        subject: subject.to_owned(),
        body,
    }
}

/// `j***@example.com`: enough for the owner to recognise an address, not enough to
/// hand it to whoever reads their mail.
pub fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// `+4479******89`: country and the last two digits.
pub fn mask_phone(phone: &str) -> String {
    let n = phone.chars().count();
    phone
        .chars()
        .enumerate()
        .map(|(i, c)| if i < 5 || i + 2 >= n { c } else { '*' })
        .collect()
}

/// `raw` as a new password of `user`'s, under the registration rules (not built from their
/// username, email or phone); a refusal names `field`.
pub fn new_password_for(
    user: &User,
    field: &'static str,
    raw: String,
) -> std::result::Result<Password, ParseError> {
    let username = Username::parse(&user.username).ok();
    let email = Email::parse_lookup(&user.email).ok();
    let phone = user.phone.as_deref().and_then(|p| Phone::parse(p).ok());
    let password = NewPassword::parse(
        field,
        raw,
        username.as_ref(),
        email.as_ref(),
        phone.as_ref(),
    )?;
    Ok(password.into_password())
}

/// `/change-password`: returns the session's new token (the old one stops working).
pub async fn change_password(
    state: &AppState,
    user: &User,
    session_hash: &str,
    current: &Password,
    new_password: String,
    sign_out_others: bool,
    meta: &RequestMeta,
) -> Result<String> {
    spend_limits(state, user, meta).await?;
    let origin = Origin::of(meta);
    check_password(state, user, current, &origin).await?;
    let password = new_password_for(user, "new_password", new_password)?;
    let new_hash = state
        .hasher
        .hash(&password)
        .await
        .map_err(ApiError::internal)?;
    let now = now();
    let token = new_token();
    let others = if sign_out_others {
        " Every other session was signed out."
    } else {
        ""
    };
    let notice = email_to(
        user,
        "Your password was changed",
        format!(
            "The password of your account {} was just changed by a signed-in session.{others}\n\n\
             If this was not you, reset your password now and contact support.",
            user.username
        ),
    );
    let mut payload = String::new();
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let mut events = vec![origin.event("password_changed", Some(user.id))];
    if sign_out_others {
        events.push(origin.event("sessions_revoked", Some(user.id)));
    }
    let changed = state
        .store
        .change_password(
            &PasswordChange {
                user_id: user.id,
                old_hash: &user.password_hash,
                new_hash: &new_hash,
                old_token_hash: session_hash,
                new_token_hash: &token_hash(&token),
                sign_out_others,
                now,
            },
            &notices,
            &events,
        )
        .await?;
    if !changed {
        return Err(SESSION_GONE);
    }
    state.outbox_wake.notify_one();
    tracing::info!(user_id = user.id, sign_out_others, "password changed");
    crate::metrics::account_event("password_changed");
    Ok(token)
}

/// Which address a change is about.
enum Target<'a> {
    Email(&'a Email),
    Phone(&'a Phone),
}

/// `/change-email` and `/change-phone` with a new address: a code to the new address,
/// or, when another account holds it, a notice to that account's email and no code. The
/// answer is the same either way.
async fn start_change(
    state: &AppState,
    user: &User,
    current: &Password,
    target: Target<'_>,
    meta: &RequestMeta,
) -> Result<()> {
    spend_limits(state, user, meta).await?;
    let origin = Origin::of(meta);
    check_password(state, user, current, &origin).await?;
    let (identifier, purpose, channel, address, event) = match &target {
        Target::Email(email) => (
            Identifier::Email((*email).clone()),
            Purpose::ChangeEmail,
            Channel::Email,
            email.as_str(),
            "email_change_requested",
        ),
        Target::Phone(phone) => (
            Identifier::Phone((*phone).clone()),
            Purpose::ChangePhone,
            Channel::Sms,
            phone.as_str(),
            "phone_change_requested",
        ),
    };
    let holder = lookup::find_user(&*state.store, &identifier).await?;
    match holder {
        Some(holder) if holder.id == user.id => {
            let already = match target {
                Target::Email(_) => user.email_verified,
                Target::Phone(_) => user.phone_verified,
            };
            let field = match target {
                Target::Email(_) => "new_email",
                Target::Phone(_) => "new_phone",
            };
            if already {
                return Err(ApiError::invalid(
                    field,
                    "is already this account's, and verified",
                ));
            }
            // The account's own, unproven address: the code proves it.
        }
        Some(holder) => {
            tracing::info!(
                user_id = user.id,
                "change to an address another account holds"
            );
            let notice = email_to(
                &holder,
                "Someone tried to use your address",
                format!(
                    "Someone signed in to another account just tried to move it to {}, which \
                     belongs to your account {}. Nothing was changed, and they were not told \
                     that the address is taken.\n\nIf this was you, sign in to that account \
                     instead. Otherwise no action is needed.",
                    match target {
                        Target::Email(e) => mask_email(e.as_str()),
                        Target::Phone(p) => mask_phone(p.as_str()),
                    },
                    holder.username
                ),
            );
            codes::notify(state, &notice, Some(holder.id)).await?;
            return Ok(());
        }
        None => {}
    }
    if channel == Channel::Sms
        && sms_policy::take(&state.settings.sms_policy, &*state.limiter, address)
            .await
            .is_err()
    {
        tracing::info!(user_id = user.id, "change code not sent: SMS policy");
        return Ok(());
    }
    let explain = format!(
        "Enter it to move your account {} to this {}. Until then nothing changes. If you \
         did not ask for this, ignore this message.",
        user.username,
        if channel == Channel::Sms {
            "phone number"
        } else {
            "email address"
        }
    );
    codes::send(
        state,
        &Outgoing {
            user_id: user.id,
            purpose,
            channel,
            to: address,
            address: Some(address),
            device: None,
            subject: if channel == Channel::Sms {
                "Confirm your new phone number"
            } else {
                "Confirm your new email address"
            },
            explain: &explain,
            event: origin.event(event, Some(user.id)),
        },
    )
    .await
}

/// `/change-email`.
pub async fn change_email(
    state: &AppState,
    user: &User,
    current: &Password,
    new_email: &Email,
    meta: &RequestMeta,
) -> Result<()> {
    start_change(state, user, current, Target::Email(new_email), meta).await
}

/// `/change-phone`: a new phone gets a code; `None` removes the phone at once.
/// Returns whether the phone was removed.
pub async fn change_phone(
    state: &AppState,
    user: &User,
    current: &Password,
    new_phone: Option<&Phone>,
    meta: &RequestMeta,
) -> Result<bool> {
    let Some(phone) = new_phone else {
        spend_limits(state, user, meta).await?;
        let origin = Origin::of(meta);
        check_password(state, user, current, &origin).await?;
        let now = now();
        let notice = email_to(
            user,
            "Your phone number was removed",
            format!(
                "The phone number was removed from your account {}: it can no longer sign \
                 in or recover the account.\n\nIf this was not you, reset your password now \
                 and contact support.",
                user.username
            ),
        );
        let mut payload = String::new();
        let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
        let events = [origin.event("phone_removed", Some(user.id))];
        let change = AccountChange::Phone { phone: None };
        if !state
            .store
            .apply_change(user.id, None, &change, now, &notices, &events)
            .await?
        {
            return Err(SESSION_GONE);
        }
        state.outbox_wake.notify_one();
        crate::metrics::account_event("phone_removed");
        return Ok(true);
    };
    start_change(state, user, current, Target::Phone(phone), meta).await?;
    Ok(false)
}

/// `/confirm-email-change` and `/confirm-phone-change`: the code sent to the new address
/// makes the change. Every refusal is `InvalidCode`, held to the response floor.
pub async fn confirm_change(
    state: &AppState,
    user: &User,
    channel: Channel,
    otp: &OtpCode,
    meta: &RequestMeta,
) -> Result<()> {
    spend_limits(state, user, meta).await?;
    let started = tokio::time::Instant::now();
    let origin = Origin::of(meta);
    let result = confirm(state, user, channel, otp, &origin).await;
    match result {
        Err(ApiError::InvalidOtp | ApiError::InvalidCode) => {
            super::hold_refusal(state, started).await;
            Err(ApiError::InvalidCode)
        }
        other => other,
    }
}

async fn confirm(
    state: &AppState,
    user: &User,
    channel: Channel,
    otp: &OtpCode,
    origin: &Origin,
) -> Result<()> {
    let now = now();
    let purpose = match channel {
        Channel::Email => Purpose::ChangeEmail,
        Channel::Sms => Purpose::ChangePhone,
    };
    let code = state
        .store
        .live_code(user.id, purpose.as_str(), now)
        .await?
        .ok_or(ApiError::InvalidCode)?;
    codes::check_guess(state, user, &code, false, otp, now, origin).await?;
    let address = code.address.as_deref().unwrap_or_default();
    let mut payload = String::new();
    let new_email;
    let new_phone;
    let (change, notice, event) = match channel {
        Channel::Email => {
            new_email = Email::parse(address).map_err(|_| ApiError::InvalidCode)?;
            let notice = email_to(
                user,
                "Your email address was changed",
                format!(
                    "The email address of your account {} was just changed to {}. This \
                     address will get no more messages about the account.\n\nIf this was not \
                     you, contact support at once: whoever did it knows your password.",
                    user.username,
                    mask_email(new_email.as_str())
                ),
            );
            let change = AccountChange::Email {
                email: new_email.as_str(),
                key: new_email.key(),
            };
            (change, notice, "email_changed")
        }
        Channel::Sms => {
            new_phone = Phone::parse(address).map_err(|_| ApiError::InvalidCode)?;
            let notice = email_to(
                user,
                "Your phone number was changed",
                format!(
                    "The phone number of your account {} was just changed to {}.\n\nIf this \
                     was not you, reset your password now and contact support.",
                    user.username,
                    mask_phone(new_phone.as_str())
                ),
            );
            let change = AccountChange::Phone {
                phone: Some(new_phone.as_str()),
            };
            (change, notice, "phone_changed")
        }
    };
    // The old email hears of it; the notice is the account's, but goes to the old
    // address, which the message names.
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let events = [origin.event(event, Some(user.id))];
    let applied = state
        .store
        .apply_change(user.id, Some(code.id), &change, now, &notices, &events)
        .await
        .map_err(|e| match e {
            // Taken by another account since the code went out.
            StoreError::Conflict => ApiError::InvalidCode,
            other => other.into(),
        })?;
    if !applied {
        return Err(ApiError::InvalidCode);
    }
    state.outbox_wake.notify_one();
    tracing::info!(user_id = user.id, event, "address changed");
    crate::metrics::account_event(event);
    Ok(())
}

/// The goodbye notice of a deleted account, to its email.
pub fn goodbye(user: &User) -> Message {
    email_to(
        user,
        "Your account was deleted",
        format!(
            "Your account {} was deleted, with everything it held. Goodbye.\n\nIf this was \
             not you, contact support.",
            user.username
        ),
    )
}

/// `DELETE /me`: the account and everything of it goes; a goodbye notice still goes out.
pub async fn delete(
    state: &AppState,
    user: &User,
    current: &Password,
    meta: &RequestMeta,
) -> Result<()> {
    spend_limits(state, user, meta).await?;
    let origin = Origin::of(meta);
    check_password(state, user, current, &origin).await?;
    let now = now();
    let notice = goodbye(user);
    let mut payload = String::new();
    // For nobody's account: deleting this one must not drop it.
    let notices = [sealed(state, &notice, None, &mut payload, now)?];
    // The trail keeps the user id but not where the request came from.
    let event = crate::store::AuditEvent {
        user_id: Some(user.id),
        event: "account_deleted",
        ip: None,
        user_agent: None,
        at: now,
    };
    if !state.store.delete_user(user.id, &notices, &[event]).await? {
        return Err(SESSION_GONE);
    }
    state.outbox_wake.notify_one();
    tracing::info!(user_id = user.id, "account deleted");
    crate::metrics::account_event("account_deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked_but_recognisable() {
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
        assert_eq!(mask_email("no-at-sign"), "***");
        assert_eq!(mask_phone("+447911123456"), "+4479******56");
    }
}
