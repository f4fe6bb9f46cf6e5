//! Keys derived from the server secret: one to MAC one-time codes, one to encrypt queued
//! messages. Each purpose gets its own subkey (HMAC-SHA256 of a label under the secret), so
//! one use can never be turned against another.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The MACs are kept keyed: cloning a keyed MAC is cheaper than keying one per use, and
/// keying is the one step that can fail (in signature only), so it fails at start-up.
pub struct Keys {
    otp: HmacSha256,
    device: HmacSha256,
    outbox: XChaCha20Poly1305,
    /// Second-factor secrets and ceremony state at rest (TOTP secrets, WebAuthn states).
    factors: XChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
#[error("queued message could not be decrypted (was SECRET_KEY changed?)")]
pub struct SealError;

/// Keying failed. HMAC takes keys of any length, so this does not happen; the type is
/// here because the `hmac` API returns a `Result`.
#[derive(Debug, thiserror::Error)]
#[error("the server secret cannot key HMAC-SHA256")]
pub struct KeyError;

/// Encrypting a queued message failed. XChaCha20-Poly1305 refuses only plaintexts of
/// 256 GiB and more, so this does not happen either.
#[derive(Debug, thiserror::Error)]
#[error("queued message could not be encrypted")]
pub struct EncryptError;

fn mac(key: &[u8]) -> Result<HmacSha256, KeyError> {
    <HmacSha256 as Mac>::new_from_slice(key).map_err(|_| KeyError)
}

fn derive(secret: &[u8], label: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut mac = mac(secret)?;
    mac.update(label.as_bytes());
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

impl Keys {
    pub fn from_secret(secret: &str) -> Result<Self, KeyError> {
        let otp = derive(secret.as_bytes(), "gatehouse/otp/v1")?;
        let device = derive(secret.as_bytes(), "gatehouse/device/v1")?;
        let outbox_key = derive(secret.as_bytes(), "gatehouse/outbox/v1")?;
        let factors_key = derive(secret.as_bytes(), "gatehouse/factors/v1")?;
        Ok(Keys {
            otp: mac(otp.as_slice())?,
            device: mac(device.as_slice())?,
            outbox: XChaCha20Poly1305::new(outbox_key.as_slice().into()),
            factors: XChaCha20Poly1305::new(factors_key.as_slice().into()),
        })
    }

    /// The stored form of a code: HMAC-SHA256 under the server secret, bound to the user,
    /// so a leaked table cannot be brute-forced offline (a million codes are nothing).
    pub fn code_hash(&self, user_id: i64, code: &str) -> String {
        let mut mac = self.otp_mac();
        mac.update(&user_id.to_be_bytes());
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Compares a guess with a stored code hash in constant time.
    pub fn code_matches(&self, user_id: i64, guess: &str, stored: &str) -> bool {
        self.code_hash(user_id, guess)
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into()
    }

    /// The MAC of a device cookie's body (see `auth::device`).
    pub fn device_tag(&self, body: &[u8]) -> [u8; 32] {
        let mut mac = self.device.clone();
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the (truncated) MAC of `body`, in constant time.
    pub fn device_tag_matches(&self, body: &[u8], tag: &[u8]) -> bool {
        let full = self.device_tag(body);
        full.get(..tag.len())
            .is_some_and(|expected| bool::from(expected.ct_eq(tag)))
            && !tag.is_empty()
    }

    fn otp_mac(&self) -> HmacSha256 {
        self.otp.clone()
    }

    /// The stored form of a recovery code: like `code_hash`, in a domain of its own.
    pub fn recovery_hash(&self, user_id: i64, code: &str) -> String {
        self.code_hash(user_id, &format!("recovery:{code}"))
    }

    /// Encrypts a queued message (it may carry a code) for storage: base64(nonce ‖ ciphertext).
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, EncryptError> {
        seal_with(&self.outbox, plaintext)
    }

    pub fn open(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        open_with(&self.outbox, sealed)
    }

    /// Encrypts a second factor's secret or a ceremony's state for storage, under a key
    /// of its own.
    pub fn seal_factor(&self, plaintext: &[u8]) -> Result<String, EncryptError> {
        seal_with(&self.factors, plaintext)
    }

    pub fn open_factor(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        open_with(&self.factors, sealed)
    }
}

/// base64(nonce ‖ ciphertext) of `plaintext` under `cipher`.
fn seal_with(cipher: &XChaCha20Poly1305, plaintext: &[u8]) -> Result<String, EncryptError> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(&nonce, plaintext)
        .map_err(|_| EncryptError)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(STANDARD.encode(out))
}

fn open_with(cipher: &XChaCha20Poly1305, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let raw = STANDARD.decode(sealed).map_err(|_| SealError)?;
    if raw.len() < 24 {
        return Err(SealError);
    }
    let (nonce, ciphertext) = raw.split_at(24);
    cipher
        .decrypt(nonce.into(), ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| SealError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_are_keyed_and_bound_to_the_user() {
        let k = Keys::from_secret("a secret of at least thirty-two chars!!").unwrap();
        let other = Keys::from_secret("another secret of thirty-two chars!!!!").unwrap();
        let h = k.code_hash(7, "123456");
        assert!(k.code_matches(7, "123456", &h));
        assert!(!k.code_matches(7, "123457", &h));
        assert!(!k.code_matches(8, "123456", &h));
        assert!(!other.code_matches(7, "123456", &h));
        assert!(!h.contains("123456"));
    }

    #[test]
    fn sealed_messages_open_only_with_the_same_secret() {
        let k = Keys::from_secret("a secret of at least thirty-two chars!!").unwrap();
        let sealed = k.seal(b"your code is 123456").unwrap();
        assert!(!sealed.contains("123456"));
        assert_eq!(k.open(&sealed).unwrap().as_slice(), b"your code is 123456");
        let other = Keys::from_secret("another secret of thirty-two chars!!!!").unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(k.open("not base64!").is_err());
        assert!(k.open("AAAA").is_err());
    }
}
