//! Password recovery, the seed's three steps done safely:
//! `POST /forgot-password` queues a one-time code, `POST /validate-otp` trades a right
//! code for a single-use reset token, `POST /reset-password` needs that token.
//!
//! `/forgot-password` answers the same whether or not the account exists; the code goes
//! out through the outbox, never inline. Codes are stored only as keyed hashes, each
//! guess first takes one of the code's few tries (an atomic conditional UPDATE) and only
//! then is compared, and a right code is redeemed exactly once.

use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::HeaderMap;
use axum::response::{AppendHeaders, IntoResponse};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, Unavailable};
use super::{audit, limit, MessageBody};
use crate::auth::device::{self, Device};
use crate::auth::lookup;
use crate::auth::ownership::{recovery_channels, Proofs};
use crate::auth::session::{cookie, set_cookie, RESET_COOKIE};
use crate::auth::token::{looks_like_token, new_code, new_token, token_hash};
use crate::config::Rule;
use crate::domain::{Email, Identifier, NewPassword, OtpCode, ParseError, Phone, Username};
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::{ApiJson, RequestMeta};
use crate::notify::sms_policy;
use crate::notify::{Channel, Message};
use crate::state::{now, AppState};
use crate::store::{LiveCode, NewCode, NewOutbox, NewResetToken, User, UserId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(forgot_password))
        .routes(routes!(validate_otp))
        .routes(routes!(reset_password))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "user@example.com", "channel": "email"}))]
struct ForgotRequest {
    /// Email, E.164 phone number (starts with `+`) or username.
    #[schema(min_length = 1)]
    identifier: String,
    /// "email" or "sms"; by default the identifier's kind decides.
    #[schema(schema_with = channel_schema)]
    channel: Option<String>,
}

/// `channel`: an enum of "email" and "sms", plus what also means "not given".
fn channel_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([
            serde_json::json!("email"),
            serde_json::json!("sms"),
            serde_json::json!(""),
            serde_json::Value::Null,
        ]))
        .description(Some(
            "`email` or `sms` (any case, surrounding spaces ignored). Absent, null or empty: \
             SMS when the identifier is a phone number, email otherwise. An account without \
             a phone gets the code by email whatever is asked.",
        ))
        .build()
}

/// Ask for a one-time code.
///
/// Answers the same whether or not the account exists; the code is queued for delivery,
/// never sent inline. Rate limited per client IP and per identifier; past the hourly cap
/// of codes per account no code is sent but the answer does not change.
#[utoipa::path(
    post,
    path = "/forgot-password",
    tag = "recovery",
    operation_id = "forgot_password",
    request_body = ForgotRequest,
    responses(
        (status = 200, description = "Accepted, whether or not the account exists",
            body = MessageBody,
            links(
                ("validate_otp" = (
                    operation_id = "validate_otp",
                    request_body = json!({"identifier": "$request.body#/identifier", "otp": "000000"}),
                    description = "Trade the code that was sent for a reset token"
                )),
            ),
            example = json!({"message": "OTP sent successfully"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn forgot_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ForgotRequest>,
) -> Result<Json<MessageBody>> {
    let identifier = Identifier::parse(&req.identifier)?;
    let channel = match req.channel.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) if c.eq_ignore_ascii_case("email") => Some(Channel::Email),
        Some(c) if c.eq_ignore_ascii_case("sms") => Some(Channel::Sms),
        Some(_) => Err(ParseError::new("channel", "must be \"email\" or \"sms\""))?,
    };
    let limits = &state.settings.limits;
    limit(&state, &limits.forgot_per_ip, "forgot:ip", &meta.ip_key).await?;

    // Every request takes a slot, account or not, so a full queue delays both alike.
    let slot = state
        .background_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let user = lookup::find_user(&*state.store, &identifier)
        .await?
        .filter(|u| u.disabled_at.is_none());
    let device = user
        .as_ref()
        .and_then(|u| device_of(&state, &headers, u.id));
    // From the owner's device, the device's budget: an attacker's requests for the same
    // identifier do not stop the owner's.
    let budget = match &device {
        Some(d) => format!("device:{}", d.id),
        None => identifier.key().to_owned(),
    };
    limit(
        &state,
        &limits.forgot_per_account,
        "forgot:account",
        &budget,
    )
    .await?;
    if let Some(user) = user {
        // What only an existing account costs (the cap check, the proofs read, the SMS
        // budget, the code's transaction, the audit row) happens after the answer, so the
        // answer's timing cannot tell who has an account.
        let job_state = state.clone();
        let wanted = channel.unwrap_or(match identifier {
            Identifier::Phone(_) => Channel::Sms,
            _ => Channel::Email,
        });
        state.background.spawn(
            async move {
                let _slot = slot;
                let device = device.as_ref();
                if let Err(e) = request_code(&job_state, &user, wanted, device, &meta).await {
                    tracing::warn!(user_id = user.id, error = %e, "recovery code not issued");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
    code_event("requested");
    Ok(Json(MessageBody {
        message: "OTP sent successfully",
    }))
}

/// Issues a code to an existing, enabled account, on the best channel the ownership rule
/// and the SMS policy allow; silently nothing past the hourly cap (the device's own cap
/// when asked from one of the account's devices, so that an attacker's requests cannot
/// use up the owner's).
async fn request_code(
    state: &AppState,
    user: &User,
    wanted: Channel,
    device: Option<&Device>,
    meta: &RequestMeta,
) -> Result<()> {
    let cap = match device {
        Some(d) => format!("codes:device:{}", d.id),
        None => format!("codes:user:{}", user.id),
    };
    let capped = state
        .limiter
        .check(&state.settings.limits.codes_per_account, &cap)
        .await
        .is_err();
    if capped {
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
    issue_code(state, user, channel, device).await?;
    audit(state, "code_requested", Some(user.id), meta).await;
    Ok(())
}

async fn issue_code(
    state: &AppState,
    user: &User,
    channel: Channel,
    device: Option<&Device>,
) -> Result<()> {
    let to = match channel {
        Channel::Sms => user.phone.clone().unwrap_or_default(),
        Channel::Email => user.email.clone(),
    };
    let code = new_code();
    let ttl = state.settings.recovery.otp_ttl;
    let minutes = ttl.as_secs().div_ceil(60);
    let message = Message {
        channel,
        to,
        subject: "Your password reset code".into(),
        body: format!(
            "Your one-time code is {code}. It expires in {minutes} minutes.\n\n\
             If you did not ask to reset your password, ignore this message: \
             your password has not been changed."
        ),
    };
    let now = now();
    let sealed = seal(state, &message)?;
    state
        .store
        .issue_code(
            &NewCode {
                user_id: user.id,
                code_hash: &state.keys.code_hash(user.id, &code),
                channel: channel.as_str(),
                device: device.map(|d| d.id.as_str()),
                now,
                expires_at: now + ttl.as_secs() as i64,
            },
            &NewOutbox {
                channel: channel.as_str(),
                payload: &sealed,
                now,
            },
        )
        .await?;
    state.outbox_wake.notify_one();
    tracing::info!(
        user_id = user.id,
        channel = channel.as_str(),
        "recovery code issued"
    );
    Ok(())
}

/// Counts a code event. `requested` counts every accepted request and `rejected` every
/// refused guess, account or not, so the counters cannot tell which identifiers exist.
fn code_event(event: &'static str) {
    metrics::counter!("gatehouse_otp_codes_total", "event" => event).increment(1);
}

fn seal(state: &AppState, message: &Message) -> Result<String> {
    let json = serde_json::to_vec(message).map_err(ApiError::internal)?;
    state.keys.seal(&json).map_err(ApiError::internal)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"identifier": "user@example.com", "otp": "713113"}))]
struct ValidateRequest {
    /// Any identifier of the account: the code is bound to the user, not to the identifier
    /// it was asked with.
    #[schema(min_length = 1)]
    identifier: String,
    /// Exactly 6 ASCII digits (surrounding spaces ignored).
    #[schema(min_length = 6)]
    otp: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "message": "OTP verified. Proceed to reset password.",
    "reset_token": "KdAZW5apw5o3lQm4D1w6k0bqC5vTnYb0GdQq3xk7n8Q"
}))]
struct ValidateResponse {
    message: &'static str,
    /// Single use, valid `RESET_TOKEN_TTL` (15 minutes by default): 256 random bits,
    /// base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    reset_token: String,
}

/// Trade a right code for a single-use reset token.
///
/// Wrong, expired, used or exhausted code and unknown identifier give the same 400.
/// Each code dies after `OTP_MAX_ATTEMPTS` guesses. Rate limited per client IP and per
/// identifier.
#[utoipa::path(
    post,
    path = "/validate-otp",
    tag = "recovery",
    operation_id = "validate_otp",
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "The code was right; here is the reset token, also as a cookie",
            body = ValidateResponse,
            headers(("Set-Cookie" = String,
                description = "`__Secure-reset_token=<token>; Path=/reset-password; [Secure; ]HttpOnly; \
                    SameSite=Strict; Max-Age=<RESET_TOKEN_TTL>`")),
            links(
                ("reset_password" = (
                    operation_id = "reset_password",
                    request_body = json!({
                        "identifier": "$request.body#/identifier",
                        "reset_token": "$response.body#/reset_token",
                        "new_password": "a brand new passphrase"
                    }),
                    description = "Set a new password with the token"
                )),
            )),
        BodyErrors,
        // After BodyErrors, whose 400 it replaces.
        (status = 400, description = "Wrong, expired, used or exhausted code, or the body is \
            malformed (not JSON, not an object, a field missing)",
            body = ErrorBody, example = json!({"error": "Invalid or expired OTP"})),
        RateLimited,
        Unavailable,
    )
)]
async fn validate_otp(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ValidateRequest>,
) -> Result<impl IntoResponse> {
    let identifier = Identifier::parse(&req.identifier)?;
    let otp = OtpCode::parse(&req.otp)?;
    let limits = &state.settings.limits;
    limit(&state, &limits.validate_per_ip, "validate:ip", &meta.ip_key).await?;

    let started = Instant::now();
    let now = now();
    let found = lookup::find_user_with_live_code(&*state.store, &identifier, now)
        .await?
        .filter(|(u, _)| u.disabled_at.is_none());
    let device = found
        .as_ref()
        .and_then(|(u, _)| device_of(&state, &headers, u.id));
    // From the owner's device, the device's budget; from anywhere else, the identifier's.
    let budget = match &device {
        Some(d) => format!("device:{}", d.id),
        None => identifier.key().to_owned(),
    };
    limit(
        &state,
        &limits.validate_per_account,
        "validate:account",
        &budget,
    )
    .await?;

    let token = match redeem(&state, found, device.as_ref(), &otp, now, &meta).await {
        Ok(token) => token,
        Err(ApiError::InvalidOtp) => {
            code_event("rejected");
            floor(&state, started).await;
            return Err(ApiError::InvalidOtp);
        }
        Err(e) => return Err(e),
    };
    code_event("validated");
    let ttl = state.settings.recovery.reset_token_ttl;
    let mut cookies = vec![(
        SET_COOKIE,
        set_cookie(
            RESET_COOKIE,
            &token.secret,
            "/reset-password",
            ttl,
            state.settings.cookie_secure,
        ),
    )];
    // Whoever had the code controls an address of the account: this browser is now one
    // of its devices.
    if device.is_none() {
        let secure = state.settings.cookie_secure;
        cookies.push((
            SET_COOKIE,
            device::set_new(&state.keys, token.user_id, secure),
        ));
    }
    Ok((
        AppendHeaders(cookies),
        Json(ValidateResponse {
            message: "OTP verified. Proceed to reset password.",
            reset_token: token.secret,
        }),
    ))
}

/// Holds a refusal until RESPONSE_FLOOR after `started`: an unknown identifier is
/// refused after one read, a known one with a live code after a write (the try it
/// took), and the difference must not be measurable.
async fn floor(state: &AppState, started: Instant) {
    tokio::time::sleep_until(started + state.settings.recovery.response_floor).await;
}

/// A reset token just issued, and whose it is.
struct Issued {
    secret: String,
    user_id: UserId,
}

/// At most one "someone is guessing your code" notice per account a day.
const GUESSING_NOTICE: Rule = Rule {
    count: 1,
    period: Duration::from_secs(24 * 3600),
};

/// Checks a guess and, when right, trades the code for a new reset token. Every refusal
/// is `InvalidOtp`, whatever its reason.
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
    meta: &RequestMeta,
) -> Result<Issued> {
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
            warn_owner(state, &user).await;
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
        tracing::info!(user_id = user.id, "wrong recovery code");
        audit(state, "code_failed", Some(user.id), meta).await;
        if !on_device && code.attempts + 1 >= max as i32 {
            warn_owner(state, &user).await;
        }
        return Err(ApiError::InvalidOtp);
    }
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
        )
        .await?;
    if !redeemed {
        return Err(ApiError::InvalidOtp);
    }
    tracing::info!(user_id = user.id, "recovery code validated");
    audit(state, "code_validated", Some(user.id), meta).await;
    Ok(Issued {
        secret: token,
        user_id: user.id,
    })
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
        subject: "Someone is trying to guess your recovery code".into(),
        body: format!(
            "Someone is asking for password reset codes for your account {} and guessing \
             them wrong. Your password has not been changed, and further guesses are \
             being refused.\n\n\
             If it is you, ask for a new code from a browser where you have signed in \
             before: its guesses are not affected. If it is not you, nothing is needed; \
             consider a longer password.",
            user.username
        ),
    };
    let queued = match seal(state, &notice) {
        Ok(sealed) => {
            state
                .store
                .queue_message(&NewOutbox {
                    channel: Channel::Email.as_str(),
                    payload: &sealed,
                    now: now(),
                })
                .await
        }
        Err(e) => {
            tracing::warn!(error = %e, "guessing notice not sealed");
            return;
        }
    };
    match queued {
        Ok(()) => state.outbox_wake.notify_one(),
        Err(e) => tracing::warn!(user_id = user.id, error = %e, "guessing notice not queued"),
    }
}

/// The device cookie the request carries, if it is a device of `user_id`.
fn device_of(state: &AppState, headers: &HeaderMap, user_id: UserId) -> Option<Device> {
    device::presented(&state.keys, headers, state.settings.cookie_secure, user_id)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "identifier": "user@example.com",
    "new_password": "a brand new passphrase",
    "reset_token": "KdAZW5apw5o3lQm4D1w6k0bqC5vTnYb0GdQq3xk7n8Q"
}))]
struct ResetRequest {
    /// Any identifier of the account the token was issued for.
    #[schema(min_length = 1)]
    identifier: String,
    /// 8 to 256 characters, all of which count (compared in Unicode NFKC); not one of the
    /// 10,000 most common passwords, not mostly one repeated character, and not built from
    /// `gatehouse` or the account's username, email or phone (in any case, reversed, with
    /// look-alike digits, or with digits and symbols added around it). Checked once the
    /// token is.
    #[schema(min_length = 8, max_length = 256)]
    new_password: String,
    /// Also accepted from the `reset_token` cookie set by /validate-otp.
    /// Null or empty: the cookie is used.
    reset_token: Option<String>,
}

const NO_TOKEN: ApiError =
    ApiError::Unauthorized("A reset token is required: validate the OTP first");
const BAD_TOKEN: ApiError = ApiError::Unauthorized("Invalid or expired reset token");

/// Set a new password with a reset token.
///
/// The token is single use; consuming it kills every other code and token of the user
/// and revokes all their sessions, and a "your password was changed" email is queued.
/// There is no automatic login. Rate limited per client IP.
#[utoipa::path(
    post,
    path = "/reset-password",
    tag = "recovery",
    operation_id = "reset_password",
    request_body = ResetRequest,
    params(
        ("reset_token" = Option<String>, Cookie,
            description = "The reset token set by `/validate-otp`, used when the body has none"),
    ),
    responses(
        (status = 200, description = "The password was changed; every session was revoked",
            body = MessageBody,
            headers(("Set-Cookie" = String,
                description = "`__Secure-reset_token=; Path=/reset-password; [Secure; ]HttpOnly; \
                    SameSite=Strict; Max-Age=0`: the token cookie is cleared")),
            example = json!({"message": "Password reset successful"})),
        (status = 401, description = "No reset token, or it is invalid, expired or used",
            body = ErrorBody, example = json!({"error": "Invalid or expired reset token"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn reset_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<impl IntoResponse> {
    let identifier = Identifier::parse(&req.identifier)?;
    let token = req
        .reset_token
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            cookie(
                &headers,
                RESET_COOKIE,
                "/reset-password",
                state.settings.cookie_secure,
            )
        })
        .ok_or(NO_TOKEN)?;
    if !looks_like_token(token.trim()) {
        return Err(BAD_TOKEN);
    }
    let hash = token_hash(token.trim());
    limit(
        &state,
        &state.settings.limits.reset_per_ip,
        "reset:ip",
        &meta.ip_key,
    )
    .await?;

    let started = Instant::now();
    let now = now();
    let found = lookup::find_user(&*state.store, &identifier)
        .await?
        .filter(|u| u.disabled_at.is_none());
    let live = match &found {
        Some(user) => state.store.live_reset_token(user.id, &hash, now).await?,
        None => None,
    };
    let (Some(user), Some(live)) = (found, live) else {
        floor(&state, started).await;
        return Err(BAD_TOKEN);
    };
    let username = Username::parse(&user.username).ok();
    let email = Email::parse_lookup(&user.email).ok();
    let phone = user.phone.as_deref().and_then(|p| Phone::parse(p).ok());
    let password = NewPassword::parse(
        "new_password",
        req.new_password,
        username.as_ref(),
        email.as_ref(),
        phone.as_ref(),
    )?
    .into_password();
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
    let notices = reset_notices(&state, &user, proven, phone_dropped).await?;
    let outbox: Vec<NewOutbox<'_>> = notices
        .iter()
        .map(|(channel, payload)| NewOutbox {
            channel: channel.as_str(),
            payload,
            now,
        })
        .collect();
    if !state
        .store
        .reset_password(
            user.id,
            &hash,
            &new_hash,
            now,
            proven.map(Channel::as_str),
            &outbox,
        )
        .await?
    {
        return Err(BAD_TOKEN);
    }
    state.outbox_wake.notify_one();
    tracing::info!(user_id = user.id, "password reset; all sessions revoked");
    audit(&state, "password_reset", Some(user.id), &meta).await;
    audit(&state, "sessions_revoked", Some(user.id), &meta).await;
    if phone_dropped {
        audit(&state, "unproven_phone_removed", Some(user.id), &meta).await;
    }
    let clear = set_cookie(
        RESET_COOKIE,
        "",
        "/reset-password",
        Duration::ZERO,
        state.settings.cookie_secure,
    );
    Ok((
        AppendHeaders([(SET_COOKIE, clear)]),
        Json(MessageBody {
            message: "Password reset successful",
        }),
    ))
}

/// "Your password was changed", sealed for the outbox: to the email always, and by SMS to
/// a phone that stays on the account, within the SMS policy — every address that can
/// still reach the account hears of it.
async fn reset_notices(
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
    let mut notices = vec![(Channel::Email, seal(state, &email)?)];
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
            notices.push((Channel::Sms, seal(state, &sms)?));
        }
    }
    Ok(notices)
}
