//! A software WebAuthn authenticator (a "soft passkey") and the browser around it, enough
//! for the server's `webauthn-rs` passkey ceremonies: ES256 (P-256) keys, attestation
//! "none", user presence and user verification always claimed, discoverable credentials
//! that keep the user handle they were made for.
//!
//! `create` answers the server's creation options (`{"publicKey": {...}}`) with the JSON
//! of a `RegisterPublicKeyCredential`; `get` answers request options with the JSON of a
//! `PublicKeyCredential` (an assertion). `*_with` take `Knobs`, to make the wrong answers
//! the negative tests need. No check of ours is worth much here: the proof that it is
//! right is the server accepting it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use rand::RngCore as _;
use serde_cbor_2::Value as Cbor;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// The origin the server accepts by default (WEBAUTHN_ORIGINS): what the "browser" writes
/// into `clientDataJSON`, whatever port the test server really listens on.
pub const ORIGIN: &str = "http://localhost:8080";

/// COSE algorithm ES256.
const ES256: i64 = -7;

// authenticatorData flags.
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

/// A passkey this authenticator made: its id, its private key, the user handle it was
/// made for, and its signature counter.
pub struct Credential {
    pub id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub rp_id: String,
    key: SigningKey,
    counter: AtomicU32,
}

impl Credential {
    /// The credential id as the API shows it (`id`, `rawId`, `allowCredentials[].id`).
    pub fn id_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.id)
    }

    /// How many assertions it has signed.
    pub fn counter(&self) -> u32 {
        self.counter.load(Ordering::SeqCst)
    }
}

/// Ways to get a ceremony wrong, for the negative tests. The default is a correct answer.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// The origin written into `clientDataJSON` (default `ORIGIN`).
    pub origin: Option<String>,
    /// The challenge written into `clientDataJSON` instead of the one asked for.
    pub challenge: Option<String>,
    /// Leave the UV flag out of the authenticator data (user present, not verified).
    pub no_user_verification: bool,
    /// Sign the assertion with a fresh key rather than the credential's.
    pub another_key: bool,
    /// Answer even when `allowCredentials` does not list the credential (a real
    /// authenticator would not be asked).
    pub ignore_allow_credentials: bool,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("`{s}` is not base64url: {e}"))
}

/// A string at `pointer` in `options`; panics, showing the options, when there is none.
fn string_at<'a>(options: &'a Value, pointer: &str) -> &'a str {
    options
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in the options: {options}"))
}

fn random_key() -> SigningKey {
    loop {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        // All but a 2^-32 sliver of 32-byte strings are valid P-256 scalars.
        if let Ok(key) = SigningKey::from_slice(&secret) {
            return key;
        }
    }
}

fn client_data(kind: &str, challenge: &str, knobs: &Knobs) -> Vec<u8> {
    let origin = knobs.origin.as_deref().unwrap_or(ORIGIN);
    let challenge = knobs.challenge.as_deref().unwrap_or(challenge);
    serde_json::to_vec(&json!({
        "type": kind,
        "challenge": challenge,
        "origin": origin,
        "crossOrigin": false,
    }))
    .expect("serialise clientDataJSON")
}

fn flags(knobs: &Knobs) -> u8 {
    if knobs.no_user_verification {
        UP
    } else {
        UP | UV
    }
}

/// The credential public key as a COSE_Key: {1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256),
/// -2: x, -3: y}.
fn cose_key(key: &SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    assert_eq!(bytes.len(), 65, "an uncompressed P-256 point");
    let (x, y) = (&bytes[1..33], &bytes[33..65]);
    let map: BTreeMap<Cbor, Cbor> = [
        (Cbor::Integer(1), Cbor::Integer(2)),
        (Cbor::Integer(3), Cbor::Integer(ES256.into())),
        (Cbor::Integer(-1), Cbor::Integer(1)),
        (Cbor::Integer(-2), Cbor::Bytes(x.to_vec())),
        (Cbor::Integer(-3), Cbor::Bytes(y.to_vec())),
    ]
    .into_iter()
    .collect();
    serde_cbor_2::to_vec(&Cbor::Map(map)).expect("encode the COSE key")
}

/// `navigator.credentials.create()` with the default knobs.
pub fn create(options: &Value) -> (Value, Credential) {
    create_with(options, &Knobs::default())
}

/// `navigator.credentials.create()`: a new ES256 discoverable credential for the options'
/// relying party and user, and the `RegisterPublicKeyCredential` JSON announcing it.
pub fn create_with(options: &Value, knobs: &Knobs) -> (Value, Credential) {
    let rp_id = string_at(options, "/publicKey/rp/id").to_owned();
    let user_handle = unb64(string_at(options, "/publicKey/user/id"));
    let challenge = string_at(options, "/publicKey/challenge");
    let offers_es256 = options
        .pointer("/publicKey/pubKeyCredParams")
        .and_then(Value::as_array)
        .is_some_and(|params| params.iter().any(|p| p["alg"] == json!(ES256)));
    assert!(offers_es256, "the options do not offer ES256: {options}");

    let mut id = vec![0u8; 16 + (rand::random::<u8>() % 17) as usize];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let key = random_key();

    let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
    auth_data.push(flags(knobs) | AT);
    auth_data.extend_from_slice(&0u32.to_be_bytes());
    auth_data.extend_from_slice(&[0u8; 16]); // AAGUID
    auth_data.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
    auth_data.extend_from_slice(&id);
    auth_data.extend_from_slice(&cose_key(&key));

    let attestation: BTreeMap<Cbor, Cbor> = [
        (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
        (Cbor::Text("attStmt".into()), Cbor::Map(BTreeMap::new())),
        (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
    ]
    .into_iter()
    .collect();
    let attestation =
        serde_cbor_2::to_vec(&Cbor::Map(attestation)).expect("encode the attestation object");

    let credential = json!({
        "id": b64(&id),
        "rawId": b64(&id),
        "type": "public-key",
        "response": {
            "attestationObject": b64(&attestation),
            "clientDataJSON": b64(&client_data("webauthn.create", challenge, knobs)),
        },
        "extensions": {},
    });
    let made = Credential {
        id,
        user_handle,
        rp_id,
        key,
        counter: AtomicU32::new(0),
    };
    (credential, made)
}

/// `navigator.credentials.get()` with the default knobs.
pub fn get(options: &Value, credential: &Credential) -> Value {
    get_with(options, credential, &Knobs::default())
}

/// `navigator.credentials.get()`: an assertion by `credential` answering the request
/// options (`{"publicKey": {challenge, rpId, allowCredentials?, …}}`), its counter one up.
pub fn get_with(options: &Value, credential: &Credential, knobs: &Knobs) -> Value {
    let rp_id = string_at(options, "/publicKey/rpId");
    assert_eq!(
        rp_id, credential.rp_id,
        "the options ask for another relying party"
    );
    let challenge = string_at(options, "/publicKey/challenge");
    let allowed: Vec<Vec<u8>> = options
        .pointer("/publicKey/allowCredentials")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| unb64(c["id"].as_str().expect("allowCredentials[].id")))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        knobs.ignore_allow_credentials || allowed.is_empty() || allowed.contains(&credential.id),
        "allowCredentials does not list this credential: {options}"
    );

    let counter = credential.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
    auth_data.push(flags(knobs));
    auth_data.extend_from_slice(&counter.to_be_bytes());

    let client_data = client_data("webauthn.get", challenge, knobs);
    let mut signed = auth_data.clone();
    signed.extend_from_slice(&Sha256::digest(&client_data));
    let other;
    let key = if knobs.another_key {
        other = random_key();
        &other
    } else {
        &credential.key
    };
    let signature: DerSignature = key.sign(&signed);

    json!({
        "id": b64(&credential.id),
        "rawId": b64(&credential.id),
        "type": "public-key",
        "response": {
            "authenticatorData": b64(&auth_data),
            "clientDataJSON": b64(&client_data),
            "signature": b64(&signature.to_bytes()),
            "userHandle": b64(&credential.user_handle),
        },
        "extensions": {},
    })
}
