//! TOTP (RFC 6238) as every authenticator app reads it: HMAC-SHA-1, six digits, 30-second
//! steps, a 160-bit secret. The arithmetic is `totp-rs`'; this module decides which time
//! step a code belongs to (one step of clock skew either way), so that the store can
//! accept each step at most once (`FactorStore::take_totp_step`), and draws the QR code.

use qrcode::render::svg;
use qrcode::QrCode;
use rand::rngs::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

/// Seconds per step.
pub const STEP: u64 = 30;
const DIGITS: usize = 6;
/// Bytes of a new secret: 160 bits, RFC 4226's recommendation.
const SECRET_BYTES: usize = 20;

/// A new random secret.
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    OsRng.fill_bytes(&mut secret);
    secret
}

/// The secret as authenticator apps take it typed in: base32, no padding.
pub fn base32(secret: &[u8]) -> Option<String> {
    totp(secret, "x", "x").map(|t| t.get_secret_base32())
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Option<TOTP> {
    // A colon separates issuer and account in the URI's label: neither may hold one.
    let clean = |s: &str| s.replace(':', " ");
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP,
        secret.to_vec(),
        Some(clean(issuer)),
        clean(account),
    )
    .ok()
}

/// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…`, what a QR code carries.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> Option<String> {
    totp(secret, issuer, account).map(|t| t.get_url())
}

/// The URI as a QR code, an SVG document of black modules on white.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// The time step that `now` (Unix seconds) falls in.
pub fn step_of(now: i64) -> i64 {
    now.div_euclid(STEP as i64)
}

/// The code of time step `step`.
pub fn code_at(secret: &[u8], step: i64) -> Option<String> {
    let t = totp(secret, "x", "x")?;
    let time = u64::try_from(step).ok()?.checked_mul(STEP)?;
    Some(t.generate(time))
}

/// The step, among the one `now` is in and its two neighbours, whose code `guess` is:
/// the newest such, compared in constant time.
pub fn matching_step(secret: &[u8], guess: &str, now: i64) -> Option<i64> {
    let current = step_of(now);
    let mut found = None;
    for step in [current - 1, current, current + 1] {
        if let Some(code) = code_at(secret, step) {
            if bool::from(code.as_bytes().ct_eq(guess.as_bytes())) {
                found = Some(step);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B: the SHA-1 secret and times, the last six digits of the
    /// eight-digit codes.
    #[test]
    fn codes_match_rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(secret, step_of(time)).unwrap(), code, "at {time}");
        }
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let secret = new_secret();
        let now = 1_700_000_015;
        let step = step_of(now);
        for skew in [-1, 0, 1] {
            let code = code_at(&secret, step + skew).unwrap();
            assert_eq!(matching_step(&secret, &code, now), Some(step + skew));
        }
        for far in [-2, 2] {
            let code = code_at(&secret, step + far).unwrap();
            // Another step's code may collide by chance (one in a million): compare steps.
            assert_ne!(matching_step(&secret, &code, now), Some(step + far));
        }
        assert_eq!(matching_step(&secret, "12345", now), None);
    }

    #[test]
    fn the_uri_names_issuer_and_account_and_the_qr_is_svg() {
        let secret = new_secret();
        assert_eq!(secret.len(), 20);
        let uri = otpauth_uri(&secret, "Gate house", "al:ice").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Gate%20house:al%20ice?"),
            "{uri}"
        );
        assert!(
            uri.contains(&format!("secret={}", base32(&secret).unwrap())),
            "{uri}"
        );
        assert!(uri.contains("issuer=Gate%20house"), "{uri}");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
    }
}
