//! Password hashing: argon2id for everything new, the seed's bcrypt hashes and argon2
//! hashes weaker than configured wrapped in argon2id, rehash-on-login for anything weaker
//! than configured, and the floor that keeps a failed login's timing from telling which
//! hash (if any) it was checked against.
//!
//! Wrapped bcrypt (OWASP Password Storage Cheat Sheet, "Upgrading Legacy Hashes"):
//! `import-seed` does not store the old server's bcrypt hashes as they are, but argon2id
//! computed over them, in the self-describing form
//!
//! ```text
//! $gh-wrap$2b$12$<22-char bcrypt salt>$argon2id$v=19$m=…,t=…,p=…,data=YmNyeXB0$<salt>$<hash>
//! ```
//!
//! that is `$gh-wrap`, then the bcrypt setting as crypt(3) writes it (variant, cost,
//! salt: what is needed to recompute the bcrypt step), then a standard argon2id PHC string
//! whose input is the whole 60-character bcrypt hash and whose associated data is `bcrypt`
//! (`data=YmNyeXB0`). To verify, bcrypt the password as typed under that setting, then
//! verify the argon2id layer over the result; editing the setting changes the bcrypt
//! output and so fails the argon2id check. A stolen database then holds no bare bcrypt,
//! and the first successful login replaces the wrapped hash with a plain argon2id one.
//! Bare bcrypt hashes already stored by an older import still verify and are rehashed the
//! same way.
//!
//! Wrapped argon2 (the same OWASP section, for raised `ARGON2_*` parameters): an argon2
//! hash weaker than configured (memory, iterations or lanes below the settings) is
//! replaced in place, without the password, by `gatehouse upgrade-hashes` or the start-up
//! pass (`crate::upgrade`), with
//!
//! ```text
//! $gh-wrap-argon2$argon2id$v=19$m=…,t=…,p=…[,data=bmZrYw]$<salt>$argon2id$v=19$m=…,t=…,p=…,data=YXJnb24y$<salt>$<hash>
//! ```
//!
//! that is `$gh-wrap-argon2`, then the old PHC string without its hash (algorithm,
//! version, parameters with its `nfkc` marker if it had one, salt: what is needed to
//! recompute it), then a standard argon2id PHC string at the configured parameters whose
//! input is the old hash's raw 32-byte output and whose associated data is `argon2`
//! (`data=YXJnb24y`). To verify, compute the old hash of the password (normalised or as
//! typed, as its marker says), then verify the new layer over its output; editing any
//! part of the old setting changes that output and fails the check. Only hashes with a
//! 32-byte output (what this server and the argon2 crate write) are wrapped, and a
//! wrapped hash is not wrapped again: if the parameters rise once more it waits for its
//! user's next login, like a wrapped bcrypt hash, which then stores a plain hash.
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
use std::time::{Duration, Instant};

use argon2::password_hash::{Ident, Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, AssociatedData, Block, Params, ParamsBuilder, Version};
use base64::Engine as _;
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

/// What a wrapped bcrypt hash starts with (see the module header).
const WRAPPED: &str = "$gh-wrap";
/// Associated data of a wrapped hash's argon2id layer: says its input is a bcrypt hash,
/// not a password, so the layer alone can never pass for a password hash.
const WRAPPED_DATA: &[u8] = b"bcrypt";
/// What a wrapped argon2 hash starts with (see the module header). Checked before
/// `WRAPPED`, which it starts with.
const WRAPPED_ARGON2: &str = "$gh-wrap-argon2";
/// Associated data of a wrapped argon2 hash's outer layer: its input is an argon2 output.
const WRAPPED_ARGON2_DATA: &[u8] = b"argon2";
/// The raw output length of the argon2 hashes that are wrapped (the PHC default).
const ARGON2_OUTPUT_LEN: usize = 32;
/// `$2b$12$` and the 22-character salt.
const BCRYPT_SETTING_LEN: usize = 29;

/// How long the failure floor remembers a slow verification: it is the slowest seen in
/// the current window or the one before, so between one and two of these.
const FLOOR_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("hashing thread failed")]
    Failed,
    #[error("could not start hashing threads: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("not a bcrypt hash")]
    NotBcrypt,
    #[error("not an argon2 hash weaker than the configured parameters")]
    NotWeaker,
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash is bcrypt, weaker argon2 than configured, or computed over the
    /// password as typed rather than normalised: store a new one.
    pub needs_rehash: bool,
}

/// The earliest moment a failed login may be answered: when the verification started plus
/// the slowest verification seen lately (`Floor`). Failures answered then take the same
/// time whichever hash they were checked against — a wrapped bcrypt one (bcrypt plus
/// argon2id), an old argon2 one weaker than the dummy, or the dummy for no account.
#[derive(Debug, Clone, Copy)]
pub struct FailureHold(Instant);

impl FailureHold {
    /// Waits until the failure may be answered.
    pub async fn wait(self) {
        tokio::time::sleep_until(self.0.into()).await;
    }
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
    /// The configured parameters with `WRAPPED_DATA` instead of the `NORMALISED` marker.
    wrap_params: Params,
    /// The configured parameters with `WRAPPED_ARGON2_DATA` instead.
    wrap_argon2_params: Params,
    floor: Floor,
}

/// The slowest verification seen lately, kept per window of `FLOOR_WINDOW`: the floor is
/// the larger of the current and the previous window's maximum, so it follows the slowest
/// stored format in use (a wrapped bcrypt user's check, or the dummy after `ARGON2_*` was
/// raised) and forgets a one-off outlier (a check slowed by a busy machine) within two
/// windows. Every verification raises it, successful or not, known user or not: the
/// floor is one number for every identifier at a given moment, so holding a failure to it
/// says nothing about the identifier asked for. Only the first check of a format slower
/// than any seen in the last window or two shows its own cost, once.
struct Floor(Mutex<FloorWindows>);

struct FloorWindows {
    started: Instant,
    current: Duration,
    previous: Duration,
}

impl Floor {
    fn new() -> Floor {
        Floor(Mutex::new(FloorWindows {
            started: Instant::now(),
            current: Duration::ZERO,
            previous: Duration::ZERO,
        }))
    }

    /// Records one verification's time and returns the floor including it.
    fn record(&self, took: Duration) -> Duration {
        self.record_at(Instant::now(), took)
    }

    /// `record`, the windows first moved on to `now`. A poisoned lock still holds two
    /// durations worth keeping.
    fn record_at(&self, now: Instant, took: Duration) -> Duration {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(w.started);
        if elapsed >= FLOOR_WINDOW {
            w.previous = if elapsed >= 2 * FLOOR_WINDOW {
                Duration::ZERO
            } else {
                w.current
            };
            w.current = Duration::ZERO;
            w.started = now;
        }
        w.current = w.current.max(took);
        w.current.max(w.previous)
    }
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
        let with_data = |data: &[u8]| {
            ParamsBuilder::new()
                .m_cost(settings.argon2_memory_kib)
                .t_cost(settings.argon2_iterations)
                .p_cost(settings.argon2_parallelism)
                .data(AssociatedData::new(data).map_err(argon2)?)
                .build()
                .map_err(argon2)
        };
        let wrap_params = with_data(WRAPPED_DATA)?;
        let wrap_argon2_params = with_data(WRAPPED_ARGON2_DATA)?;
        let inner = Arc::new(Inner {
            params,
            wrap_params,
            wrap_argon2_params,
            floor: Floor::new(),
        });
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

    /// Wraps a bcrypt hash in argon2id at the configured parameters (see the module
    /// header), on a hashing thread. `NotBcrypt` if `bcrypt` is not a well-formed
    /// `$2a$`/`$2b$`/`$2y$` hash.
    pub async fn wrap_bcrypt(&self, bcrypt: &str) -> Result<String, HashError> {
        let bcrypt = Zeroizing::new(bcrypt.to_owned());
        self.run(move |inner, blocks| inner.wrap(&bcrypt, blocks))
            .await?
    }

    /// Whether `stored` is a plain argon2 hash that `wrap_weaker` would wrap: parameters
    /// below the configured ones, a 32-byte output, over the password (normalised or as
    /// typed). Cheap: parses, hashes nothing.
    pub fn is_weaker_argon2(&self, stored: &str) -> bool {
        self.inner.weaker_argon2(stored).is_some()
    }

    /// Wraps a weaker argon2 hash in argon2id at the configured parameters (see the module
    /// header), on a hashing thread: one hash, no password needed. `NotWeaker` for
    /// anything `is_weaker_argon2` refuses.
    pub async fn wrap_weaker(&self, stored: &str) -> Result<String, HashError> {
        let stored = Zeroizing::new(stored.to_owned());
        self.run(move |inner, blocks| inner.wrap_argon2(&stored, blocks))
            .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no
    /// user, so that "no such user" costs a hash at the configured parameters.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        Ok(self.verify_held(password, stored).await?.0)
    }

    /// `verify`, and when a failure may be answered so that its timing tells nothing about
    /// the stored hash (see `Floor`). What the hold is measured from is when the check
    /// started on its thread, so waiting in the queue is not counted twice.
    pub async fn verify_held(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<(Verified, FailureHold), HashError> {
        let exists = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.clone();
        let (verdict, hold) = self
            .run(move |inner, blocks| {
                let started = Instant::now();
                let verdict = inner.verify(&password, &stored, blocks);
                let floor = inner.floor.record(started.elapsed());
                (verdict, FailureHold(started + floor))
            })
            .await?;
        Ok((
            Verified {
                ok: verdict.ok && exists,
                needs_rehash: verdict.needs_rehash && exists,
            },
            hold,
        ))
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
        Self::phc(&self.params, &salt, &out)
    }

    /// `$gh-wrap`, the bcrypt setting, and argon2id over the whole bcrypt hash.
    fn wrap(&self, bcrypt: &str, buf: &mut Blocks) -> Result<String, HashError> {
        let (setting, hash) = (
            bcrypt.get(..BCRYPT_SETTING_LEN),
            bcrypt.get(BCRYPT_SETTING_LEN..),
        );
        let (Some(setting), Some(hash)) = (setting, hash) else {
            return Err(HashError::NotBcrypt);
        };
        // Both parts must decode (canonically: the engine refuses stray trailing bits),
        // or the bcrypt step could never reproduce this string at login.
        let decoded = bcrypt::BASE_64
            .decode(hash)
            .map_err(|_| HashError::NotBcrypt)?;
        if BcryptSetting::parse(setting).is_none() || decoded.len() != 23 {
            return Err(HashError::NotBcrypt);
        }
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let mut out = [0u8; 32];
        self.compute(
            &self.wrap_params,
            bcrypt.as_bytes(),
            salt_raw,
            &mut out,
            buf,
        )?;
        Ok(format!(
            "{WRAPPED}{setting}{}",
            Self::phc(&self.wrap_params, &salt, &out)?
        ))
    }

    /// `stored` parsed, when it is a plain argon2 hash over a password with parameters
    /// below the configured ones and a 32-byte output: what `wrap_argon2` takes.
    fn weaker_argon2<'a>(&self, stored: &'a str) -> Option<PasswordHash<'a>> {
        if stored.starts_with(WRAPPED) {
            return None;
        }
        let phc = PasswordHash::new(stored).ok()?;
        Algorithm::try_from(phc.algorithm).ok()?;
        let params = Params::try_from(&phc).ok()?;
        let over_password = params.data().is_empty() || params.data() == NORMALISED;
        let output_ok = phc.hash.is_some_and(|h| h.len() == ARGON2_OUTPUT_LEN);
        (over_password && output_ok && phc.salt.is_some() && self.weaker(&params)).then_some(phc)
    }

    /// Memory, iterations or lanes below the configured parameters.
    fn weaker(&self, p: &Params) -> bool {
        p.m_cost() < self.params.m_cost()
            || p.t_cost() < self.params.t_cost()
            || p.p_cost() < self.params.p_cost()
    }

    /// `$gh-wrap-argon2`, the old hash's setting, and argon2id over its raw output.
    fn wrap_argon2(&self, stored: &str, buf: &mut Blocks) -> Result<String, HashError> {
        let old = self.weaker_argon2(stored).ok_or(HashError::NotWeaker)?;
        let raw = old.hash.ok_or(HashError::NotWeaker)?;
        let setting = PasswordHash { hash: None, ..old };
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let mut out = [0u8; 32];
        self.compute(
            &self.wrap_argon2_params,
            raw.as_bytes(),
            salt_raw,
            &mut out,
            buf,
        )?;
        Ok(format!(
            "{WRAPPED_ARGON2}{setting}{}",
            Self::phc(&self.wrap_argon2_params, &salt, &out)?
        ))
    }

    /// A well-formed hash with the configured parameters that no password matches: a
    /// random output under a random salt. Verifying against it costs exactly one real hash,
    /// and building it costs nothing — no 19 MiB working block held from start-up.
    fn dummy(&self) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut out = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut out);
        Self::phc(&self.params, &salt, &out)
    }

    fn phc(params: &Params, salt: &SaltString, out: &[u8]) -> Result<String, HashError> {
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: params
                .try_into()
                .map_err(|e: argon2::password_hash::Error| HashError::Argon2(e.to_string()))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(out).map_err(|e| HashError::Argon2(e.to_string()))?),
        };
        Ok(phc.to_string())
    }

    fn verify(&self, password: &Password, stored: &str, buf: &mut Blocks) -> Verified {
        if let Some(wrapped) = stored.strip_prefix(WRAPPED_ARGON2) {
            // Like wrapped bcrypt: always replaced by a plain hash at the next login.
            return Verified {
                ok: self
                    .verify_wrapped_argon2(password, wrapped, buf)
                    .unwrap_or(false),
                needs_rehash: true,
            };
        }
        if let Some(wrapped) = stored.strip_prefix(WRAPPED) {
            // Correct or not, a wrapped hash is due for replacement by a plain one; a
            // malformed one never verifies.
            return Verified {
                ok: self.verify_wrapped(password, wrapped, buf).unwrap_or(false),
                needs_rehash: true,
            };
        }
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
            self.verify_argon2(password.normalised().as_bytes(), &phc, buf)
        } else {
            self.verify_argon2(password.expose().as_bytes(), &phc, buf)
        }
        .unwrap_or(false);
        let weaker = match params {
            Some(p) => {
                phc.algorithm != Ident::new_unwrap("argon2id") || self.weaker(&p) || !normalised
            }
            None => true,
        };
        Verified {
            ok,
            needs_rehash: weaker,
        }
    }

    /// `wrapped` is what follows `$gh-wrap`: the bcrypt setting, then the argon2id layer.
    /// `None` when it is malformed.
    fn verify_wrapped(&self, password: &Password, wrapped: &str, buf: &mut Blocks) -> Option<bool> {
        let setting = BcryptSetting::parse(wrapped.get(..BCRYPT_SETTING_LEN)?)?;
        let layer = PasswordHash::new(wrapped.get(BCRYPT_SETTING_LEN..)?).ok()?;
        let params = Params::try_from(&layer).ok()?;
        if layer.algorithm != Algorithm::Argon2id.ident() || params.data() != WRAPPED_DATA {
            return None;
        }
        // bcrypt over the password as typed, as the old server hashed it (its first 72
        // bytes: bcrypt's own limit, as for a bare bcrypt hash).
        let bcrypt = Zeroizing::new(
            bcrypt::hash_with_salt(password.expose(), setting.cost, setting.salt)
                .ok()?
                .format_for_version(setting.version),
        );
        self.verify_argon2(bcrypt.as_bytes(), &layer, buf).ok()
    }

    /// `wrapped` is what follows `$gh-wrap-argon2`: the old hash's setting, then the
    /// argon2id layer (the last five `$` fields). `None` when it is malformed.
    fn verify_wrapped_argon2(
        &self,
        password: &Password,
        wrapped: &str,
        buf: &mut Blocks,
    ) -> Option<bool> {
        let setting = wrapped.rsplitn(6, '$').nth(5)?;
        let layer = PasswordHash::new(wrapped.get(setting.len()..)?).ok()?;
        let layer_params = Params::try_from(&layer).ok()?;
        if layer.algorithm != Algorithm::Argon2id.ident()
            || layer_params.data() != WRAPPED_ARGON2_DATA
        {
            return None;
        }
        let old = PasswordHash::new(setting).ok()?;
        let params = Params::try_from(&old).ok()?;
        let (None, Some(salt)) = (old.hash, old.salt) else {
            return None;
        };
        let input = match params.data() {
            NORMALISED => password.normalised(),
            b"" => Zeroizing::new(password.expose().to_owned()),
            _ => return None,
        };
        let algorithm = Algorithm::try_from(old.algorithm).ok()?;
        let version = old
            .version
            .map(Version::try_from)
            .transpose()
            .ok()?
            .unwrap_or_default();
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt.decode_b64(&mut salt_bytes).ok()?;
        let mut raw = Zeroizing::new([0u8; ARGON2_OUTPUT_LEN]);
        let argon = Argon2::new(algorithm, version, params.clone());
        Self::with_blocks(buf, params.m_cost() as usize, |blocks| {
            argon.hash_password_into_with_memory(input.as_bytes(), salt_raw, &mut *raw, blocks)
        })
        .ok()?;
        self.verify_argon2(&*raw, &layer, buf).ok()
    }

    fn verify_argon2(
        &self,
        password: &[u8],
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
            argon.hash_password_into_with_memory(password, salt_raw, &mut out, blocks)
        })
        .map_err(|e| HashError::Argon2(e.to_string()))?;
        // Output's equality is constant-time.
        Ok(Output::new(&out).map_err(|e| HashError::Argon2(e.to_string()))? == expected)
    }
}

/// The setting part of a bcrypt hash, `$2b$12$<22-char salt>`: what a wrapped hash keeps
/// to recompute the bcrypt step.
struct BcryptSetting {
    version: bcrypt::Version,
    cost: u32,
    salt: [u8; 16],
}

impl BcryptSetting {
    fn parse(setting: &str) -> Option<BcryptSetting> {
        let version = match setting.get(..4)? {
            "$2a$" => bcrypt::Version::TwoA,
            "$2b$" => bcrypt::Version::TwoB,
            "$2y$" => bcrypt::Version::TwoY,
            _ => return None,
        };
        let cost = setting.get(4..6)?;
        if !cost.bytes().all(|b| b.is_ascii_digit()) || setting.get(6..7)? != "$" {
            return None;
        }
        let salt = bcrypt::BASE_64.decode(setting.get(7..)?).ok()?;
        Some(BcryptSetting {
            version,
            cost: cost.parse().ok()?,
            salt: salt.try_into().ok()?,
        })
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

    /// A seed-style bcrypt hash (cost 4: the format, not the cost, is under test).
    fn seed_bcrypt(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    #[tokio::test]
    async fn a_wrapped_bcrypt_hash_keeps_the_bcrypt_setting_and_an_argon2id_layer() {
        let h = hasher(1024, 1);
        let legacy = seed_bcrypt("Secure@123");
        let wrapped = h.wrap_bcrypt(&legacy).await.unwrap();
        let rest = wrapped.strip_prefix("$gh-wrap").unwrap();
        // The setting, as crypt(3) writes it: variant, cost, salt.
        assert_eq!(&rest[..29], &legacy[..29], "{wrapped}");
        // Then a standard PHC string at the configured parameters, marked as over bcrypt.
        let layer = PasswordHash::new(&rest[29..]).unwrap();
        assert_eq!(layer.algorithm, Algorithm::Argon2id.ident());
        let params = Params::try_from(&layer).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (1024, 1, 1)
        );
        assert_eq!(params.data(), b"bcrypt");
        assert!(rest[29..].starts_with("$argon2id$v=19$m=1024,t=1,p=1,data=YmNyeXB0$"));
        // The bcrypt output itself is not stored.
        assert!(!wrapped.contains(&legacy[29..]), "{wrapped}");
        // Any argon2 implementation can check the layer against the bcrypt hash.
        assert!(Argon2::default()
            .verify_password(legacy.as_bytes(), &layer)
            .is_ok());
    }

    #[tokio::test]
    async fn a_wrapped_bcrypt_hash_verifies_the_old_password_and_asks_for_rehash() {
        let h = hasher(1024, 1);
        for variant in ["$2a$", "$2b$", "$2y$"] {
            // The variants differ only in their name: one computation, three spellings.
            let legacy = seed_bcrypt("Secure@123").replacen("$2b$", variant, 1);
            let wrapped = h.wrap_bcrypt(&legacy).await.unwrap();
            let v = h.verify(&pw("Secure@123"), Some(&wrapped)).await.unwrap();
            assert_eq!(
                v,
                Verified {
                    ok: true,
                    needs_rehash: true
                },
                "{wrapped}"
            );
            for wrong in ["Secure@124", "secure@123", "Secure@1234"] {
                let v = h.verify(&pw(wrong), Some(&wrapped)).await.unwrap();
                assert!(!v.ok, "{wrong}");
            }
        }
        // As the password typed, like bare bcrypt: the NFKC spelling is another password.
        let nfd = "cafe\u{301} au lait";
        let wrapped = h.wrap_bcrypt(&seed_bcrypt(nfd)).await.unwrap();
        assert!(h.verify(&pw(nfd), Some(&wrapped)).await.unwrap().ok);
        assert!(
            !h.verify(&pw("caf\u{e9} au lait"), Some(&wrapped))
                .await
                .unwrap()
                .ok
        );
    }

    #[tokio::test]
    async fn a_tampered_wrapped_hash_never_verifies() {
        let h = hasher(1024, 1);
        let legacy = seed_bcrypt("Secure@123");
        let wrapped = h.wrap_bcrypt(&legacy).await.unwrap();
        let setting_end = "$gh-wrap".len() + 29;
        let salt_char = |c: u8| {
            let mut b = wrapped.clone().into_bytes();
            let i = "$gh-wrap$2b$04$".len() + 3;
            b[i] = if b[i] == c { b'A' } else { c };
            String::from_utf8(b).unwrap()
        };
        let last = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            let i = b.len() - 2;
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let tampered = [
            // The bcrypt setting: cost, variant, a salt character.
            wrapped.replacen("$2b$04$", "$2b$05$", 1),
            wrapped.replacen("$2b$04$", "$2a$04$", 1),
            salt_char(b'z'),
            // The argon2id layer: its output, its parameters, its marker.
            last(&wrapped),
            wrapped.replacen("t=1", "t=2", 1),
            wrapped.replacen(",data=YmNyeXB0", "", 1),
            wrapped.replacen("data=YmNyeXB0", "data=bmZrYw", 1),
            // Structure: a layer alone, a setting alone, a cut, another prefix.
            wrapped[setting_end..].to_owned(),
            wrapped[..setting_end].to_owned(),
            wrapped[..wrapped.len() - 10].to_owned(),
            wrapped.replacen("$gh-wrap$", "$gh-wrap$$", 1),
            wrapped.replacen("$argon2id$", "$argon2i$", 1),
            "$gh-wrap".to_owned(),
        ];
        for t in &tampered {
            assert_ne!(t, &wrapped);
            let v = h.verify(&pw("Secure@123"), Some(t)).await.unwrap();
            assert!(!v.ok, "{t}");
        }
        // And the untouched one still does.
        assert!(
            h.verify(&pw("Secure@123"), Some(&wrapped))
                .await
                .unwrap()
                .ok
        );
    }

    #[tokio::test]
    async fn a_wrapped_argon2_hash_keeps_the_old_setting_and_an_argon2id_layer() {
        let old = hasher(1024, 1).hash(&pw("some password")).await.unwrap();
        let strong = hasher(2048, 2);
        assert!(strong.is_weaker_argon2(&old));
        let wrapped = strong.wrap_weaker(&old).await.unwrap();
        let (setting, old_output) = old.rsplit_once('$').unwrap();
        let rest = wrapped.strip_prefix("$gh-wrap-argon2").unwrap();
        // The old PHC string without its hash: what recomputes it.
        assert_eq!(&rest[..setting.len()], setting, "{wrapped}");
        assert!(!wrapped.contains(old_output), "{wrapped}");
        // Then a standard PHC string at the configured parameters, marked as over argon2.
        let layer = PasswordHash::new(&rest[setting.len()..]).unwrap();
        let params = Params::try_from(&layer).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (2048, 2, 1)
        );
        assert_eq!(params.data(), b"argon2");
        // Any argon2 implementation can check the layer against the old raw output.
        let raw = PasswordHash::new(&old).unwrap().hash.unwrap();
        assert!(Argon2::default()
            .verify_password(raw.as_bytes(), &layer)
            .is_ok());
        // Wrapped once: not a candidate again, and nor is a hash at the parameters.
        assert!(!strong.is_weaker_argon2(&wrapped));
        assert!(matches!(
            strong.wrap_weaker(&wrapped).await,
            Err(HashError::NotWeaker)
        ));
        let current = strong.hash(&pw("some password")).await.unwrap();
        assert!(!strong.is_weaker_argon2(&current));
    }

    #[tokio::test]
    async fn a_wrapped_argon2_hash_verifies_the_old_password_and_asks_for_rehash() {
        let strong = hasher(2048, 2);
        // A marked (normalised) hash and an unmarked one (as typed), each weaker in one way.
        let nfd = "cafe\u{301} au lait";
        let marked = hasher(1024, 2).hash(&pw(nfd)).await.unwrap();
        let unmarked = unmarked_hash(nfd);
        for old in [&marked, &unmarked] {
            let wrapped = strong.wrap_weaker(old).await.unwrap();
            let v = strong.verify(&pw(nfd), Some(&wrapped)).await.unwrap();
            assert_eq!(
                v,
                Verified {
                    ok: true,
                    needs_rehash: true
                },
                "{wrapped}"
            );
            assert!(
                !strong
                    .verify(&pw("cafe au lait"), Some(&wrapped))
                    .await
                    .unwrap()
                    .ok
            );
        }
        // The password is read as the old hash read it: the NFC spelling matches the
        // normalised hash's wrap, not the as-typed one's.
        let nfc = pw("caf\u{e9} au lait");
        let marked = strong.wrap_weaker(&marked).await.unwrap();
        let unmarked = strong.wrap_weaker(&unmarked).await.unwrap();
        assert!(strong.verify(&nfc, Some(&marked)).await.unwrap().ok);
        assert!(!strong.verify(&nfc, Some(&unmarked)).await.unwrap().ok);
        // Fewer lanes than configured is weaker too.
        let lanes = PasswordHasher::new(&HashSettings {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 2,
            hash_concurrency: 1,
            hash_nice: 0,
        })
        .unwrap();
        let one_lane = hasher(1024, 1).hash(&pw("some password")).await.unwrap();
        assert!(lanes.is_weaker_argon2(&one_lane));
        let wrapped = lanes.wrap_weaker(&one_lane).await.unwrap();
        assert!(
            lanes
                .verify(&pw("some password"), Some(&wrapped))
                .await
                .unwrap()
                .ok
        );
    }

    #[tokio::test]
    async fn a_tampered_wrapped_argon2_hash_never_verifies() {
        let strong = hasher(2048, 2);
        let old = hasher(1024, 1).hash(&pw("some password")).await.unwrap();
        let wrapped = strong.wrap_weaker(&old).await.unwrap();
        let setting_len = "$gh-wrap-argon2".len() + old.rfind('$').unwrap();
        let at = |i: usize| {
            let mut b = wrapped.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let layer = &wrapped[setting_len..];
        let tampered = [
            // The old setting: its algorithm, version, parameters, marker, salt.
            wrapped.replacen("$argon2id$v=19$m=1024", "$argon2i$v=19$m=1024", 1),
            wrapped.replacen("$argon2id$v=19$m=1024", "$argon2id$v=16$m=1024", 1),
            wrapped.replacen("m=1024,t=1", "m=1024,t=2", 1),
            wrapped.replacen("m=1024,", "m=1032,", 1),
            wrapped.replacen("p=1,data=bmZrYw$", "p=1$", 1),
            at(setting_len - 3),
            // The outer layer: its output, its parameters, its marker, its salt.
            at(wrapped.len() - 2),
            wrapped.replacen("m=2048,t=2", "m=2048,t=3", 1),
            wrapped.replacen("data=YXJnb24y", "data=bmZrYw", 1),
            wrapped.replacen(",data=YXJnb24y", "", 1),
            at(wrapped.len() - 50),
            // Structure: the layer alone, the setting alone, the old hash itself under the
            // prefix, a cut, the bcrypt prefix, a doubled separator.
            layer.to_owned(),
            wrapped[..setting_len].to_owned(),
            format!("$gh-wrap-argon2{old}"),
            wrapped[..wrapped.len() - 10].to_owned(),
            wrapped.replacen("$gh-wrap-argon2$", "$gh-wrap$", 1),
            wrapped.replacen("$gh-wrap-argon2$", "$gh-wrap-argon2$$", 1),
            "$gh-wrap-argon2".to_owned(),
        ];
        for t in &tampered {
            assert_ne!(t, &wrapped);
            let v = strong.verify(&pw("some password"), Some(t)).await.unwrap();
            assert!(!v.ok, "{t}");
        }
        assert!(
            strong
                .verify(&pw("some password"), Some(&wrapped))
                .await
                .unwrap()
                .ok
        );
    }

    #[tokio::test]
    async fn only_weaker_plain_argon2_is_wrapped() {
        let strong = hasher(2048, 2);
        let bcrypt = seed_bcrypt("Secure@123");
        let wrapped_bcrypt = hasher(1024, 1).wrap_bcrypt(&bcrypt).await.unwrap();
        let weak = hasher(1024, 1).hash(&pw("some password")).await.unwrap();
        // A 64-byte output is a valid argon2 hash this server did not write: left alone.
        let long = {
            use argon2::PasswordHasher as _;
            let salt = SaltString::generate(&mut OsRng);
            Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(1024, 1, 1, Some(64)).unwrap(),
            )
            .hash_password(b"some password", &salt)
            .unwrap()
            .to_string()
        };
        for not in [
            bcrypt,
            wrapped_bcrypt,
            long,
            weak.replacen("data=bmZrYw", "data=YmNyeXB0", 1),
            "garbage".to_owned(),
            String::new(),
        ] {
            assert!(!strong.is_weaker_argon2(&not), "{not}");
            assert!(
                matches!(strong.wrap_weaker(&not).await, Err(HashError::NotWeaker)),
                "{not}"
            );
        }
        assert!(strong.is_weaker_argon2(&weak));
    }

    #[tokio::test]
    async fn only_well_formed_bcrypt_is_wrapped() {
        let h = hasher(1024, 1);
        let legacy = seed_bcrypt("Secure@123");
        for bad in [
            "Secure@123".to_owned(),
            legacy[..59].to_owned(),
            legacy.replacen("$2b$", "$2x$", 1),
            legacy.replacen("$04$", "$4$$", 1),
            format!("{}!", &legacy[..59]),
            String::new(),
        ] {
            assert!(
                matches!(h.wrap_bcrypt(&bad).await, Err(HashError::NotBcrypt)),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_failure_is_held_to_the_slowest_recent_verification() {
        let h = hasher(1024, 1);
        let wrapped = h.wrap_bcrypt(&seed_bcrypt("Secure@123")).await.unwrap();
        // A slow check (bcrypt, then argon2id) raises the floor...
        let (v, _) = h
            .verify_held(&pw("wrong password"), Some(&wrapped))
            .await
            .unwrap();
        assert!(!v.ok);
        let floor = h.inner.floor.record(Duration::ZERO);
        assert!(floor > Duration::ZERO);
        // ... and a cheaper one (the dummy) is held to it, measured from its own start.
        let started = Instant::now();
        let (v, hold) = h.verify_held(&pw("wrong password"), None).await.unwrap();
        assert!(!v.ok);
        hold.wait().await;
        assert!(
            started.elapsed() >= floor,
            "{:?} < {floor:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_floor_forgets_a_slow_check_after_one_to_two_windows() {
        let floor = Floor::new();
        assert_eq!(
            floor.record(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(
            floor.record(Duration::from_millis(20)),
            Duration::from_millis(300)
        );
        let start = floor.0.lock().unwrap().started;
        let later = |halves: u32| start + FLOOR_WINDOW * halves / 2;
        // One and a half windows on: the previous window still counts.
        assert_eq!(
            floor.record_at(later(3), Duration::from_millis(20)),
            Duration::from_millis(300)
        );
        // Another one and a half: the slow check's window is two back, forgotten.
        assert_eq!(
            floor.record_at(later(6), Duration::from_millis(20)),
            Duration::from_millis(20)
        );
        // A slow check again, then a quiet spell of over two windows: only what came since.
        floor.record_at(later(7), Duration::from_millis(300));
        assert_eq!(
            floor.record_at(later(12), Duration::from_millis(5)),
            Duration::from_millis(5)
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
