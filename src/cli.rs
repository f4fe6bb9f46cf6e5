//! The command line: `serve`, `migrate`, `user …`, `audit`, `import-seed`,
//! `upgrade-hashes`, `check-config`, `hash-bench`. Every setting is also an environment variable (see `gatehouse serve
//! --help`).

use clap::{Args, Parser, Subcommand};

use crate::config::{DatabaseSettings, HashSettings, SecretSettings, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "An authentication server: accounts, sessions and password recovery by one-time code."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<Settings>),
    /// Apply pending database migrations and print the schema version.
    Migrate(DatabaseSettings),
    /// Inspect and manage accounts.
    User(UserCommand),
    /// Print a user's audit trail.
    Audit(AuditArgs),
    /// Import the users of the old Python/MySQL server, their bcrypt hashes wrapped in
    /// argon2id.
    ImportSeed(ImportArgs),
    /// Wrap argon2 hashes weaker than ARGON2_* in argon2id at those parameters and rewrite
    /// email keys stored under the old rule, in place; prints what it did. Safe to run
    /// beside live servers and to interrupt.
    UpgradeHashes(UpgradeArgs),
    /// Validate every setting and check that the database, SMTP server and Redis answer.
    CheckConfig(Box<Settings>),
    /// Time one password hash through the server's own code path, single-threaded.
    HashBench {
        #[command(flatten)]
        hashing: HashSettings,
        /// How many hashes to time.
        #[arg(long, default_value_t = 10)]
        rounds: u32,
    },
}

#[derive(Args, Debug)]
pub struct UserCommand {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(subcommand)]
    pub action: UserAction,
}

#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// List users, optionally those whose username, email or phone contains SEARCH.
    List {
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one user (by username, email or phone).
    Show {
        identifier: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: no login, no recovery, all sessions revoked.
    Disable { identifier: String },
    /// Enable a disabled user again.
    Enable { identifier: String },
    /// Revoke all of a user's sessions.
    RevokeSessions { identifier: String },
    /// Mark a user's email (or phone) as verified, as a right code would.
    Verify {
        identifier: String,
        /// Which address: `email` or `sms`.
        #[arg(long, default_value = "email", value_parser = ["email", "sms"])]
        channel: String,
    },
    /// Delete a user as `DELETE /me` does: the account, its sessions, codes, tokens and
    /// undelivered messages; the audit trail keeps the id without addresses; a goodbye
    /// email is queued (sent by a running server), sealed with the server secret.
    Delete {
        identifier: String,
        /// Required: there is no undo.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        secret: SecretSettings,
    },
    /// Remove every second factor of a user who lost them all (TOTP, passkeys, recovery
    /// codes) and end their sessions; audited, and a notice is queued to their email
    /// (sent by a running server), sealed with the server secret. Confirm who is asking
    /// first: this is the one way around a second factor.
    ResetMfa {
        identifier: String,
        #[command(flatten)]
        secret: SecretSettings,
    },
    /// Set a user's password, read from standard input (never from the arguments);
    /// revokes their sessions and outstanding codes.
    SetPassword {
        identifier: String,
        #[command(flatten)]
        hashing: HashSettings,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// The user (username, email or phone).
    #[arg(long)]
    pub user: String,
    /// Only events since this time: RFC 3339 (2026-11-24T00:00:00Z) or a duration back
    /// from now (24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// The parameters hashes are compared with and wrapped at: the server's.
    #[command(flatten)]
    pub hashing: HashSettings,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// The old server's database, e.g. mysql://root@localhost/auth_system.
    #[arg(long)]
    pub from: String,
    /// The argon2id layer put over each bcrypt hash: the server's parameters.
    #[command(flatten)]
    pub hashing: HashSettings,
    /// Users inserted per transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}
