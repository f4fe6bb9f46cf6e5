//! The load generator behind bench/run's second-factor figures (issue 17): logins that
//! need per-login client work wrk cannot do, a TOTP code per account and time step, an
//! ECDSA P-256 assertion over a fresh server challenge.
//!
//! ```text
//! bench_factors seed --url http://127.0.0.1:PORT --state FILE --prefix P
//!                    [--plain N] [--totp N] [--passkey N] [--parallel K]
//! bench_factors run  --url http://127.0.0.1:PORT --state FILE
//!                    --flow password|totp|passkey [--conns N] [--duration SECONDS] [--max LOGINS]
//! ```
//!
//! `seed` registers accounts through the API, `parallel` at a time: `plain` ones (password
//! only), `totp` ones (TOTP confirmed) and `passkey` ones (a discoverable ES256 passkey of
//! a soft authenticator), and adds what it needs to log them in again to the state file
//! (created if missing). It stops at the first account that fails.
//! `run` drives one flow with `conns` concurrent workers for `duration` seconds and prints
//! one JSON object on stdout: completed logins, logins/s, p50/p99 per login, errors by
//! step and status. It writes the state back (TOTP steps used, passkey counters), so runs
//! can follow one another.
//!
//! - `password`: `POST /login` → 200, accounts without a second factor.
//! - `totp`: `POST /login` → 401 with an `mfa_token`, `POST /login/mfa` (`totp`) → 200.
//!   The server accepts each 30-second step once per account (and the steps either side
//!   of the current one), so each worker owns a share of the accounts and uses, for each,
//!   the earliest step not yet used and still accepted. When all of a worker's accounts
//!   have used every acceptable step it waits for the next step and counts the wait
//!   (`starved`): a figure with waits is limited by the pool of accounts, not the server.
//! - `passkey`: `POST /passkeys/login/start` → options, sign, `POST /passkeys/login/finish`
//!   → 200. Each account belongs to one worker, so its signature counter only grows.
//!
//! Only ever talks to 127.0.0.1; every loop is bounded in time and count. The soft
//! authenticator is tests/it/common/authenticator.rs's, cut down to the correct answers
//! (origin `http://localhost:8080`, the server's default WEBAUTHN_ORIGINS).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_cbor_2::Value as Cbor;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

const PASSWORD: &str = "bench horse battery staple";
const ORIGIN: &str = "http://localhost:8080";
const ES256: i64 = -7;
const STEP: u64 = 30;
/// A step's code is offered for the step before the current one only this many seconds
/// into the current step: later, the server may already be in the next step.
const SAFE_PREVIOUS: u64 = 25;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Error bodies shown on stderr, at most.
const SHOW_ERRORS: u64 = 5;

fn err<T>(msg: impl Into<String>) -> Res<T> {
    Err(msg.into().into())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Res<Vec<u8>> {
    Ok(URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))?)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- state file

#[derive(Serialize, Deserialize, Default)]
struct State {
    password: String,
    plain: Vec<String>,
    totp: Vec<TotpAccount>,
    passkey: Vec<PasskeyAccount>,
}

#[derive(Serialize, Deserialize, Clone)]
struct TotpAccount {
    username: String,
    /// Base32, as /mfa/totp/setup gave it.
    secret: String,
    /// The newest step whose code the server has taken (or may have).
    last_step: u64,
}

#[derive(Serialize, Deserialize, Clone)]
struct PasskeyAccount {
    username: String,
    /// base64url: credential id, user handle, private scalar.
    id: String,
    user_handle: String,
    rp_id: String,
    key: String,
    counter: u32,
}

fn load(path: &str) -> Res<State> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    Ok(serde_json::from_str(&text)?)
}

fn save(path: &str, state: &State) -> Res<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, serde_json::to_vec(state)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

// ---------------------------------------------------------------- soft authenticator

fn random_key() -> SigningKey {
    loop {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        if let Ok(key) = SigningKey::from_slice(&secret) {
            return key;
        }
    }
}

fn string_at<'a>(options: &'a Value, pointer: &str) -> Res<&'a str> {
    match options.pointer(pointer).and_then(Value::as_str) {
        Some(s) => Ok(s),
        None => err(format!("no string at {pointer} in the options: {options}")),
    }
}

fn client_data(kind: &str, challenge: &str) -> Res<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "type": kind,
        "challenge": challenge,
        "origin": ORIGIN,
        "crossOrigin": false,
    }))?)
}

fn cose_key(key: &SigningKey) -> Res<Vec<u8>> {
    let point = key.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    if bytes.len() != 65 {
        return err("not an uncompressed P-256 point");
    }
    let map: BTreeMap<Cbor, Cbor> = [
        (Cbor::Integer(1), Cbor::Integer(2)),
        (Cbor::Integer(3), Cbor::Integer(ES256.into())),
        (Cbor::Integer(-1), Cbor::Integer(1)),
        (Cbor::Integer(-2), Cbor::Bytes(bytes[1..33].to_vec())),
        (Cbor::Integer(-3), Cbor::Bytes(bytes[33..65].to_vec())),
    ]
    .into_iter()
    .collect();
    Ok(serde_cbor_2::to_vec(&Cbor::Map(map))?)
}

/// `navigator.credentials.create()`: a discoverable ES256 credential for the options'
/// relying party and user (UP, UV, attestation "none").
fn create(options: &Value, username: &str) -> Res<(Value, PasskeyAccount)> {
    let rp_id = string_at(options, "/publicKey/rp/id")?.to_owned();
    let user_handle = unb64(string_at(options, "/publicKey/user/id")?)?;
    let challenge = string_at(options, "/publicKey/challenge")?;
    let mut id = vec![0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let key = random_key();

    let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
    auth_data.push(0x01 | 0x04 | 0x40); // UP | UV | AT
    auth_data.extend_from_slice(&0u32.to_be_bytes());
    auth_data.extend_from_slice(&[0u8; 16]); // AAGUID
    auth_data.extend_from_slice(&u16::try_from(id.len())?.to_be_bytes());
    auth_data.extend_from_slice(&id);
    auth_data.extend_from_slice(&cose_key(&key)?);
    let attestation: BTreeMap<Cbor, Cbor> = [
        (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
        (Cbor::Text("attStmt".into()), Cbor::Map(BTreeMap::new())),
        (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
    ]
    .into_iter()
    .collect();
    let attestation = serde_cbor_2::to_vec(&Cbor::Map(attestation))?;
    let credential = json!({
        "id": b64(&id),
        "rawId": b64(&id),
        "type": "public-key",
        "response": {
            "attestationObject": b64(&attestation),
            "clientDataJSON": b64(&client_data("webauthn.create", challenge)?),
        },
        "extensions": {},
    });
    let account = PasskeyAccount {
        username: username.to_owned(),
        id: b64(&id),
        user_handle: b64(&user_handle),
        rp_id,
        key: b64(key.to_bytes().as_slice()),
        counter: 0,
    };
    Ok((credential, account))
}

/// A passkey ready to sign: the decoded account.
struct Signer {
    id: String,
    user_handle: String,
    rp_hash: Vec<u8>,
    rp_id: String,
    key: SigningKey,
    counter: u32,
}

impl Signer {
    fn new(a: &PasskeyAccount) -> Res<Self> {
        Ok(Signer {
            id: a.id.clone(),
            user_handle: a.user_handle.clone(),
            rp_hash: Sha256::digest(a.rp_id.as_bytes()).to_vec(),
            rp_id: a.rp_id.clone(),
            key: SigningKey::from_slice(&unb64(&a.key)?)?,
            counter: a.counter,
        })
    }

    /// `navigator.credentials.get()`: an assertion answering the request options, the
    /// counter one up.
    fn get(&mut self, options: &Value) -> Res<Value> {
        let rp_id = string_at(options, "/publicKey/rpId")?;
        if rp_id != self.rp_id {
            return err(format!("the options ask for relying party {rp_id}"));
        }
        let challenge = string_at(options, "/publicKey/challenge")?;
        self.counter += 1;
        let mut auth_data = self.rp_hash.clone();
        auth_data.push(0x01 | 0x04); // UP | UV
        auth_data.extend_from_slice(&self.counter.to_be_bytes());
        let client_data = client_data("webauthn.get", challenge)?;
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let signature: DerSignature = self.key.sign(&signed);
        Ok(json!({
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(&signature.to_bytes()),
                "userHandle": self.user_handle,
            },
            "extensions": {},
        }))
    }
}

fn totp_of(secret_b32: &str) -> Res<TOTP> {
    let bytes = Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .map_err(|e| format!("TOTP secret: {e:?}"))?;
    Ok(TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP,
        bytes,
        Some("x".into()),
        "x".into(),
    )?)
}

// ---------------------------------------------------------------- HTTP

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

/// A step's answer: status and JSON body (Null when not JSON).
struct Answer {
    status: u16,
    body: Value,
    session: Option<String>,
}

impl Api {
    fn new(url: &str, conns: usize) -> Res<Self> {
        let rest = url.strip_prefix("http://127.0.0.1:").unwrap_or("");
        if rest.is_empty()
            || !rest
                .trim_end_matches('/')
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            return err(format!("--url must be http://127.0.0.1:PORT, not {url}"));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(conns.max(1))
            .tcp_nodelay(true)
            .build()?;
        Ok(Api {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    async fn post(&self, path: &str, body: &Value, bearer: Option<&str>) -> Res<Answer> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let session = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let v = v.strip_prefix("__Host-").unwrap_or(v);
                let value = v.strip_prefix("session=")?;
                Some(value.split(';').next().unwrap_or("").to_owned())
            })
            .filter(|t| !t.is_empty());
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            session,
        })
    }

    /// POST expecting `want`; anything else is an error naming the step.
    async fn expect(
        &self,
        step: &str,
        path: &str,
        body: &Value,
        bearer: Option<&str>,
        want: u16,
    ) -> Result<Answer, StepError> {
        match self.post(path, body, bearer).await {
            Ok(a) if a.status == want => Ok(a),
            Ok(a) => Err(StepError {
                key: format!("{step}:{}", a.status),
                detail: a.body.to_string(),
            }),
            Err(e) => Err(StepError {
                key: format!("{step}:transport"),
                detail: e.to_string(),
            }),
        }
    }
}

/// A login that went wrong: which step and status (`mfa:401`), and what the server said.
struct StepError {
    key: String,
    detail: String,
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError {
            key: "client".into(),
            detail: e.to_string(),
        }
    }
}

// ---------------------------------------------------------------- arguments

struct Args(HashMap<String, String>);

impl Args {
    fn parse(list: &[String]) -> Res<Self> {
        let mut map = HashMap::new();
        let mut it = list.iter();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                return err(format!("unexpected argument {k}"));
            };
            let Some(v) = it.next() else {
                return err(format!("{k} needs a value"));
            };
            map.insert(name.to_owned(), v.clone());
        }
        Ok(Args(map))
    }

    fn str(&self, k: &str) -> Res<&str> {
        match self.0.get(k) {
            Some(v) => Ok(v),
            None => err(format!("--{k} is required")),
        }
    }

    fn num(&self, k: &str, default: u64) -> Res<u64> {
        match self.0.get(k) {
            Some(v) => Ok(v.parse().map_err(|e| format!("--{k} {v}: {e}"))?),
            None => Ok(default),
        }
    }
}

// ---------------------------------------------------------------- seed

#[derive(Clone, Copy)]
enum Kind {
    Plain,
    Totp,
    Passkey,
}

enum Seeded {
    Plain(String),
    Totp(TotpAccount),
    Passkey(PasskeyAccount),
}

async fn seed_one(api: &Api, kind: Kind, username: String) -> Res<Seeded> {
    let step_err = |e: StepError| -> Error { format!("{username}: {} {}", e.key, e.detail).into() };
    let creds = json!({
        "username": username,
        "email": format!("{username}@bench.invalid"),
        "password": PASSWORD,
    });
    api.expect("register", "/register", &creds, None, 201)
        .await
        .map_err(step_err)?;
    if let Kind::Plain = kind {
        return Ok(Seeded::Plain(username));
    }
    let login = json!({"identifier": username, "password": PASSWORD});
    let a = api
        .expect("login", "/login", &login, None, 200)
        .await
        .map_err(step_err)?;
    let Some(token) = a.session else {
        return err(format!("{username}: the login set no session cookie"));
    };
    match kind {
        Kind::Plain => Ok(Seeded::Plain(username)),
        Kind::Totp => {
            let a = api
                .expect(
                    "totp-setup",
                    "/mfa/totp/setup",
                    &json!({}),
                    Some(&token),
                    200,
                )
                .await
                .map_err(step_err)?;
            let secret = string_at(&a.body, "/secret")?.to_owned();
            let totp = totp_of(&secret)?;
            // The step before the current one when it is safe, so that the current and
            // next steps are both left for the figure.
            let now = unix_now();
            let cur = now / STEP;
            let step = if now % STEP < SAFE_PREVIOUS {
                cur - 1
            } else {
                cur
            };
            let otp = totp.generate(step * STEP);
            api.expect(
                "totp-confirm",
                "/mfa/totp/confirm",
                &json!({"otp": otp}),
                Some(&token),
                200,
            )
            .await
            .map_err(step_err)?;
            Ok(Seeded::Totp(TotpAccount {
                username,
                secret,
                last_step: step,
            }))
        }
        Kind::Passkey => {
            let options = api
                .expect(
                    "passkey-start",
                    "/passkeys/register/start",
                    &json!({}),
                    Some(&token),
                    200,
                )
                .await
                .map_err(step_err)?
                .body;
            let (credential, account) = create(&options, &username)?;
            api.expect(
                "passkey-finish",
                "/passkeys/register/finish",
                &json!({"credential": credential, "name": "bench"}),
                Some(&token),
                201,
            )
            .await
            .map_err(step_err)?;
            Ok(Seeded::Passkey(account))
        }
    }
}

async fn seed(args: &Args) -> Res<()> {
    let parallel = args.num("parallel", 8)?.clamp(1, 64) as usize;
    let api = Api::new(args.str("url")?, parallel)?;
    let prefix = args.str("prefix")?.to_owned();
    let mut jobs: Vec<(Kind, String)> = Vec::new();
    for (kind, tag, n) in [
        (Kind::Plain, "p", args.num("plain", 0)?),
        (Kind::Totp, "t", args.num("totp", 0)?),
        (Kind::Passkey, "k", args.num("passkey", 0)?),
    ] {
        if n > 100_000 {
            return err("at most 100,000 accounts of a kind");
        }
        jobs.extend((1..=n).map(|i| (kind, format!("{prefix}{tag}{i}"))));
    }
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (api, jobs, next) = (api.clone(), jobs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((kind, name)) = jobs.get(i) else {
                    return Ok::<_, Error>(done);
                };
                done.push((i, seed_one(&api, *kind, name.clone()).await?));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    // Accounts seeded earlier in the same state file are kept: seed may run in parts.
    let path = args.str("state")?;
    let mut state = if std::path::Path::new(path).exists() {
        load(path)?
    } else {
        State {
            password: PASSWORD.into(),
            ..State::default()
        }
    };
    for (_, s) in all {
        match s {
            Seeded::Plain(u) => state.plain.push(u),
            Seeded::Totp(a) => state.totp.push(a),
            Seeded::Passkey(a) => state.passkey.push(a),
        }
    }
    save(path, &state)?;
    println!(
        "{}",
        json!({
            "plain": state.plain.len(),
            "totp": state.totp.len(),
            "passkey": state.passkey.len(),
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

// ---------------------------------------------------------------- run

/// What one worker measured.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    errors: BTreeMap<String, u64>,
    starved: u64,
    starved_ms: f64,
}

/// Shared by the workers: when to stop, how many logins may still start, and how many
/// error bodies have been shown.
struct Limits {
    deadline: Instant,
    budget: AtomicU64,
    shown: AtomicU64,
}

impl Limits {
    /// True when another login may start.
    fn go(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                .is_ok()
    }
}

impl Tally {
    fn record(&mut self, limits: &Limits, started: Instant, outcome: Result<(), StepError>) {
        match outcome {
            Ok(()) => self
                .latencies_ms
                .push(started.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                if limits.shown.fetch_add(1, Ordering::Relaxed) < SHOW_ERRORS {
                    eprintln!(
                        "bench_factors: {}: {}",
                        e.key,
                        e.detail.chars().take(300).collect::<String>()
                    );
                }
                *self.errors.entry(e.key).or_default() += 1;
            }
        }
    }
}

async fn password_login(api: &Api, user: &str, password: &str) -> Result<(), StepError> {
    let body = json!({"identifier": user, "password": password});
    api.expect("login", "/login", &body, None, 200).await?;
    Ok(())
}

async fn totp_login(api: &Api, user: &str, password: &str, code: &str) -> Result<(), StepError> {
    let body = json!({"identifier": user, "password": password});
    let a = api.expect("login", "/login", &body, None, 401).await?;
    let Some(token) = a.body.get("mfa_token").and_then(Value::as_str) else {
        return Err(StepError {
            key: "login:no-mfa-token".into(),
            detail: a.body.to_string(),
        });
    };
    let body = json!({"mfa_token": token, "method": "totp", "code": code});
    api.expect("mfa", "/login/mfa", &body, None, 200).await?;
    Ok(())
}

async fn passkey_login(api: &Api, signer: &mut Signer) -> Result<(), StepError> {
    let options = api
        .expect("start", "/passkeys/login/start", &json!({}), None, 200)
        .await?
        .body;
    let credential = signer.get(&options)?;
    api.expect(
        "finish",
        "/passkeys/login/finish",
        &json!({"credential": credential}),
        None,
        200,
    )
    .await?;
    Ok(())
}

/// The earliest step of `last`'s account the server accepts now and has not taken yet.
fn usable_step(last: u64) -> Option<u64> {
    let now = unix_now();
    let cur = now / STEP;
    let low = if now % STEP < SAFE_PREVIOUS {
        cur - 1
    } else {
        cur
    };
    let step = (last + 1).max(low);
    (step <= cur + 1).then_some(step)
}

async fn run(args: &Args) -> Res<()> {
    let conns = args.num("conns", 32)?.clamp(1, 1024) as usize;
    let duration = args.num("duration", 10)?.clamp(1, 600);
    let max = args.num("max", 10_000_000)?;
    let flow = args.str("flow")?.to_owned();
    let path = args.str("state")?.to_owned();
    let api = Api::new(args.str("url")?, conns)?;
    let mut state = load(&path)?;
    let password = state.password.clone();
    let pool = match flow.as_str() {
        "password" => state.plain.len(),
        "totp" => state.totp.len(),
        "passkey" => state.passkey.len(),
        other => return err(format!("--flow password|totp|passkey, not {other}")),
    };
    if pool < conns {
        return err(format!(
            "{flow}: {pool} accounts for {conns} workers; seed at least one a worker"
        ));
    }
    let started = Instant::now();
    let limits = Arc::new(Limits {
        deadline: started + Duration::from_secs(duration),
        budget: AtomicU64::new(max),
        shown: AtomicU64::new(0),
    });
    let plain = Arc::new(state.plain.clone());
    let next_plain = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..conns {
        // The accounts this worker owns (totp, passkey): w, w + conns, w + 2 conns...
        let owned: Vec<usize> = (w..pool).step_by(conns).collect();
        let (api, limits, password) = (api.clone(), limits.clone(), password.clone());
        let (plain, next_plain) = (plain.clone(), next_plain.clone());
        match flow.as_str() {
            "password" => tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                while limits.go() {
                    let i = next_plain.fetch_add(1, Ordering::Relaxed) % plain.len();
                    let t0 = Instant::now();
                    let outcome = password_login(&api, &plain[i], &password).await;
                    tally.record(&limits, t0, outcome);
                }
                Ok::<_, Error>((tally, Vec::new(), Vec::new()))
            })),
            "totp" => {
                let mut accounts: Vec<(usize, TotpAccount, TOTP)> = Vec::new();
                for i in owned {
                    let a = state.totp[i].clone();
                    let totp = totp_of(&a.secret)?;
                    accounts.push((i, a, totp));
                }
                tasks.push(tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut k = 0usize;
                    'logins: while limits.go() {
                        // The next account, in turn, with a step left to use.
                        let mut pick = None;
                        for _ in 0..accounts.len() {
                            k = (k + 1) % accounts.len();
                            if let Some(step) = usable_step(accounts[k].1.last_step) {
                                pick = Some((k, step));
                                break;
                            }
                        }
                        let Some((k, step)) = pick else {
                            // Every account has used every step the server accepts now:
                            // wait for the next step.
                            tally.starved += 1;
                            let w0 = Instant::now();
                            let wait = STEP - unix_now() % STEP;
                            let until = (Instant::now() + Duration::from_millis(wait * 1000 + 50))
                                .min(limits.deadline);
                            tokio::time::sleep_until(until.into()).await;
                            tally.starved_ms += w0.elapsed().as_secs_f64() * 1000.0;
                            if Instant::now() >= limits.deadline {
                                break 'logins;
                            }
                            // This login was not made: give its place in the budget back.
                            limits.budget.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let (_, account, totp) = &mut accounts[k];
                        account.last_step = step;
                        let code = totp.generate(step * STEP);
                        let t0 = Instant::now();
                        let outcome = totp_login(&api, &account.username, &password, &code).await;
                        tally.record(&limits, t0, outcome);
                    }
                    let back = accounts.into_iter().map(|(i, a, _)| (i, a)).collect();
                    Ok((tally, back, Vec::new()))
                }));
            }
            _ => {
                let mut signers: Vec<(usize, Signer)> = Vec::new();
                for i in owned {
                    signers.push((i, Signer::new(&state.passkey[i])?));
                }
                tasks.push(tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut k = 0usize;
                    while limits.go() {
                        k = (k + 1) % signers.len();
                        let t0 = Instant::now();
                        let outcome = passkey_login(&api, &mut signers[k].1).await;
                        tally.record(&limits, t0, outcome);
                    }
                    let back = signers.into_iter().map(|(i, s)| (i, s.counter)).collect();
                    Ok((tally, Vec::new(), back))
                }));
            }
        }
    }
    // Every worker stops starting logins at the deadline; one in flight ends within the
    // client timeout. Past both, give up.
    let bound = Duration::from_secs(duration) + TIMEOUT + Duration::from_secs(20);
    let mut total = Tally::default();
    let joined = tokio::time::timeout(bound, async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    })
    .await
    .map_err(|_| "the workers did not finish in time")?;
    for result in joined {
        let (tally, totp_back, passkey_back) = result??;
        total.latencies_ms.extend(tally.latencies_ms);
        for (k, v) in tally.errors {
            *total.errors.entry(k).or_default() += v;
        }
        total.starved += tally.starved;
        total.starved_ms += tally.starved_ms;
        for (i, a) in totp_back {
            state.totp[i] = a;
        }
        for (i, counter) in passkey_back {
            state.passkey[i].counter = counter;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    save(&path, &state)?;

    let mut lat = total.latencies_ms;
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1]
    };
    let logins = lat.len();
    let errors: u64 = total.errors.values().sum();
    let out = json!({
        "flow": flow,
        "conns": conns,
        "duration_s": duration,
        "elapsed_s": elapsed,
        "logins": logins,
        "rate": logins as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
        "error_kinds": total.errors,
        "starved": total.starved,
        "starved_ms": total.starved_ms,
        "accounts": pool,
    });
    println!("{out}");
    Ok(())
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((cmd, rest)) => match Args::parse(rest) {
            Ok(args) if cmd == "seed" => seed(&args).await,
            Ok(args) if cmd == "run" => run(&args).await,
            Ok(_) => err(format!("unknown command {cmd}: seed or run")),
            Err(e) => Err(e),
        },
        None => err("usage: bench_factors seed|run --url http://127.0.0.1:PORT --state FILE ..."),
    };
    if let Err(e) = result {
        eprintln!("bench_factors: {e}");
        std::process::exit(1);
    }
}
