//! `gatehouse import-seed`: brings the old Python/MySQL server's users into the configured
//! database, their bcrypt hashes wrapped in argon2id at the configured parameters
//! (`auth::password`: they log in with their old passwords, and are rehashed to plain
//! argon2id on first login). A stolen database thus never holds a bare bcrypt hash, at the
//! price of one argon2id per user now, computed on the hasher's threads, as many at once as
//! it has. Rows are streamed and inserted in batches, so a table of any size runs in
//! constant memory; duplicates are skipped by the unique indexes, which makes a second run
//! a no-op (and a quick one: a username already present is skipped before its hash is
//! wrapped). Pending seed OTPs are not imported: they were stored in clear, and a code is
//! only worth anything for ten minutes anyway.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use futures_util::TryStreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::admin::CliResult;
use crate::auth::password::{HashError, PasswordHasher};
use crate::cli::ImportArgs;
use crate::domain::{Email, Identifier, Phone, Username};
use crate::state::now;
use crate::store::{self, ImportUser};

/// Rejections listed one by one; past this, only counted.
const SHOW_REJECTIONS: usize = 20;

#[derive(sqlx::FromRow)]
struct SeedRow {
    id: i64,
    username: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    password_hash: Option<String>,
}

#[derive(Default)]
struct Tally {
    read: u64,
    imported: u64,
    duplicates: u64,
    rejected: u64,
    phones_dropped: u64,
    reasons: BTreeMap<String, u64>,
    shown: Vec<String>,
}

impl Tally {
    fn reject(&mut self, row: i64, reason: String) {
        self.rejected += 1;
        let kind = reason.split(':').next().unwrap_or_default().to_owned();
        *self.reasons.entry(kind).or_default() += 1;
        if self.shown.len() < SHOW_REJECTIONS {
            self.shown.push(format!("row {row}: {reason}"));
        }
    }
}

fn is_bcrypt(hash: &str) -> bool {
    hash.len() == 60 && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// A row read and, when it can be imported, its hash wrapped.
struct Converted {
    id: i64,
    outcome: Outcome,
    phone_dropped: bool,
}

enum Outcome {
    Import(ImportUser),
    /// A user of that name is already here (a second run): skipped before paying for the
    /// hash, as the unique index would skip it after.
    Present,
    Reject(String),
}

/// Parses one seed row into a user, or says why it cannot be imported; the flag says its
/// phone was dropped. The hash is still the seed's bcrypt.
fn convert(row: &SeedRow, at: i64) -> Result<(ImportUser, bool), String> {
    let username =
        Username::parse(row.username.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
    let email =
        Email::parse(row.email.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
    let hash = row.password_hash.as_deref().unwrap_or_default().trim();
    if !is_bcrypt(hash) {
        return Err("password_hash: is not a bcrypt hash".into());
    }
    // The seed required a phone but never checked it: a malformed one is dropped rather
    // than costing the user their account.
    let phone = match row
        .phone
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(p) => match Phone::parse(p) {
            Ok(p) => Some(p.as_str().to_owned()),
            Err(_) => None,
        },
    };
    let phone_dropped =
        phone.is_none() && row.phone.as_deref().is_some_and(|p| !p.trim().is_empty());
    Ok((
        ImportUser {
            username: username.as_str().to_owned(),
            username_norm: username.key().to_owned(),
            email: email.as_str().to_owned(),
            email_norm: email.key().to_owned(),
            phone,
            password_hash: hash.to_owned(),
            created_at: at,
        },
        phone_dropped,
    ))
}

/// `convert`, then, unless the username is already taken, the bcrypt hash wrapped on a
/// hashing thread.
async fn prepare(
    row: SeedRow,
    target: &dyn store::Store,
    hasher: &PasswordHasher,
    at: i64,
) -> Result<Converted, Box<dyn std::error::Error>> {
    let (mut user, phone_dropped) = match convert(&row, at) {
        Ok(converted) => converted,
        Err(reason) => {
            return Ok(Converted {
                id: row.id,
                outcome: Outcome::Reject(reason),
                phone_dropped: false,
            })
        }
    };
    let name = Username::parse(&user.username).map(Identifier::Username)?;
    let outcome = if target.find_user(&name).await?.is_some() {
        Outcome::Present
    } else {
        match hasher.wrap_bcrypt(&user.password_hash).await {
            Ok(wrapped) => {
                user.password_hash = wrapped;
                Outcome::Import(user)
            }
            Err(HashError::NotBcrypt) => {
                Outcome::Reject("password_hash: is not a bcrypt hash".into())
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(Converted {
        id: row.id,
        phone_dropped: phone_dropped && matches!(outcome, Outcome::Import(_)),
        outcome,
    })
}

pub async fn run(args: ImportArgs) -> CliResult {
    if !(args.from.starts_with("mysql:") || args.from.starts_with("mariadb:")) {
        return Err("--from must be the old server's MySQL database, e.g. mysql://root@localhost/auth_system".into());
    }
    let cannot_open = |e: sqlx::Error| format!("cannot open --from database: {e}");
    let options: MySqlConnectOptions = args
        .from
        .replacen("mariadb:", "mysql:", 1)
        .parse()
        .map_err(cannot_open)?;
    // The seed query streams for as long as the hashing takes: not a slow statement
    // worth its SQL text at WARN.
    let source = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(store::quiet_statements(options))
        .await
        .map_err(cannot_open)?;
    let target = store::connect(&args.database).await?;
    let hasher = PasswordHasher::new(&args.hashing)?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&source)
        .await
        .map_err(|e| format!("cannot read the seed's users table: {e}"))?;

    let bar = ProgressBar::new(total.max(0) as u64);
    if args.quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} users ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }

    // CONVERT: text columns with binary collations would otherwise arrive as bytes.
    let rows = sqlx::query_as::<_, SeedRow>(
        "SELECT CAST(id AS SIGNED) AS id,
                CONVERT(username USING utf8mb4) AS username,
                CONVERT(email USING utf8mb4) AS email,
                CONVERT(phone USING utf8mb4) AS phone,
                CONVERT(password_hash USING utf8mb4) AS password_hash
         FROM users ORDER BY id",
    )
    .fetch(&source);

    // Eight values a user: stay well under every backend's bound-parameter limit.
    let batch_size = args.batch.clamp(1, 2000);
    let at = now();
    // Rows are read as hashes finish, twice as many in flight as there are hashing threads
    // so none waits for the next row; in order, so rejections keep their row order. Rows
    // are read steadily, never left unread long enough for the seed server to give up.
    let hasher = &hasher;
    let mut rows = rows
        .map_err(Box::<dyn std::error::Error>::from)
        .map_ok(|row| prepare(row, &*target, hasher, at))
        .try_buffered(hasher.concurrency() * 2);
    let mut tally = Tally::default();
    let mut batch = Vec::with_capacity(batch_size);
    while let Some(row) = rows.try_next().await? {
        tally.read += 1;
        if row.phone_dropped {
            tally.phones_dropped += 1;
        }
        match row.outcome {
            Outcome::Import(user) => batch.push(user),
            Outcome::Present => tally.duplicates += 1,
            Outcome::Reject(reason) => tally.reject(row.id, reason),
        }
        if batch.len() >= batch_size {
            flush(&*target, &mut batch, &mut tally).await?;
        }
        bar.inc(1);
    }
    flush(&*target, &mut batch, &mut tally).await?;
    bar.finish_and_clear();

    println!(
        "read {} seed users: imported {}, skipped {} as duplicates, rejected {}",
        tally.read, tally.imported, tally.duplicates, tally.rejected
    );
    if tally.phones_dropped > 0 {
        println!(
            "{} imported without their phone number (not in E.164 form)",
            tally.phones_dropped
        );
    }
    for line in &tally.shown {
        println!("  rejected {line}");
    }
    if tally.rejected as usize > tally.shown.len() {
        let summary: Vec<String> = tally
            .reasons
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        println!("  … rejections by field: {}", summary.join(", "));
    }
    if tally.imported == 0 && tally.duplicates > 0 {
        println!("nothing to import: every valid seed user is already here");
    }
    Ok(())
}

async fn flush(
    target: &dyn store::Store,
    batch: &mut Vec<ImportUser>,
    tally: &mut Tally,
) -> Result<(), store::StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let inserted = target.import_users(batch).await?;
    tally.imported += inserted;
    tally.duplicates += batch.len() as u64 - inserted;
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_bcrypt_hashes_pass() {
        let h = bcrypt::hash("pw", 4).unwrap();
        assert!(is_bcrypt(&h));
        assert!(!is_bcrypt("plaintext-password"));
        assert!(!is_bcrypt(&h[..59]));
    }
}
