//! Passkeys (WebAuthn Level 2, with `webauthn-rs`): registering one on a signed-in
//! account, signing in with one instead of a password, and using one as the second step
//! of a login.
//!
//! A ceremony's state stays on the server, sealed, in `challenges`, keyed by the hash of
//! the ceremony's own random challenge: the browser sends that challenge back inside the
//! credential's `clientDataJSON`, so the second half finds its state on whichever
//! instance it reaches, with no handle for the client to carry. Each state is used up by
//! the half that finishes it (a conditional DELETE): a ceremony cannot be replayed.
//!
//! Registration and every sign-in ask for user verification (a PIN or a biometric on the
//! authenticator) as *preferred*: an authenticator that cannot verify its user (a plain
//! security key) still registers, and its assertions are one factor, possession. So a
//! passwordless sign-in is `aal2` when the authenticator verified the user and `aal1`
//! when it did not; as the second step after a password it is `aal2` either way. A
//! passkey registered with user verification must verify its user ever after (the
//! WebAuthn core enforces that).
//!
//! The ceremonies are built on `webauthn-rs-core`, the core of `webauthn-rs`: the
//! `webauthn-rs` passkey ceremonies require user verification, which would refuse every
//! authenticator without a PIN. What `webauthn-rs` adds around the core for passkeys is
//! kept here: secure algorithms only, no attestation, the `credProtect` and `uvm`
//! extensions, a credential registered to one account only (a unique key in the store).
//!
//! Sign-in options never list credentials (they ask for a discoverable one), so they say
//! nothing about whether an account exists or has passkeys; an identifier, when given,
//! only binds the ceremony to that account.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs_core::error::WebauthnError;
use webauthn_rs_core::proto::{
    AttestationConveyancePreference, AuthenticationResult, AuthenticationState, CredProtect,
    Credential, CredentialID, CredentialProtectionPolicy, PublicKeyCredential,
    RegisterPublicKeyCredential, RegistrationState, RequestAuthenticationExtensions,
    RequestRegistrationExtensions, UserVerificationPolicy,
};
use webauthn_rs_core::WebauthnCore;

use crate::audit::{self, Origin};
use crate::auth::account::{self, sealed};
use crate::auth::factors;
use crate::auth::login::{self, Opened};
use crate::auth::lookup;
use crate::auth::token::{new_public_id, token_hash};
use crate::config::FactorSettings;
use crate::domain::Identifier;
use crate::error::{ApiError, Result};
use crate::extract::RequestMeta;
use crate::limit;
use crate::state::{now, AppState};
use crate::store::{FactorChange, NewChallenge, NewPasskey, PasskeyRecord, StoreError, User};
use url::Url;

const REGISTER: &str = "passkey_register";
const LOGIN: &str = "passkey_login";
const REAUTH: &str = "passkey_reauth";
/// How long the browser has between the two halves of a ceremony.
const CEREMONY_TTL: i64 = 300;
/// Longest passkey name kept.
const NAME_MAX: usize = 64;
/// User verification, asked for in every ceremony.
const VERIFICATION: UserVerificationPolicy = UserVerificationPolicy::Preferred;

/// The relying party: WEBAUTHN_RP_ID, WEBAUTHN_ORIGINS and the product name.
pub struct RelyingParty {
    core: WebauthnCore,
}

/// The relying party WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS describe (by default PUBLIC_URL's
/// host and origin); an error names what is wrong with them.
pub fn relying_party(
    settings: &FactorSettings,
    public_url: &Url,
) -> std::result::Result<RelyingParty, String> {
    let rp_id = match &settings.webauthn_rp_id {
        Some(id) => id.trim().to_owned(),
        None => public_url
            .host_str()
            .ok_or("PUBLIC_URL has no host")?
            .to_owned(),
    };
    let rp_id = rp_id.as_str();
    let origins = if settings.webauthn_origins.is_empty() {
        let origin = public_url.origin().ascii_serialization();
        vec![Url::parse(&origin).map_err(|e| format!("PUBLIC_URL's origin: {e}"))?]
    } else {
        settings.webauthn_origins.clone()
    };
    for origin in &origins {
        // The relying party id must be the origin's host or a domain it is under.
        let fits = origin
            .domain()
            .is_some_and(|host| host == rp_id || host.ends_with(&format!(".{rp_id}")));
        if !fits {
            return Err(format!(
                "WEBAUTHN_RP_ID `{rp_id}` does not fit the origin `{origin}`: it must be the \
                 origin's host or a domain the host is under"
            ));
        }
    }
    Ok(RelyingParty {
        core: WebauthnCore::new_unsafe_experts_only(
            &settings.mfa_issuer,
            rp_id,
            origins,
            Duration::from_secs(CEREMONY_TTL.unsigned_abs()),
            Some(false),
            Some(false),
        ),
    })
}

/// A registration ceremony between its two halves.
#[derive(Serialize, Deserialize)]
struct Registration {
    rs: RegistrationState,
}

/// An authentication ceremony between its two halves.
#[derive(Serialize, Deserialize)]
struct Authentication {
    ast: AuthenticationState,
}

/// A passkey as stored: the credential under `cred` (the shape `webauthn-rs` gives its
/// `Passkey`, so passkeys stored by earlier versions read unchanged).
#[derive(Serialize, Deserialize)]
struct StoredPasskey {
    cred: Credential,
}

impl StoredPasskey {
    /// Takes what an assertion tells of the credential: its signature counter and
    /// backup state.
    fn update(&mut self, result: &AuthenticationResult) {
        if result.counter() > self.cred.counter {
            self.cred.counter = result.counter();
        }
        self.cred.backup_state = result.backup_state();
        self.cred.backup_eligible |= result.backup_eligible();
    }
}

impl RelyingParty {
    /// Creation options for a new passkey, and the ceremony's state.
    fn start_registration(
        &self,
        user_handle: &[u8],
        username: &str,
        exclude: Vec<CredentialID>,
    ) -> std::result::Result<(serde_json::Value, Registration), WebauthnError> {
        let extensions = RequestRegistrationExtensions {
            // A discoverable credential cannot be listed without user verification.
            cred_protect: Some(CredProtect {
                credential_protection_policy:
                    CredentialProtectionPolicy::UserVerificationOptionalWithCredentialIDList,
                // Many authenticators fail the operation when told to enforce it.
                enforce_credential_protection_policy: Some(false),
            }),
            uvm: Some(true),
            cred_props: Some(true),
            min_pin_length: None,
            hmac_create_secret: None,
        };
        let builder = self
            .core
            .new_challenge_register_builder(user_handle, username, username)?
            .attestation(AttestationConveyancePreference::None)
            .require_resident_key(false)
            .authenticator_attachment(None)
            .user_verification_policy(VERIFICATION)
            .reject_synchronised_authenticators(false)
            .exclude_credentials(Some(exclude))
            .hints(None)
            .extensions(Some(extensions));
        let (options, rs) = self.core.generate_challenge_register(builder)?;
        let mut json = serde_json::to_value(&options).map_err(|_| WebauthnError::Configuration)?;
        // A discoverable credential where the authenticator can make one, so that it can
        // sign in without a username (the core only knows "required" and "discouraged";
        // the ceremony's state does not depend on it).
        if let Some(selection) = json
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".into(), "preferred".into());
            selection.insert("requireResidentKey".into(), false.into());
        }
        Ok((json, Registration { rs }))
    }

    fn finish_registration(
        &self,
        credential: &RegisterPublicKeyCredential,
        registration: &Registration,
    ) -> std::result::Result<StoredPasskey, WebauthnError> {
        self.core
            .register_credential(credential, &registration.rs, None)
            .map(|cred| StoredPasskey { cred })
    }

    /// Request options for the given passkeys (none: a discoverable credential), and the
    /// ceremony's state.
    fn start_authentication(
        &self,
        passkeys: Vec<StoredPasskey>,
    ) -> std::result::Result<(serde_json::Value, Authentication), WebauthnError> {
        let discoverable = passkeys.is_empty();
        let creds = passkeys.into_iter().map(|p| p.cred).collect();
        let builder = self
            .core
            .new_challenge_authenticate_builder(creds, Some(VERIFICATION))?
            .extensions(discoverable.then_some(RequestAuthenticationExtensions {
                appid: None,
                uvm: Some(true),
                hmac_get_secret: None,
            }))
            .allow_backup_eligible_upgrade(true)
            .hints(None);
        let (options, ast) = self.core.generate_challenge_authenticate(builder)?;
        let json = serde_json::to_value(&options).map_err(|_| WebauthnError::Configuration)?;
        Ok((json, Authentication { ast }))
    }

    fn finish_authentication(
        &self,
        credential: &PublicKeyCredential,
        authentication: &Authentication,
        passkey: &StoredPasskey,
    ) -> std::result::Result<AuthenticationResult, WebauthnError> {
        self.core
            .authenticate_single_credential(credential, &authentication.ast, &passkey.cred)
    }
}

/// What a ceremony's two halves are keyed by: the hash of its random challenge.
fn challenge_key(challenge: &[u8]) -> String {
    token_hash(&hex::encode(challenge))
}

/// The challenge a credential answers, read from its `clientDataJSON`.
fn answered_challenge(client_data_json: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct ClientData {
        challenge: String,
    }
    let data: ClientData = serde_json::from_slice(client_data_json).ok()?;
    URL_SAFE_NO_PAD
        .decode(data.challenge.trim_end_matches('='))
        .ok()
}

/// The challenge in options built by this module.
fn options_challenge(options: &serde_json::Value) -> Result<Vec<u8>> {
    options
        .pointer("/publicKey/challenge")
        .and_then(serde_json::Value::as_str)
        .and_then(|c| URL_SAFE_NO_PAD.decode(c.trim_end_matches('=')).ok())
        .ok_or_else(|| {
            ApiError::internal(std::io::Error::other(
                "WebAuthn options without a challenge",
            ))
        })
}

/// A passkey's store key: the SHA-256 of its credential id.
fn credential_key(id: &[u8]) -> String {
    hex::encode(Sha256::digest(id))
}

/// The user handle passkeys of `user_id` carry: derived under the server secret, so it
/// names the account to us and to nobody else.
fn user_handle(state: &AppState, user_id: i64) -> [u8; 16] {
    let tag = state.keys.code_hash(user_id, "webauthn-user-handle");
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(tag.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    bytes
}

fn seal_json<T: serde::Serialize>(state: &AppState, value: &T) -> Result<String> {
    let json = serde_json::to_vec(value).map_err(ApiError::internal)?;
    state.keys.seal_factor(&json).map_err(ApiError::internal)
}

fn open_json<T: serde::de::DeserializeOwned>(state: &AppState, sealed: &str) -> Result<T> {
    let json = state.keys.open_factor(sealed).map_err(ApiError::internal)?;
    serde_json::from_slice(&json).map_err(ApiError::internal)
}

fn parse_credential<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::invalid(
            "credential",
            format!("is not a WebAuthn PublicKeyCredential: {e}"),
        )
    })
}

fn passkey_of(record: &PasskeyRecord) -> Result<StoredPasskey> {
    serde_json::from_str(&record.credential).map_err(ApiError::internal)
}

/// The passkeys of `user_id`.
async fn passkeys_of(state: &AppState, user_id: i64) -> Result<Vec<StoredPasskey>> {
    state
        .store
        .passkeys(user_id)
        .await?
        .iter()
        .map(passkey_of)
        .collect()
}

/// Spends one ceremony of the client IP.
async fn spend_ip(state: &AppState, meta: &RequestMeta) -> Result<()> {
    let limits = &state.settings.limits;
    limit::spend(&*state.limiter, &limits.mfa_per_ip, "mfa:ip", &meta.ip_key).await
}

/// `POST /passkeys/register/start`: the creation options for a new passkey of `user`
/// (their existing ones excluded), the ceremony's state kept server-side.
pub async fn register_start(
    state: &AppState,
    user: &User,
    meta: &RequestMeta,
) -> Result<serde_json::Value> {
    account::spend_limits(state, user, meta).await?;
    let exclude = passkeys_of(state, user.id)
        .await?
        .into_iter()
        .map(|p| p.cred.cred_id)
        .collect();
    let (options, registration) = state
        .webauthn
        .start_registration(&user_handle(state, user.id), &user.username, exclude)
        .map_err(ApiError::internal)?;
    let now = now();
    state
        .store
        .create_challenge(&NewChallenge {
            token_hash: &challenge_key(&options_challenge(&options)?),
            kind: REGISTER,
            user_id: Some(user.id),
            binding: None,
            state: Some(&seal_json(state, &registration)?),
            now,
            expires_at: now + CEREMONY_TTL,
        })
        .await?;
    Ok(options)
}

/// A passkey just registered, as the API shows it.
pub struct Registered {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// `POST /passkeys/register/finish`: checks the new credential against the ceremony
/// `user` started, and stores it, with a notice and an audit row.
pub async fn register_finish(
    state: &AppState,
    user: &User,
    credential: serde_json::Value,
    name: Option<String>,
    meta: &RequestMeta,
) -> Result<Registered> {
    account::spend_limits(state, user, meta).await?;
    let name = match name.map(|n| n.trim().to_owned()) {
        Some(n) if n.chars().count() > NAME_MAX => {
            return Err(ApiError::invalid(
                "name",
                format!("must be at most {NAME_MAX} characters"),
            ))
        }
        Some(n) if n.chars().any(char::is_control) => {
            return Err(ApiError::invalid(
                "name",
                "must not contain control characters",
            ))
        }
        Some(n) if !n.is_empty() => n,
        _ => "Passkey".to_owned(),
    };
    let credential: RegisterPublicKeyCredential = parse_credential(credential)?;
    const NO_CEREMONY: ApiError = ApiError::InvalidSecondFactor;
    let challenge =
        answered_challenge(credential.response.client_data_json.as_ref()).ok_or(NO_CEREMONY)?;
    let now = now();
    let ceremony = state
        .store
        .challenge(&challenge_key(&challenge), REGISTER, now)
        .await?
        .filter(|c| c.user_id == Some(user.id))
        .ok_or(NO_CEREMONY)?;
    // Used up before it is judged: a ceremony is finished once, right or wrong.
    if !state.store.take_challenge(ceremony.id).await? {
        return Err(NO_CEREMONY);
    }
    let registration: Registration =
        open_json(state, ceremony.state.as_deref().unwrap_or_default())?;
    let origin = Origin::of(meta);
    let passkey = match state
        .webauthn
        .finish_registration(&credential, &registration)
    {
        Ok(passkey) => passkey,
        Err(e) => {
            tracing::info!(user_id = user.id, error = %e, "passkey registration refused");
            audit::attempt(state, "passkey_refused", Some(user.id), &origin).await;
            return Err(ApiError::InvalidSecondFactor);
        }
    };
    let public_id = new_public_id();
    let stored = serde_json::to_string(&passkey).map_err(ApiError::internal)?;
    let notice = account::email_to(
        user,
        "A passkey was added",
        format!(
            "A passkey named \"{name}\" was added to your account {}. It can now sign in \
             without a password, and serves as a second factor.\n\n\
             If this was not you, remove it, reset your password and contact support.",
            user.username
        ),
    );
    let mut payload = String::new();
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let added = state
        .store
        .change_factors(
            user.id,
            &FactorChange::PasskeyAdd {
                passkey: &NewPasskey {
                    public_id: &public_id,
                    credential_key: &credential_key(&passkey.cred.cred_id),
                    credential: &stored,
                    name: &name,
                },
            },
            now,
            &notices,
            &[origin.event("passkey_added", Some(user.id))],
        )
        .await;
    match added {
        Ok(true) => {}
        Ok(false) => {
            return Err(ApiError::Unauthorized(
                "Not logged in, or the session has expired",
            ))
        }
        Err(StoreError::Conflict) => {
            return Err(ApiError::Conflict("This passkey is registered already"))
        }
        Err(e) => return Err(e.into()),
    }
    state.outbox_wake.notify_one();
    tracing::info!(user_id = user.id, "passkey added");
    crate::metrics::account_event("passkey_added");
    Ok(Registered {
        id: public_id,
        name,
        created_at: now,
    })
}

/// `DELETE /passkeys/{id}`: removes one of the user's passkeys (someone else's id is
/// "not found", alike), with a notice and an audit row; the recovery codes go with the
/// last factor.
pub async fn remove(
    state: &AppState,
    user: &User,
    public_id: &str,
    meta: &RequestMeta,
) -> Result<()> {
    account::spend_limits(state, user, meta).await?;
    const MISSING: ApiError = ApiError::Missing("Passkey not found");
    let shaped = (1..=64).contains(&public_id.len())
        && public_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !shaped {
        return Err(MISSING);
    }
    let now = now();
    let notice = account::email_to(
        user,
        "A passkey was removed",
        format!(
            "A passkey was removed from your account {}.\n\nIf this was not you, reset your \
             password and contact support.",
            user.username
        ),
    );
    let mut payload = String::new();
    let notices = [sealed(state, &notice, Some(user.id), &mut payload, now)?];
    let origin = Origin::of(meta);
    let removed = state
        .store
        .change_factors(
            user.id,
            &FactorChange::PasskeyRemove { public_id },
            now,
            &notices,
            &[origin.event("passkey_removed", Some(user.id))],
        )
        .await?;
    if !removed {
        return Err(MISSING);
    }
    state.outbox_wake.notify_one();
    crate::metrics::account_event("passkey_removed");
    Ok(())
}

/// Checks an assertion of one of `user`'s passkeys against a ceremony's state, and
/// records the use (its signature counter). Any failure is `InvalidSecondFactor`; success
/// tells whether the authenticator verified its user.
async fn verify_assertion(
    state: &AppState,
    user: &User,
    credential: &PublicKeyCredential,
    record: &PasskeyRecord,
    authentication: &Authentication,
    origin: &Origin,
) -> Result<bool> {
    let mut passkey = passkey_of(record)?;
    let result = match state
        .webauthn
        .finish_authentication(credential, authentication, &passkey)
    {
        Ok(result) => {
            factors::count(factors::Method::Passkey, true);
            result
        }
        Err(e) => {
            factors::count(factors::Method::Passkey, false);
            tracing::info!(user_id = user.id, error = %e, "passkey assertion refused");
            audit::attempt(state, "mfa_failed", Some(user.id), origin).await;
            return Err(ApiError::InvalidSecondFactor);
        }
    };
    passkey.update(&result);
    let stored = serde_json::to_string(&passkey).map_err(ApiError::internal)?;
    state
        .store
        .passkey_used(&credential_key(credential.raw_id.as_ref()), &stored, now())
        .await?;
    Ok(result.user_verified())
}

/// `POST /login/mfa/passkey/start`: request options listing the passkeys of the
/// `mfa_token`'s user, the ceremony's state kept with the token.
pub async fn second_step_start(
    state: &AppState,
    token: &str,
    meta: &RequestMeta,
) -> Result<serde_json::Value> {
    spend_ip(state, meta).await?;
    let pending = login::pending(state, token).await?;
    let passkeys = passkeys_of(state, pending.user.id).await?;
    if passkeys.is_empty() {
        return Err(ApiError::invalid("method", "this account has no passkey"));
    }
    let (options, authentication) = state
        .webauthn
        .start_authentication(passkeys)
        .map_err(ApiError::internal)?;
    if !state
        .store
        .set_challenge_state(
            pending.challenge_id,
            &seal_json(state, &authentication)?,
            now(),
        )
        .await?
    {
        return Err(ApiError::SignInExpired);
    }
    Ok(options)
}

/// `POST /login/mfa` with `method: passkey`: an assertion answering the options of
/// `second_step_start`, by one of the user's passkeys. After the password, the passkey
/// is the second factor whether or not the authenticator verified its user: `aal2`.
pub async fn second_step(
    state: &AppState,
    token: &str,
    credential: serde_json::Value,
    meta: &RequestMeta,
) -> Result<Opened> {
    let credential: PublicKeyCredential = parse_credential(credential)?;
    let pending = login::pending(state, token).await?;
    let user = &pending.user;
    factors::spend_attempt(state, user, meta).await?;
    if !state
        .store
        .claim_challenge_attempt(pending.challenge_id, now(), login::MFA_TOKEN_TRIES)
        .await?
    {
        return Err(ApiError::SignInExpired);
    }
    let origin = Origin::of(meta);
    let Some(sealed_state) = pending.state.as_deref() else {
        return Err(ApiError::invalid(
            "method",
            "start the passkey step with POST /login/mfa/passkey/start first",
        ));
    };
    let authentication: Authentication = open_json(state, sealed_state)?;
    let record = state
        .store
        .passkey_by_credential(&credential_key(credential.raw_id.as_ref()))
        .await?
        .filter(|r| r.user_id == user.id);
    let Some(record) = record else {
        audit::attempt(state, "mfa_failed", Some(user.id), &origin).await;
        return Err(ApiError::InvalidSecondFactor);
    };
    verify_assertion(state, user, &credential, &record, &authentication, &origin).await?;
    login::finish(state, user, pending.challenge_id, meta).await
}

/// `POST /reauthenticate/passkey/start`: request options listing the user's passkeys,
/// for a re-authentication of their session.
pub async fn reauth_start(
    state: &AppState,
    user: &User,
    meta: &RequestMeta,
) -> Result<serde_json::Value> {
    account::spend_limits(state, user, meta).await?;
    let passkeys = passkeys_of(state, user.id).await?;
    if passkeys.is_empty() {
        return Err(ApiError::invalid(
            "credential",
            "this account has no passkey",
        ));
    }
    let (options, authentication) = state
        .webauthn
        .start_authentication(passkeys)
        .map_err(ApiError::internal)?;
    let now = now();
    state
        .store
        .create_challenge(&NewChallenge {
            token_hash: &challenge_key(&options_challenge(&options)?),
            kind: REAUTH,
            user_id: Some(user.id),
            binding: None,
            state: Some(&seal_json(state, &authentication)?),
            now,
            expires_at: now + CEREMONY_TTL,
        })
        .await?;
    Ok(options)
}

/// `POST /reauthenticate` with a passkey: an assertion answering `reauth_start`'s
/// options, by one of the user's passkeys; tells whether the authenticator verified its
/// user. The second-factor attempt is already spent.
pub async fn reauth_finish(
    state: &AppState,
    user: &User,
    credential: serde_json::Value,
    origin: &Origin,
) -> Result<bool> {
    let credential: PublicKeyCredential = parse_credential(credential)?;
    const REFUSED: ApiError = ApiError::InvalidSecondFactor;
    let challenge =
        answered_challenge(credential.response.client_data_json.as_ref()).ok_or(REFUSED)?;
    let ceremony = state
        .store
        .challenge(&challenge_key(&challenge), REAUTH, now())
        .await?
        .filter(|c| c.user_id == Some(user.id))
        .ok_or(REFUSED)?;
    if !state.store.take_challenge(ceremony.id).await? {
        return Err(REFUSED);
    }
    let authentication: Authentication =
        open_json(state, ceremony.state.as_deref().unwrap_or_default())?;
    let record = state
        .store
        .passkey_by_credential(&credential_key(credential.raw_id.as_ref()))
        .await?
        .filter(|r| r.user_id == user.id)
        .ok_or(REFUSED)?;
    verify_assertion(state, user, &credential, &record, &authentication, origin).await
}

/// `POST /passkeys/login/start`: request options for a discoverable credential. With an
/// identifier, the ceremony is bound to that account (if there is one: the answer is the
/// same either way).
pub async fn login_start(
    state: &AppState,
    identifier: Option<&Identifier>,
    meta: &RequestMeta,
) -> Result<serde_json::Value> {
    spend_ip(state, meta).await?;
    let bound_to = match identifier {
        Some(identifier) => Some(
            lookup::find_enabled(&*state.store, identifier)
                .await?
                .map(|u| u.id.to_string())
                .unwrap_or_else(|| "nobody".to_owned()),
        ),
        None => None,
    };
    let (options, authentication) = state
        .webauthn
        .start_authentication(Vec::new())
        .map_err(ApiError::internal)?;
    let now = now();
    state
        .store
        .create_challenge(&NewChallenge {
            token_hash: &challenge_key(&options_challenge(&options)?),
            kind: LOGIN,
            user_id: None,
            binding: bound_to.as_deref(),
            state: Some(&seal_json(state, &authentication)?),
            now,
            expires_at: now + CEREMONY_TTL,
        })
        .await?;
    Ok(options)
}

/// `POST /passkeys/login/finish`: an assertion by a discoverable passkey opens a session
/// for its account, no password asked: `aal2` when the authenticator verified its user
/// (possession and a PIN or biometric), `aal1` when it did not (possession alone). Every
/// refusal is `InvalidSecondFactor`.
pub async fn login_finish(
    state: &AppState,
    credential: serde_json::Value,
    meta: &RequestMeta,
) -> Result<Opened> {
    spend_ip(state, meta).await?;
    let credential: PublicKeyCredential = parse_credential(credential)?;
    const REFUSED: ApiError = ApiError::InvalidSecondFactor;
    let challenge =
        answered_challenge(credential.response.client_data_json.as_ref()).ok_or(REFUSED)?;
    let now = now();
    let ceremony = state
        .store
        .challenge(&challenge_key(&challenge), LOGIN, now)
        .await?
        .ok_or(REFUSED)?;
    // Used up before it is judged: an assertion cannot be replayed against it.
    if !state.store.take_challenge(ceremony.id).await? {
        return Err(REFUSED);
    }
    let authentication: Authentication =
        open_json(state, ceremony.state.as_deref().unwrap_or_default())?;
    let handle = credential.get_user_unique_id().ok_or(REFUSED)?.to_vec();
    let record = state
        .store
        .passkey_by_credential(&credential_key(credential.raw_id.as_ref()))
        .await?
        .ok_or(REFUSED)?;
    let user = state
        .store
        .user_by_id(record.user_id)
        .await?
        .filter(lookup::enabled)
        .ok_or(REFUSED)?;
    let bound = ceremony
        .binding
        .as_deref()
        .is_none_or(|b| b == user.id.to_string());
    if !bound || handle != user_handle(state, user.id) {
        return Err(REFUSED);
    }
    // No spend of the account's second-factor budget here: a signature cannot be guessed,
    // and anyone may present a credential id, so a failure here must not lock the owner
    // out (the client's IP budget was spent above).
    let origin = Origin::of(meta);
    let verified =
        verify_assertion(state, &user, &credential, &record, &authentication, &origin).await?;
    factors::clear_attempts(state, &user).await;
    login::open(state, &user, if verified { 2 } else { 1 }, None, meta, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answered_challenge_is_read_from_client_data() {
        let json =
            br#"{"type":"webauthn.get","challenge":"AQIDBA","origin":"http://localhost:8080"}"#;
        assert_eq!(answered_challenge(json), Some(vec![1, 2, 3, 4]));
        assert_eq!(answered_challenge(b"not json"), None);
        assert_eq!(challenge_key(&[1, 2, 3, 4]), token_hash("01020304"));
    }

    #[test]
    fn the_default_relying_party_is_local_development() {
        let settings = FactorSettings {
            reauth_max_age: std::time::Duration::from_secs(600),
            code_login: false,
            mfa_issuer: "Gatehouse".into(),
            webauthn_rp_id: None,
            webauthn_origins: Vec::new(),
        };
        let local = Url::parse("http://localhost:8080").unwrap();
        assert!(relying_party(&settings, &local).is_ok());
        // Derived from PUBLIC_URL, or given.
        let public = Url::parse("https://auth.example.com/prefix").unwrap();
        assert!(relying_party(&settings, &public).is_ok());
        let parent = FactorSettings {
            webauthn_rp_id: Some("example.com".into()),
            ..settings.clone()
        };
        assert!(relying_party(&parent, &public).is_ok());
        let wrong = FactorSettings {
            webauthn_rp_id: Some("example.com".into()),
            ..settings.clone()
        };
        assert!(relying_party(&wrong, &local).is_err());
        let foreign = FactorSettings {
            webauthn_origins: vec![Url::parse("https://evil.example").unwrap()],
            ..settings
        };
        assert!(relying_party(&foreign, &public).is_err());
    }
}
