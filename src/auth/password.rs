//! Password hashing: argon2id for everything new, bcrypt verification for hashes imported
//! from the seed, and rehash-on-login for anything weaker than configured.
//!
//! Hashing is the one deliberately expensive thing the server does. It runs on tokio's
//! blocking pool, never on the async workers, behind a semaphore sized to the core count:
//! cheap requests never wait behind a hash, and a login flood queues as futures instead of
//! as threads. The semaphore permit is moved *into* the blocking closure, so a client that
//! hangs up mid-hash cannot release it while the hash still runs. Each permit comes with a
//! reusable argon2 working block: allocating 19 MiB per hash makes glibc keep hundreds of
//! MiB after a burst of logins.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{Ident, Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

use crate::config::HashSettings;
use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("hash semaphore closed")]
    Closed,
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash is bcrypt or weaker argon2 than configured: store a new one.
    pub needs_rehash: bool,
}

pub struct PasswordHasher {
    inner: Arc<Inner>,
    permits: Arc<Semaphore>,
    /// A valid hash of a random password, checked when the user does not exist so that
    /// "no such user" costs the same time as "wrong password".
    dummy_hash: String,
}

struct Inner {
    params: Params,
    buffers: Mutex<Vec<Vec<Block>>>,
}

impl PasswordHasher {
    pub fn new(settings: &HashSettings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .map_err(|e| HashError::Argon2(e.to_string()))?;
        let permits = match settings.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let inner = Arc::new(Inner {
            params,
            buffers: Mutex::new(Vec::with_capacity(permits)),
        });
        let dummy_hash = inner.dummy()?;
        Ok(PasswordHasher {
            inner,
            permits: Arc::new(Semaphore::new(permits)),
            dummy_hash,
        })
    }

    /// How many hashes may run at once.
    pub fn concurrency(&self) -> usize {
        self.permits.available_permits()
    }

    /// An argon2id PHC string for a new password.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.clone();
        self.run(move |inner| inner.hash(password.expose())).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no
    /// user, so both cases cost one hash.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        let exists = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.clone();
        let verdict = self
            .run(move |inner| inner.verify(password.expose(), &stored))
            .await?;
        Ok(Verified {
            ok: verdict.ok && exists,
            needs_rehash: verdict.needs_rehash && exists,
        })
    }

    /// One hash on the calling thread through the same code path as the server uses
    /// (same parameters, same reused buffer): what `gatehouse hash-bench` times.
    pub fn hash_blocking(&self, password: &str) -> Result<String, HashError> {
        self.inner.hash(password)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let queued = std::time::Instant::now();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Closed)?;
        let inner = self.inner.clone();
        metrics::histogram!("gatehouse_password_hash_queue_wait_seconds")
            .record(queued.elapsed().as_secs_f64());
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = std::time::Instant::now();
            let out = job(&inner);
            metrics::histogram!("gatehouse_password_hash_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            out
        })
        .await?)
    }
}

impl Inner {
    fn with_buffer<T>(&self, blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
        let mut buf = self
            .buffers
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default();
        if buf.len() < blocks {
            buf.resize(blocks, Block::default());
        }
        let out = f(&mut buf[..blocks]);
        if let Ok(mut pool) = self.buffers.lock() {
            pool.push(buf);
        }
        out
    }

    fn compute(
        &self,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), HashError> {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        self.with_buffer(params.m_cost() as usize, |blocks| {
            argon.hash_password_into_with_memory(password, salt, out, blocks)
        })
        .map_err(|e| HashError::Argon2(e.to_string()))
    }

    fn hash(&self, password: &str) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let mut out = [0u8; 32];
        self.compute(&self.params, password.as_bytes(), salt_raw, &mut out)?;
        self.phc(&salt, &out)
    }

    /// A well-formed hash with the configured parameters that no password matches: a
    /// random output under a random salt. Verifying against it costs exactly one real hash,
    /// and building it costs nothing — no 19 MiB working block held from start-up.
    fn dummy(&self) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut out = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut out);
        self.phc(&salt, &out)
    }

    fn phc(&self, salt: &SaltString, out: &[u8]) -> Result<String, HashError> {
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: (&self.params)
                .try_into()
                .map_err(|e: argon2::password_hash::Error| HashError::Argon2(e.to_string()))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(out).map_err(|e| HashError::Argon2(e.to_string()))?),
        };
        Ok(phc.to_string())
    }

    fn verify(&self, password: &str, stored: &str) -> Verified {
        if stored.starts_with("$2") {
            // The seed's bcrypt hashes: correct ones always move to argon2id.
            let ok = bcrypt::verify(password, stored).unwrap_or(false);
            return Verified {
                ok,
                needs_rehash: true,
            };
        }
        let Ok(phc) = PasswordHash::new(stored) else {
            return Verified {
                ok: false,
                needs_rehash: false,
            };
        };
        let ok = self.verify_argon2(password, &phc).unwrap_or(false);
        let weaker = match Params::try_from(&phc) {
            Ok(p) => {
                phc.algorithm != Ident::new_unwrap("argon2id")
                    || p.m_cost() < self.params.m_cost()
                    || p.t_cost() < self.params.t_cost()
            }
            Err(_) => true,
        };
        Verified {
            ok,
            needs_rehash: weaker,
        }
    }

    fn verify_argon2(&self, password: &str, phc: &PasswordHash<'_>) -> Result<bool, HashError> {
        let algorithm =
            Algorithm::try_from(phc.algorithm).map_err(|e| HashError::Argon2(e.to_string()))?;
        let version = phc
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| HashError::Argon2(e.to_string()))?
            .unwrap_or_default();
        let params = Params::try_from(phc).map_err(|e| HashError::Argon2(e.to_string()))?;
        let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
            return Ok(false);
        };
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let mut out = vec![0u8; expected.len()];
        let argon = Argon2::new(algorithm, version, params.clone());
        self.with_buffer(params.m_cost() as usize, |blocks| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, blocks)
        })
        .map_err(|e| HashError::Argon2(e.to_string()))?;
        // Output's equality is constant-time.
        Ok(Output::new(&out).map_err(|e| HashError::Argon2(e.to_string()))? == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    fn hasher(m: u32, t: u32) -> PasswordHasher {
        PasswordHasher::new(&HashSettings {
            argon2_memory_kib: m,
            argon2_iterations: t,
            argon2_parallelism: 1,
            hash_concurrency: 2,
        })
        .unwrap()
    }

    fn pw(s: &str) -> Password {
        Password::parse("password", s.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_standard_argon2id_phc_strings() {
        let h = hasher(1024, 1);
        let hash = h.hash(&pw("correct horse battery")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        // Any argon2 implementation can verify it.
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
        let v = h
            .verify(&pw("correct horse battery"), Some(&hash))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        let v = h
            .verify(&pw("correct horse batterx"), Some(&hash))
            .await
            .unwrap();
        assert!(!v.ok);
    }

    #[tokio::test]
    async fn every_character_counts_even_past_72_bytes() {
        let h = hasher(1024, 1);
        let long: String = "a".repeat(100);
        let hash = h.hash(&pw(&long)).await.unwrap();
        let mut changed = long.clone().into_bytes();
        changed[79] = b'b';
        let changed = String::from_utf8(changed).unwrap();
        assert!(!h.verify(&pw(&changed), Some(&hash)).await.unwrap().ok);
    }

    #[tokio::test]
    async fn bcrypt_verifies_and_asks_for_rehash() {
        let h = hasher(1024, 1);
        let legacy = bcrypt::hash("Secure@123", 4).unwrap();
        let v = h.verify(&pw("Secure@123"), Some(&legacy)).await.unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
        assert!(!h.verify(&pw("Secure@124"), Some(&legacy)).await.unwrap().ok);
    }

    #[tokio::test]
    async fn weaker_argon2_asks_for_rehash() {
        let weak = hasher(1024, 1).hash(&pw("some password")).await.unwrap();
        let strong = hasher(2048, 2);
        let v = strong
            .verify(&pw("some password"), Some(&weak))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let h = hasher(1024, 1);
        let v = h.verify(&pw("anything"), None).await.unwrap();
        assert!(!v.ok && !v.needs_rehash);
        let v = h.verify(&pw("anything"), Some("garbage")).await.unwrap();
        assert!(!v.ok);
    }
}
