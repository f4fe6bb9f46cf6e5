//! Password hashing: argon2id for everything new, bcrypt verification for hashes imported
//! from the seed, and rehash-on-login for anything weaker than configured.
//!
//! New hashes are computed over the password in Unicode NFKC (`Password::normalised`), and
//! say so: their PHC string carries argon2's associated data `data=bmZrYw` (`nfkc`, see
//! `NORMALISED`). Hashes without it — argon2id made before passwords were normalised, and
//! the seed's bcrypt — were computed over the password as typed, are verified that way,
//! and are replaced by a normalised hash on the next successful login. Verifying reads the
//! marker first and hashes once either way, so a check costs what it did before.
//!
//! Hashing is the one deliberately expensive thing the server does. It runs on a small
//! pool of dedicated threads, one per core by default (`HASH_CONCURRENCY`), never on the
//! async workers; requests wait for it as futures, not as threads. The pool's threads run
//! at a lower scheduling priority (`HASH_NICE`), so a login flood fills every idle cycle
//! but the kernel still hands a core to a cheap request (a session check, a database
//! query) the moment one arrives. Each thread owns one argon2 working block for its whole
//! life: allocating 19 MiB per hash makes glibc keep hundreds of MiB after a burst of
//! logins. A job whose client has gone is skipped before it is hashed; a job that has
//! started runs to the end on its thread, so concurrency and memory stay bounded however
//! clients behave.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use argon2::password_hash::{Ident, Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, AssociatedData, Block, Params, ParamsBuilder, Version};
use rand::rngs::OsRng;
use tokio::sync::oneshot;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::config::HashSettings;
use crate::domain::Password;

/// argon2's associated data on every hash computed over the NFKC form of a password: the
/// marker that tells such a hash from one computed over the password as typed. Associated
/// data, unlike a prefix of our own, is part of the standard PHC string (`data=…`) that the
/// argon2 crate reads and writes, and is bound into the hash: stripping or adding the
/// marker breaks the hash rather than changing how the password is read.
const NORMALISED: &[u8] = b"nfkc";

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("hashing thread failed")]
    Failed,
    #[error("could not start hashing threads: {0}")]
    Spawn(#[from] std::io::Error),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash is bcrypt, weaker argon2 than configured, or computed over the
    /// password as typed rather than normalised: store a new one.
    pub needs_rehash: bool,
}

pub struct PasswordHasher {
    inner: Arc<Inner>,
    jobs: mpsc::Sender<Job>,
    threads: usize,
    /// A valid hash of a random password, checked when the user does not exist so that
    /// "no such user" costs the same time as "wrong password".
    dummy_hash: String,
}

struct Inner {
    params: Params,
}

/// A hashing thread's own argon2 working memory, grown on first use and kept.
type Blocks = Vec<Block>;
type Job = Box<dyn FnOnce(&Inner, &mut Blocks) + Send>;

impl PasswordHasher {
    pub fn new(settings: &HashSettings) -> Result<Self, HashError> {
        let argon2 = |e: argon2::Error| HashError::Argon2(e.to_string());
        let params = ParamsBuilder::new()
            .m_cost(settings.argon2_memory_kib)
            .t_cost(settings.argon2_iterations)
            .p_cost(settings.argon2_parallelism)
            .data(AssociatedData::new(NORMALISED).map_err(argon2)?)
            .build()
            .map_err(argon2)?;
        let threads = match settings.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let inner = Arc::new(Inner { params });
        let dummy_hash = inner.dummy()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let (inner, queue) = (inner.clone(), queue.clone());
            let nice = settings.hash_nice;
            std::thread::Builder::new()
                .name(format!("gatehouse-hash-{n}"))
                .spawn(move || work(&inner, &queue, nice))?;
        }
        Ok(PasswordHasher {
            inner,
            jobs,
            threads,
            dummy_hash,
        })
    }

    /// How many hashes may run at once: the number of hashing threads.
    pub fn concurrency(&self) -> usize {
        self.threads
    }

    /// An argon2id PHC string for a new password, over its NFKC form.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.clone();
        self.run(move |inner, blocks| inner.hash(&password.normalised(), blocks))
            .await?
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
            .run(move |inner, blocks| inner.verify(&password, &stored, blocks))
            .await?;
        Ok(Verified {
            ok: verdict.ok && exists,
            needs_rehash: verdict.needs_rehash && exists,
        })
    }

    /// One hash on the calling thread through the same code path as the pool's threads
    /// (same parameters, a working block reused across calls): what `gatehouse hash-bench`
    /// times.
    pub fn hash_blocking(&self, password: &str, blocks: &mut Blocks) -> Result<String, HashError> {
        let normalised = Zeroizing::new(password.nfkc().collect::<String>());
        self.inner.hash(&normalised, blocks)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Inner, &mut Blocks) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let queued = Instant::now();
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |inner, blocks| {
            if reply.is_closed() {
                // The request was dropped (client gone, timeout) while it queued.
                metrics::counter!("gatehouse_password_hash_abandoned_total").increment(1);
                return;
            }
            metrics::histogram!("gatehouse_password_hash_queue_wait_seconds")
                .record(queued.elapsed().as_secs_f64());
            let started = Instant::now();
            let out = job(inner, blocks);
            metrics::histogram!("gatehouse_password_hash_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            let _ = reply.send(out);
        });
        self.jobs.send(job).map_err(|_| HashError::Failed)?;
        answer.await.map_err(|_| HashError::Failed)
    }
}

/// A hashing thread: lowers its own priority, then runs jobs until the hasher is dropped.
fn work(inner: &Inner, queue: &Mutex<mpsc::Receiver<Job>>, nice: i32) {
    lower_priority(nice);
    let mut blocks = Blocks::new();
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job drops its reply channel, which its caller sees as an error; the
        // thread itself carries on.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(inner, &mut blocks))).is_err() {
            tracing::error!("a password hashing job panicked");
        }
    }
}

/// Raises this thread's nice value by `nice` (Linux keeps one per thread). Failure only
/// costs latency under load, so it is logged, not fatal.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let done = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if done != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the priority of a hashing thread"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

impl Inner {
    /// Runs `f` on the first `blocks` blocks of `buf`, growing it once if needed.
    fn with_blocks<T>(buf: &mut Blocks, blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
        if buf.len() < blocks {
            buf.resize(blocks, Block::default());
        }
        f(&mut buf[..blocks])
    }

    fn compute(
        &self,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
        buf: &mut Blocks,
    ) -> Result<(), HashError> {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        Self::with_blocks(buf, params.m_cost() as usize, |blocks| {
            argon.hash_password_into_with_memory(password, salt, out, blocks)
        })
        .map_err(|e| HashError::Argon2(e.to_string()))
    }

    /// A hash of `password`, already in NFKC, under the configured parameters (which carry
    /// the `NORMALISED` marker).
    fn hash(&self, password: &str, buf: &mut Blocks) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let mut out = [0u8; 32];
        self.compute(&self.params, password.as_bytes(), salt_raw, &mut out, buf)?;
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

    fn verify(&self, password: &Password, stored: &str, buf: &mut Blocks) -> Verified {
        if stored.starts_with("$2") {
            // The seed's bcrypt hashes, over the password as typed: correct ones always
            // move to argon2id.
            let ok = bcrypt::verify(password.expose(), stored).unwrap_or(false);
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
        let params = Params::try_from(&phc).ok();
        // The marker decides which form of the password this hash is over; either way it
        // is one hash.
        let normalised = params.as_ref().is_some_and(|p| p.data() == NORMALISED);
        let ok = if normalised {
            self.verify_argon2(&password.normalised(), &phc, buf)
        } else {
            self.verify_argon2(password.expose(), &phc, buf)
        }
        .unwrap_or(false);
        let weaker = match params {
            Some(p) => {
                phc.algorithm != Ident::new_unwrap("argon2id")
                    || p.m_cost() < self.params.m_cost()
                    || p.t_cost() < self.params.t_cost()
                    || !normalised
            }
            None => true,
        };
        Verified {
            ok,
            needs_rehash: weaker,
        }
    }

    fn verify_argon2(
        &self,
        password: &str,
        phc: &PasswordHash<'_>,
        buf: &mut Blocks,
    ) -> Result<bool, HashError> {
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
        Self::with_blocks(buf, params.m_cost() as usize, |blocks| {
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
            hash_nice: 0,
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
        assert!(
            hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1,data=bmZrYw$"),
            "{hash}"
        );
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
    async fn composed_and_decomposed_spellings_are_one_password() {
        let h = hasher(1024, 1);
        let nfc = "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e";
        let nfd = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
        let hash = h.hash(&pw(nfc)).await.unwrap();
        for typed in [nfc, nfd] {
            let v = h.verify(&pw(typed), Some(&hash)).await.unwrap();
            assert_eq!(
                v,
                Verified {
                    ok: true,
                    needs_rehash: false
                },
                "{typed:?}"
            );
        }
        // Compatibility forms too: full-width letters are their ASCII letters.
        let hash = h.hash(&pw("plain ascii words")).await.unwrap();
        let wide = "\u{ff50}lain ascii words";
        assert!(h.verify(&pw(wide), Some(&hash)).await.unwrap().ok);
    }

    /// An argon2id hash as this server made them before passwords were normalised: over
    /// the bytes as typed, without the marker.
    fn unmarked_hash(password: &str) -> String {
        use argon2::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
    }

    #[tokio::test]
    async fn unmarked_argon2_verifies_as_typed_and_asks_for_rehash() {
        let h = hasher(1024, 1);
        let nfd = "cafe\u{301} au lait";
        let legacy = unmarked_hash(nfd);
        assert!(!legacy.contains("data="), "{legacy}");
        let v = h.verify(&pw(nfd), Some(&legacy)).await.unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
        // It was computed over the NFD bytes: the NFC spelling is another password to it,
        // until the rehash.
        assert!(
            !h.verify(&pw("caf\u{e9} au lait"), Some(&legacy))
                .await
                .unwrap()
                .ok
        );
        let rehashed = h.hash(&pw(nfd)).await.unwrap();
        let v = h
            .verify(&pw("caf\u{e9} au lait"), Some(&rehashed))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn the_marker_is_bound_into_the_hash() {
        let h = hasher(1024, 1);
        let hash = h.hash(&pw("some password")).await.unwrap();
        let stripped = hash.replace(",data=bmZrYw", "");
        assert!(
            !h.verify(&pw("some password"), Some(&stripped))
                .await
                .unwrap()
                .ok
        );
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

    /// Nice values of this process's threads whose name starts with `prefix`.
    #[cfg(target_os = "linux")]
    fn thread_nice_values(prefix: &str) -> Vec<i64> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            // Fields after the parenthesised name; nice is field 19 overall.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
        }
        out
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_lower_priority() {
        let h = PasswordHasher::new(&HashSettings {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            hash_concurrency: 3,
            hash_nice: 7,
        })
        .unwrap();
        assert_eq!(h.concurrency(), 3);
        assert!(h.hash(&pw("first password")).await.is_ok());
        // Each thread lowers itself as it starts; on a loaded machine one may not have run
        // yet, so wait (bounded) for all three.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let nice = thread_nice_values("gatehouse-hash");
            if nice.iter().filter(|n| **n == 7).count() >= 3 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{nice:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The caller's thread is untouched.
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let own = &own[own.rfind(')').unwrap() + 2..];
        assert_eq!(own.split(' ').nth(16), Some("0"));
    }

    #[tokio::test]
    async fn many_requests_share_the_threads_and_all_get_answers() {
        let h = Arc::new(hasher(1024, 1));
        let stored = h.hash(&pw("shared password")).await.unwrap();
        let checks = (0..20).map(|i| {
            let (h, stored) = (h.clone(), stored.clone());
            tokio::spawn(async move {
                let guess = if i % 2 == 0 {
                    "shared password"
                } else {
                    "other password"
                };
                h.verify(&pw(guess), Some(&stored)).await.unwrap().ok == (i % 2 == 0)
            })
        });
        for check in checks {
            assert!(check.await.unwrap());
        }
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
