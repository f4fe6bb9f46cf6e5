//! Device cookies (OWASP's "slow down online guessing attacks with device cookies"): a
//! browser where a user has logged in or recovered their account before carries a cookie
//! only the server can mint, naming that user. Requests that carry it are judged on the
//! device's own budgets, not the account's, so an attacker who spends an account's login
//! or recovery budget from elsewhere does not lock its owner out:
//!
//! - `/login`: attempts from the device count against `login:device:<id>` instead of the
//!   account's budget;
//! - `/forgot-password`: the request and the hourly cap on codes count per device, and the
//!   code is bound to the device;
//! - `/validate-otp`: a guess from the device a code was sent to takes one of that code's
//!   device tries, not one of the tries everyone else shares, and counts against the
//!   device's failure budget, not the account's.
//!
//! The cookie is `user id ‖ 128 random bits ‖ HMAC-SHA256 truncated to 128 bits` under a
//! key derived from the server secret, base64url. Nothing is stored: a device is as good
//! as its MAC, and it counts only for the user it names (a cookie minted for the
//! attacker's own account buys nothing against anyone else's). It is a budget, not a
//! credential: it never replaces the password or the code.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;

use axum::http::{HeaderMap, HeaderValue};

use crate::auth::keys::Keys;
use crate::auth::session::{cookie, set_cookie};
use crate::store::UserId;

pub const DEVICE_COOKIE: &str = "device";
/// How long a device stays known.
pub const DEVICE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

const NONCE: usize = 16;
const TAG: usize = 16;

/// A verified device cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub user_id: UserId,
    /// Hex of the random part: the device's name in rate-limit keys and on codes.
    pub id: String,
}

/// A new device cookie value for `user_id`.
pub fn mint(keys: &Keys, user_id: UserId) -> String {
    let mut nonce = [0u8; NONCE];
    OsRng.fill_bytes(&mut nonce);
    let mut raw = Vec::with_capacity(8 + NONCE + TAG);
    raw.extend_from_slice(&user_id.to_be_bytes());
    raw.extend_from_slice(&nonce);
    let tag = keys.device_tag(&raw);
    raw.extend_from_slice(&tag[..TAG]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The device a cookie value names, when its MAC is right.
pub fn verify(keys: &Keys, value: &str) -> Option<Device> {
    if value.len() > 64 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
    if raw.len() != 8 + NONCE + TAG {
        return None;
    }
    let (body, tag) = raw.split_at(8 + NONCE);
    if !keys.device_tag_matches(body, tag) {
        return None;
    }
    let user_id = UserId::from_be_bytes(body[..8].try_into().ok()?);
    Some(Device {
        user_id,
        id: hex::encode(&body[8..]),
    })
}

/// The device of `user_id` among the request's cookies, if any.
pub fn of_user(keys: &Keys, cookie: Option<String>, user_id: UserId) -> Option<Device> {
    cookie
        .and_then(|v| verify(keys, &v))
        .filter(|d| d.user_id == user_id)
}

/// The device cookie a request carries, if it is a device of `user_id`.
pub fn presented(
    keys: &Keys,
    headers: &HeaderMap,
    secure: bool,
    user_id: UserId,
) -> Option<Device> {
    of_user(keys, cookie(headers, DEVICE_COOKIE, "/", secure), user_id)
}

/// A `Set-Cookie` that makes this browser a new device of `user_id`.
pub fn set_new(keys: &Keys, user_id: UserId, secure: bool) -> HeaderValue {
    set_cookie(
        DEVICE_COOKIE,
        &mint(keys, user_id),
        "/",
        DEVICE_LIFETIME,
        secure,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_cookie_verifies_and_names_its_user() {
        let keys = Keys::from_secret("a server secret of at least thirty-two characters").unwrap();
        let v = mint(&keys, 42);
        let d = verify(&keys, &v).unwrap();
        assert_eq!(d.user_id, 42);
        assert_eq!(d.id.len(), 32);
        assert_ne!(verify(&keys, &mint(&keys, 42)).unwrap().id, d.id);
        assert_eq!(of_user(&keys, Some(v.clone()), 42), Some(d));
        assert_eq!(of_user(&keys, Some(v), 43), None);
    }

    #[test]
    fn a_forged_or_foreign_cookie_does_not_verify() {
        let keys = Keys::from_secret("a server secret of at least thirty-two characters").unwrap();
        let other = Keys::from_secret("another server secret, also long enough to use").unwrap();
        let v = mint(&keys, 42);
        assert_eq!(verify(&other, &v), None);
        // The user id changed to 43 with the tag kept.
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        raw[7] = 43;
        assert_eq!(verify(&keys, &URL_SAFE_NO_PAD.encode(raw)), None);
        assert_eq!(verify(&keys, "junk"), None);
        assert_eq!(verify(&keys, ""), None);
        assert_eq!(verify(&keys, &"A".repeat(1000)), None);
    }
}
