//! Authentication: the flows as plain functions, one file per concept — sessions,
//! recovery codes, reset tokens, verification, self-service account changes — and the mechanics they use: password hashing, server
//! keys, opaque tokens, device cookies, proven channels, finding a user by identifier.

pub mod account;
pub mod code_login;
pub mod codes;
pub mod device;
pub mod factors;
pub mod forward;
pub mod keys;
pub mod login;
pub mod lookup;
pub mod ownership;
pub mod passkey;
pub mod password;
pub mod reset;
pub mod secret;
pub mod session;
pub mod token;
pub mod totp;
pub mod verification;

use tokio::time::Instant;

use crate::state::AppState;

/// Holds a refusal until RESPONSE_FLOOR after `started`: an unknown identifier is refused
/// after one read, a known one after a write or two (a code's try, a token's lookup), and
/// the difference must not be measurable. (Registration under REQUIRE_VERIFIED_EMAIL holds
/// both its answers the same way.)
pub(crate) async fn hold_refusal(state: &AppState, started: Instant) {
    tokio::time::sleep_until(started + state.settings.recovery.response_floor).await;
}
