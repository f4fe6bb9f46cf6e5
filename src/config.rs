//! Typed settings, read once at start from the environment (and an optional `.env`),
//! validated, and passed down as data. Every variable is a clap argument with `env = …`,
//! so `gatehouse serve --help` lists each one with its default and nothing in a request
//! path ever reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

fn secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_owned()))
}

fn cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR like 10.0.0.0/8"))
}

/// `ADMIN_LISTEN_ADDR`: an address, or `off`.
fn admin_addr(s: &str) -> Result<AdminAddr, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(AdminAddr(None));
    }
    s.parse()
        .map(|a| AdminAddr(Some(a)))
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:9464, or `off`"))
}

/// `PUBLIC_URL`: an absolute http(s) URL with a host, no query, fragment or credentials.
fn public_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    let web = matches!(url.scheme(), "http" | "https") && url.host().is_some();
    let plain = url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !(web && plain) {
        return Err(format!(
            "`{s}` must be an http(s) URL like https://auth.example.com, without a query, \
             fragment or credentials"
        ));
    }
    Ok(url)
}

/// `COOKIE_DOMAIN`: a domain name (a leading dot is dropped, as browsers do).
fn cookie_domain(s: &str) -> Result<String, String> {
    let domain = s.trim().trim_start_matches('.').to_ascii_lowercase();
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if domain.is_empty() || domain.len() > 253 || !labels_ok {
        return Err(format!("`{s}` is not a domain name like example.com"));
    }
    Ok(domain)
}

/// Where the operations listener binds, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddr(pub Option<SocketAddr>);

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("not a duration like 30s, 10m or 12h: {e}"))
}

/// Where the server secret comes from. Shared by `serve` and the admin commands that
/// queue a message (`user delete`).
#[derive(Args, Debug, Clone)]
pub struct SecretSettings {
    /// Server secret for keyed hashes of codes and for encrypting queued messages (at least
    /// 32 characters). Unset, it comes from SECRET_KEY_FILE; every instance sharing a
    /// database must use the same one.
    #[arg(long, env = "SECRET_KEY", value_parser = secret, hide_env_values = true)]
    pub secret_key: Option<SecretString>,

    /// File holding the server secret when SECRET_KEY is unset; it must be readable by its
    /// owner only. SQLite: defaults to the database file's path plus `.key`, generated
    /// (mode 0600) on first start. PostgreSQL/MySQL: no default, and the file must exist.
    #[arg(long, env = "SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// Where the data lives. Shared by `serve` and every admin command.
#[derive(Args, Debug, Clone)]
pub struct DatabaseSettings {
    /// Storage: sqlite://path (created if missing), postgres://… or mysql://…
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://gatehouse.db")]
    pub database_url: String,

    /// Most connections in the pool (SQLite: the reader pool; writes go through one connection).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// PostgreSQL/MySQL: connections kept out of the pool for the session check and the
    /// lookups by identifier; those reads queue for them. More help a database server with
    /// many cores or a long round trip.
    #[arg(long, env = "DATABASE_READ_CONNECTIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_read_connections: u32,

    /// How long a request may wait for a database connection before answering 503.
    #[arg(long, env = "DATABASE_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub database_timeout: Duration,
}

/// Everything `gatehouse serve` needs.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Address of the operations listener: `/metrics` and the detailed `/readyz`. Keep it
    /// on loopback or a private network (it tells whoever reaches it about the traffic);
    /// `off` disables it. The public listener only says ready or not.
    #[arg(long, env = "ADMIN_LISTEN_ADDR", default_value = "127.0.0.1:9464", value_parser = admin_addr)]
    pub admin_listen_addr: AdminAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub secret: SecretSettings,

    /// Where people reach Gatehouse (scheme, host, port and an optional path prefix): the
    /// base of the login page forward authentication sends browsers to, and the default
    /// WebAuthn relying party (its host) and origin. The default suits local development.
    #[arg(long, env = "PUBLIC_URL", default_value = "http://localhost:8080", value_parser = public_url)]
    pub public_url: Url,

    /// Domain the session cookie is set for (e.g. example.com), so that one login covers
    /// every host under it (forward authentication for apps on sibling subdomains). Unset,
    /// the cookie belongs to Gatehouse's host alone. PUBLIC_URL's host must be under it.
    #[arg(long, env = "COOKIE_DOMAIN", value_parser = cookie_domain)]
    pub cookie_domain: Option<String>,

    /// Mark cookies `Secure` (sent over HTTPS only). Turn off only for local HTTP testing.
    #[arg(long, env = "COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    #[command(flatten)]
    pub hashing: HashSettings,

    #[command(flatten)]
    pub sessions: SessionSettings,

    #[command(flatten)]
    pub recovery: RecoverySettings,

    #[command(flatten)]
    pub factors: FactorSettings,

    #[command(flatten)]
    pub email: EmailSettings,

    #[command(flatten)]
    pub sms: SmsSettings,

    #[command(flatten)]
    pub outbox: OutboxSettings,

    #[command(flatten)]
    pub sms_policy: SmsPolicy,

    #[command(flatten)]
    pub limits: LimitSettings,

    /// Share rate limits between instances through this Redis (redis://host:6379/0);
    /// unset, each instance limits in its own memory.
    #[arg(long, env = "REDIS_URL", value_parser = secret, hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// Prefix of every rate-limit key in Redis, so deployments can share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "gatehouse:rl:")]
    pub redis_key_prefix: String,

    /// Comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed (e.g.
    /// 10.0.0.0/8,127.0.0.1/32). Unset, the socket address is the client address.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Per-IP rate limits and the per-IP connection cap count an IPv6 client by this many
    /// leading bits of its address (32 to 128): one subscriber usually holds a whole /64,
    /// so counting single addresses would hand out 2^64 budgets. IPv4 counts by address.
    #[arg(long, env = "RATE_LIMIT_IPV6_PREFIX", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(32..=128))]
    pub rate_limit_ipv6_prefix: u8,

    /// Most open connections from one client address (IPv6: one RATE_LIMIT_IPV6_PREFIX
    /// network); more are refused at once. Peers in TRUSTED_PROXIES are exempt. 0 = no cap.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: usize,

    /// How long audit events are kept before the periodic purge deletes them.
    #[arg(long, env = "AUDIT_RETENTION", default_value = "90days", value_parser = duration)]
    pub audit_retention: Duration,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Longest a client may take to send a request's headers, and longest a kept-alive
    /// connection may sit idle; slower connections are closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,

    /// Most open client connections; more are refused at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Longest time a request may take before the server answers 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub request_timeout: Duration,

    /// On SIGTERM/ctrl-c, how long in-flight requests get to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// At start, upgrade stored users in the background, one at a time: wrap argon2 hashes
    /// weaker than ARGON2_* and rewrite email keys stored under the old rule (what
    /// `gatehouse upgrade-hashes` does).
    #[arg(long, env = "HASH_UPGRADE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub hash_upgrade_on_start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// argon2id parameters. Defaults are OWASP's (m = 19 MiB, t = 2, p = 1).
#[derive(Args, Debug, Clone)]
pub struct HashSettings {
    /// argon2id memory cost in KiB.
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// argon2id iterations (time cost).
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// argon2id lanes (parallelism).
    #[arg(long, env = "ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Most password hashes computed at once; 0 means one per CPU core.
    #[arg(long, env = "HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    /// How much lower than the rest of the server the hashing threads run (Linux nice
    /// increment, 0 to 19; 0 keeps them equal): cheap requests get a core first.
    #[arg(long, env = "HASH_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub hash_nice: i32,
}

#[derive(Args, Debug, Clone)]
pub struct SessionSettings {
    /// A session unused for this long expires.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT", default_value = "30m", value_parser = duration)]
    pub session_idle_timeout: Duration,

    /// A session expires this long after login, however active.
    #[arg(long, env = "SESSION_ABSOLUTE_TIMEOUT", default_value = "12h", value_parser = duration)]
    pub session_absolute_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct RecoverySettings {
    /// How long a one-time code stays valid.
    #[arg(long, env = "OTP_TTL", default_value = "10m", value_parser = duration)]
    pub otp_ttl: Duration,

    /// Wrong guesses after which a code is dead.
    #[arg(long, env = "OTP_MAX_ATTEMPTS", default_value_t = 5)]
    pub otp_max_attempts: u32,

    /// How long the reset token issued by /validate-otp stays valid.
    #[arg(long, env = "RESET_TOKEN_TTL", default_value = "15m", value_parser = duration)]
    pub reset_token_ttl: Duration,

    /// When true, a login with the right password on an unverified email answers 403 and
    /// sends a fresh code, and registering a taken email or phone answers like a new
    /// registration (the owner is told by email). Off by default: the seed's clients do
    /// not verify.
    #[arg(long, env = "REQUIRE_VERIFIED_EMAIL", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub require_verified_email: bool,

    /// Shortest time a refused /validate-otp or /reset-password takes to answer, so that
    /// the write an existing account costs cannot be timed. Above the slowest commit you
    /// expect; 0 turns it off.
    #[arg(long, env = "RESPONSE_FLOOR", default_value = "25ms", value_parser = duration)]
    pub response_floor: Duration,
}

/// Second factors, step-up and sign-in by code (issue 17).
#[derive(Args, Debug, Clone)]
pub struct FactorSettings {
    /// How recent the last proof of a session's user must be (its login, or POST
    /// /reauthenticate) for a sensitive change: the password, email or phone, a factor,
    /// the recovery codes, deleting the account.
    #[arg(long, env = "REAUTH_MAX_AGE", default_value = "10m", value_parser = duration)]
    pub reauth_max_age: Duration,

    /// Sign in with a one-time code sent by email or SMS instead of a password
    /// (POST /login/code/request, POST /login/code). An account with a second factor
    /// still needs it after the code.
    #[arg(long, env = "CODE_LOGIN", default_value_t = false, action = clap::ArgAction::Set)]
    pub code_login: bool,

    /// The name authenticator apps show beside a TOTP entry, and passkey prompts show as
    /// the site.
    #[arg(long, env = "MFA_ISSUER", default_value = "Gatehouse")]
    pub mfa_issuer: String,

    /// The WebAuthn relying party id: the domain passkeys are bound to (the host of the
    /// pages that use them, or a parent domain of it). Changing it orphans every passkey.
    /// Unset: PUBLIC_URL's host.
    #[arg(long, env = "WEBAUTHN_RP_ID")]
    pub webauthn_rp_id: Option<String>,

    /// Comma-separated origins allowed to run passkey ceremonies (scheme, host and port,
    /// as the browser reports them), each on WEBAUTHN_RP_ID or a subdomain of it. Unset:
    /// PUBLIC_URL's origin.
    #[arg(long, env = "WEBAUTHN_ORIGINS", value_delimiter = ',')]
    pub webauthn_origins: Vec<Url>,
}

/// Who may be sent a text, and how many: what stands between an anonymous client and the
/// SMS bill (SMS pumping). Past a budget, or outside the allowed countries, a code goes
/// by email instead and the API answers the same.
#[derive(Args, Debug, Clone)]
pub struct SmsPolicy {
    /// Texts sent by all instances together, per hour (a GCRA rule, COUNT/PERIOD).
    #[arg(long, env = "SMS_BUDGET_PER_HOUR", default_value = "100/1h")]
    pub sms_budget_per_hour: Rule,

    /// Texts sent by all instances together, per day.
    #[arg(long, env = "SMS_BUDGET_PER_DAY", default_value = "1000/1d")]
    pub sms_budget_per_day: Rule,

    /// Texts to numbers sharing their first SMS_PREFIX_DIGITS digits (one number range).
    #[arg(long, env = "SMS_BUDGET_PER_PREFIX", default_value = "10/1h")]
    pub sms_budget_per_prefix: Rule,

    /// How many leading digits of an E.164 number (country code included) make a prefix.
    #[arg(long, env = "SMS_PREFIX_DIGITS", default_value_t = 6,
          value_parser = clap::value_parser!(u8).range(1..=15))]
    pub sms_prefix_digits: u8,

    /// Country calling codes texts may go to, comma-separated (e.g. `1,44,49`); empty
    /// means every country. Numbers elsewhere are refused at registration.
    #[arg(long, env = "SMS_ALLOWED_COUNTRIES", value_delimiter = ',', value_parser = calling_code)]
    pub sms_allowed_countries: Vec<String>,
}

fn calling_code(s: &str) -> Result<String, String> {
    let code = s.trim().trim_start_matches('+');
    if code.is_empty() {
        return Ok(String::new()); // `SMS_ALLOWED_COUNTRIES=` : every country
    }
    if (1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a country calling code like 1, 44 or 353"
        ))
    }
}

/// Email delivery. `SMTP_URL` wins; otherwise `EMAIL_USER`/`EMAIL_PASS` mean Gmail with
/// STARTTLS on 587 (the seed's settings); with neither, codes are printed to the log.
#[derive(Args, Debug, Clone)]
pub struct EmailSettings {
    /// Any SMTP server, e.g. smtp://user:pass@host:587?tls=required or smtp://127.0.0.1:2525.
    #[arg(long, env = "SMTP_URL", value_parser = secret, hide_env_values = true)]
    pub smtp_url: Option<SecretString>,

    /// Gmail account used when SMTP_URL is unset (the seed's setting).
    #[arg(long, env = "EMAIL_USER")]
    pub email_user: Option<String>,

    /// Password (app password) for EMAIL_USER.
    #[arg(long, env = "EMAIL_PASS", value_parser = secret, hide_env_values = true)]
    pub email_pass: Option<SecretString>,

    /// Sender address; defaults to EMAIL_USER, else gatehouse@localhost.
    #[arg(long, env = "EMAIL_FROM")]
    pub email_from: Option<String>,
}

/// SMS delivery through Twilio's Messages API; with no TWILIO_SID, codes are printed.
#[derive(Args, Debug, Clone)]
pub struct SmsSettings {
    /// Twilio account SID.
    #[arg(long, env = "TWILIO_SID")]
    pub twilio_sid: Option<String>,

    /// Twilio auth token.
    #[arg(long, env = "TWILIO_TOKEN", value_parser = secret, hide_env_values = true)]
    pub twilio_token: Option<SecretString>,

    /// The Twilio number messages are sent from.
    #[arg(long, env = "TWILIO_PHONE")]
    pub twilio_phone: Option<String>,

    /// Twilio REST base URL (point it at a local endpoint for tests).
    #[arg(
        long,
        env = "TWILIO_API_BASE",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_base: Url,
}

#[derive(Args, Debug, Clone)]
pub struct OutboxSettings {
    /// Delivery attempts before a message is marked failed.
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", default_value_t = 8)]
    pub outbox_max_attempts: u32,

    /// First retry delay; each further retry doubles it (capped at 10 minutes).
    #[arg(long, env = "OUTBOX_RETRY_BASE", default_value = "2s", value_parser = duration)]
    pub outbox_retry_base: Duration,

    /// How often the delivery worker looks for due messages when idle.
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub outbox_poll_interval: Duration,

    /// Messages delivered at once by each instance (each worker claims its own).
    #[arg(long, env = "OUTBOX_WORKERS", default_value_t = 4)]
    pub outbox_workers: usize,

    /// Longest one delivery attempt may take (SMTP or Twilio).
    #[arg(long, env = "NOTIFY_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub notify_timeout: Duration,
}

/// Rate limits, each written `COUNT/PERIOD` (e.g. `3/1m`, `10/1h`).
#[derive(Args, Debug, Clone)]
pub struct LimitSettings {
    /// /forgot-password per account (the seed's 3 per minute).
    #[arg(long, env = "RATE_FORGOT_PER_ACCOUNT", default_value = "3/1m")]
    pub forgot_per_account: Rule,

    /// /forgot-password per client IP.
    #[arg(long, env = "RATE_FORGOT_PER_IP", default_value = "10/1m")]
    pub forgot_per_ip: Rule,

    /// Codes issued per account (silently not issued past it, so it reveals nothing).
    #[arg(long, env = "RATE_CODES_PER_ACCOUNT", default_value = "10/1h")]
    pub codes_per_account: Rule,

    /// /validate-otp per account.
    #[arg(long, env = "RATE_VALIDATE_PER_ACCOUNT", default_value = "10/1m")]
    pub validate_per_account: Rule,

    /// Guesses compared against an account's codes, across codes, outside the owner's
    /// devices: what bounds an online guesser's chance over a year (see the README).
    #[arg(long, env = "RATE_CODE_FAILURES_PER_ACCOUNT", default_value = "20/1d")]
    pub code_guesses_per_account: Rule,

    /// /validate-otp per client IP.
    #[arg(long, env = "RATE_VALIDATE_PER_IP", default_value = "30/1m")]
    pub validate_per_ip: Rule,

    /// Login attempts per account in a burst; a successful login clears it.
    #[arg(long, env = "RATE_LOGIN_PER_ACCOUNT", default_value = "5/1m")]
    pub login_per_account: Rule,

    /// Login attempts per account over the long run; a successful login clears it.
    #[arg(long, env = "RATE_LOGIN_PER_ACCOUNT_LONG", default_value = "20/1h")]
    pub login_per_account_long: Rule,

    /// /login per client IP.
    #[arg(long, env = "RATE_LOGIN_PER_IP", default_value = "60/1m")]
    pub login_per_ip: Rule,

    /// /register per client IP.
    #[arg(long, env = "RATE_REGISTER_PER_IP", default_value = "20/1h")]
    pub register_per_ip: Rule,

    /// /reset-password per client IP.
    #[arg(long, env = "RATE_RESET_PER_IP", default_value = "20/1m")]
    pub reset_per_ip: Rule,

    /// /send-verification per account.
    #[arg(
        long,
        env = "RATE_SEND_VERIFICATION_PER_ACCOUNT",
        default_value = "3/1m"
    )]
    pub send_verification_per_account: Rule,

    /// /send-verification per client IP.
    #[arg(long, env = "RATE_SEND_VERIFICATION_PER_IP", default_value = "10/1m")]
    pub send_verification_per_ip: Rule,

    /// /verify per account.
    #[arg(long, env = "RATE_VERIFY_PER_ACCOUNT", default_value = "10/1m")]
    pub verify_per_account: Rule,

    /// /verify per client IP.
    #[arg(long, env = "RATE_VERIFY_PER_IP", default_value = "30/1m")]
    pub verify_per_ip: Rule,

    /// Self-service requests (change password, email or phone and their confirmations,
    /// the session list and its revocations, account deletion) per account.
    #[arg(long, env = "RATE_ACCOUNT_PER_USER", default_value = "30/1m")]
    pub account_per_user: Rule,

    /// Self-service requests per client IP.
    #[arg(long, env = "RATE_ACCOUNT_PER_IP", default_value = "60/1m")]
    pub account_per_ip: Rule,

    /// Second-factor checks (a TOTP or recovery code, a passkey assertion) per account,
    /// at login, on re-authentication and on factor changes: an atomic budget, shared by
    /// every instance through Redis, cleared by a success; when it is spent the owner is
    /// told.
    #[arg(long, env = "RATE_MFA_PER_ACCOUNT", default_value = "10/1h")]
    pub mfa_per_account: Rule,

    /// Second-factor checks and passkey ceremonies per client IP.
    #[arg(long, env = "RATE_MFA_PER_IP", default_value = "60/1m")]
    pub mfa_per_ip: Rule,

    /// /login/code/request per account (CODE_LOGIN).
    #[arg(long, env = "RATE_LOGIN_CODE_PER_ACCOUNT", default_value = "3/1m")]
    pub login_code_per_account: Rule,

    /// /login/code/request and /login/code per client IP (CODE_LOGIN).
    #[arg(long, env = "RATE_LOGIN_CODE_PER_IP", default_value = "10/1m")]
    pub login_code_per_ip: Rule,
}

/// A rate-limit rule: at most `count` events per `period`, spread evenly (GCRA), with a
/// burst of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub count: u32,
    pub period: Duration,
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, period) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not COUNT/PERIOD, e.g. 3/1m"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{count}` is not a whole number"))?;
        let period = duration(period.trim())?;
        if count == 0 || period.is_zero() {
            return Err("count and period must both be above zero".into());
        }
        Ok(Rule { count, period })
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

impl Settings {
    /// Checks what clap's types cannot: relations between settings and secret strength.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(key) = &self.secret.secret_key {
            if key.expose_secret().len() < 32 {
                return Err("SECRET_KEY must be at least 32 characters".into());
            }
        }
        let h = &self.hashing;
        argon2::Params::new(
            h.argon2_memory_kib,
            h.argon2_iterations,
            h.argon2_parallelism,
            None,
        )
        .map_err(|e| format!("ARGON2_* parameters are invalid: {e}"))?;
        if self.sessions.session_idle_timeout > self.sessions.session_absolute_timeout {
            return Err("SESSION_IDLE_TIMEOUT must not exceed SESSION_ABSOLUTE_TIMEOUT".into());
        }
        if let Some(domain) = &self.cookie_domain {
            let host = self.public_url.host_str().unwrap_or_default();
            if host != domain && !host.ends_with(&format!(".{domain}")) {
                return Err(format!(
                    "COOKIE_DOMAIN `{domain}` must be PUBLIC_URL's host `{host}` or a domain \
                     it is under, or browsers refuse the cookie"
                ));
            }
        }
        if self.recovery.otp_max_attempts == 0 {
            return Err("OTP_MAX_ATTEMPTS must be at least 1".into());
        }
        let sms = &self.sms;
        let twilio_set = [
            sms.twilio_sid.is_some(),
            sms.twilio_token.is_some(),
            sms.twilio_phone.is_some(),
        ];
        if twilio_set.iter().any(|b| *b) && !twilio_set.iter().all(|b| *b) {
            return Err("TWILIO_SID, TWILIO_TOKEN and TWILIO_PHONE must be set together".into());
        }
        if self.email.email_user.is_some() != self.email.email_pass.is_some()
            && self.email.smtp_url.is_none()
        {
            return Err("EMAIL_USER and EMAIL_PASS must be set together".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_count_and_period() {
        let r: Rule = "3/1m".parse().unwrap();
        assert_eq!(r.count, 3);
        assert_eq!(r.period, Duration::from_secs(60));
        assert!("0/1m".parse::<Rule>().is_err());
        assert!("3".parse::<Rule>().is_err());
        assert!("x/1m".parse::<Rule>().is_err());
        assert!("3/forever".parse::<Rule>().is_err());
    }
}
