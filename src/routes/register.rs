//! `POST /register`: create an account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BodyErrors, RateLimited, Unavailable};
use super::MessageBody;
use crate::audit::Origin;
use crate::auth::{codes, lookup, verification};
use crate::domain::{Email, Identifier, NewPassword, Phone, Username};
use crate::error::{ApiError, ErrorBody, Result};
use crate::extract::{ApiJson, RequestMeta};
use crate::limit;
use crate::notify::{Channel, Message};
use crate::state::{now, AppState};
use crate::store::{NewUser, StoreError, User};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "username": "user123",
    "email": "user@example.com",
    "phone": "+1234567890",
    "password": "correct horse battery"
}))]
struct RegisterRequest {
    /// 3 to 50 of `A-Z a-z 0-9 _ . -` after trimming and Unicode NFKC (so full-width
    /// forms count as their ASCII letters); unique ignoring case.
    #[schema(min_length = 1)]
    username: String,
    /// A syntactically valid address with a dotted domain, at most 254 bytes after NFKC;
    /// no quoted local part, and no mixing of look-alike alphabets (Latin with Cyrillic …)
    /// in the local part or within a domain label. Unique as a mailbox: the local part
    /// ignoring case (full Unicode case folding: `ß` = `ss`), the domain in its IDNA ASCII
    /// form (`bücher.example` = `xn--bcher-kva.example`).
    #[schema(min_length = 1)]
    email: String,
    /// Optional: the seed required it, we do not. E.164: `+` and 8 to 15 digits, not
    /// starting with 0; spaces, dashes, dots and brackets are dropped. Unique. Empty or
    /// null means none.
    phone: Option<String>,
    /// 8 to 256 characters, all of which count (compared in Unicode NFKC); not one of the
    /// 10,000 most common passwords, not mostly one repeated character, and not built from
    /// `gatehouse`, the username, email or phone (in any case, reversed, with look-alike
    /// digits, or with digits and symbols added around it).
    #[schema(min_length = 8, max_length = 256)]
    password: String,
}

/// Create an account.
#[utoipa::path(
    post,
    path = "/register",
    tag = "accounts",
    operation_id = "register",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account was created", body = MessageBody,
            links(
                ("login" = (
                    operation_id = "login",
                    request_body = json!({
                        "identifier": "$request.body#/username",
                        "password": "$request.body#/password"
                    }),
                    description = "Log in with the new account"
                )),
                ("forgot_password" = (
                    operation_id = "forgot_password",
                    request_body = json!({"identifier": "$request.body#/email"}),
                    description = "Ask for a recovery code for the new account"
                )),
            ),
            example = json!({"message": "User registered successfully"})),
        (status = 409, description = "The username, email or phone is taken", body = ErrorBody,
            example = json!({"error": "User already exists", "code": "user_exists"})),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
async fn register(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<MessageBody>)> {
    let username = Username::parse(&req.username)?;
    let email = Email::parse(&req.email)?;
    let phone = match req.phone.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(Phone::parse(p)?),
    };
    if let Some(phone) = &phone {
        if !crate::notify::sms_policy::country_allowed(&state.settings.sms_policy, phone.as_str()) {
            return Err(ApiError::invalid(
                "phone",
                "numbers in this country are not accepted",
            ));
        }
    }
    let password = NewPassword::parse(
        "password",
        req.password,
        Some(&username),
        Some(&email),
        phone.as_ref(),
    )?
    .into_password();
    limit::spend(
        &*state.limiter,
        &state.settings.limits.register_per_ip,
        "register:ip",
        &meta.ip_key,
    )
    .await?;

    // The unique index sees only today's key; an account stored under the key earlier
    // versions used for this address (see `crate::auth::lookup`) holds it too. Such rows
    // are never written any more, so checking before inserting cannot race.
    let legacy_taken = match email.legacy() {
        Some(legacy) => lookup::find_user(&*state.store, &Identifier::Email(legacy))
            .await?
            .is_some(),
        None => false,
    };
    let hash = state
        .hasher
        .hash(&password)
        .await
        .map_err(ApiError::internal)?;
    let now = now();
    let origin = Origin::of(&meta);
    // Under REQUIRE_VERIFIED_EMAIL both answers below wait for RESPONSE_FLOOR from here: a
    // new account costs a commit that a taken address does not, and that must not be timed.
    let started = tokio::time::Instant::now();
    let created = if legacy_taken {
        Err(StoreError::Conflict)
    } else {
        state
            .store
            .create_user(
                &NewUser {
                    username: &username,
                    email: &email,
                    phone: phone.as_ref(),
                    password_hash: &hash,
                    now,
                },
                &[origin.event("registered", None)],
            )
            .await
    };
    let registered = Json(MessageBody {
        message: "User registered successfully",
    });
    match created {
        Ok(user_id) => {
            tracing::info!(user_id, "user registered");
            let user = User {
                id: user_id,
                username: username.as_str().to_owned(),
                email: email.as_str().to_owned(),
                phone: phone.as_ref().map(|p| p.as_str().to_owned()),
                password_hash: hash,
                created_at: now,
                disabled_at: None,
                email_verified: false,
                phone_verified: false,
                totp_enabled: false,
                passkey_count: 0,
                recovery_codes_left: 0,
            };
            let mut channels = vec![Channel::Email];
            if user.phone.is_some() {
                channels.push(Channel::Sms);
            }
            verification::send_later(&state, user, channels, origin).await?;
            if state.settings.recovery.require_verified_email {
                crate::auth::hold_refusal(&state, started).await;
            }
            Ok((StatusCode::CREATED, registered))
        }
        // The only unique indexes on users are the username, email and phone keys.
        Err(StoreError::Conflict) => {
            // A username is a chosen public handle: taken is taken. An email or phone
            // tells who has an account, so under REQUIRE_VERIFIED_EMAIL the answer is the
            // one a new account gets, and the owner hears of it.
            let by_name = Identifier::Username(username.clone());
            if !state.settings.recovery.require_verified_email
                || lookup::find_user(&*state.store, &by_name).await?.is_some()
            {
                return Err(ApiError::UserExists);
            }
            // Finding and telling the owners runs after the answer, so that it costs this
            // answer no more than a new account's codes cost that one.
            let taken = [Some(Identifier::Email(email)), phone.map(Identifier::Phone)];
            let job_state = state.clone();
            state
                .after_answer(async move {
                    for identifier in taken.into_iter().flatten() {
                        if let Err(e) = tell_owner(&job_state, &identifier).await {
                            tracing::warn!(error = %e, "sign-up notice not sent");
                        }
                    }
                })
                .await?;
            crate::auth::hold_refusal(&state, started).await;
            Ok((StatusCode::CREATED, registered))
        }
        Err(e) => Err(e.into()),
    }
}

/// "Someone tried to sign up with this address", to the email of the account that holds
/// `identifier`, once a day at most per account.
async fn tell_owner(state: &AppState, identifier: &Identifier) -> Result<()> {
    let Some(owner) = lookup::find_user(&*state.store, identifier).await? else {
        return Ok(());
    };
    let once_a_day = crate::config::Rule {
        count: 1,
        period: std::time::Duration::from_secs(24 * 3600),
    };
    let key = format!("notice:signup:{}", owner.id);
    if state.limiter.check(&once_a_day, &key).await.is_err() {
        return Ok(());
    }
    let notice = Message {
        channel: Channel::Email,
        to: owner.email.clone(),
        subject: "Someone tried to sign up with your address".into(),
        body: format!(
            "Someone just tried to create a new account with an address that belongs to \
             your account {}. No account was created, and they were not told that the \
             address is taken.\n\nIf it was you, sign in instead, or reset your password if \
             you forgot it. Otherwise no action is needed.",
            owner.username
        ),
    };
    codes::notify(state, &notice, Some(owner.id)).await
}
