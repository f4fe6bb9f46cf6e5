//! Where the server secret comes from, read once at start: `SECRET_KEY`, else the key file
//! (`SECRET_KEY_FILE`; for SQLite by default the database path plus `.key`), else — on
//! PostgreSQL/MySQL only, as older versions did — the database.
//!
//! The secret keys the hashes of one-time codes. Kept in the same SQLite file as those
//! hashes, anyone who could read the file (a local user, a backup) had both halves and
//! brute-forced a live code offline in under a second (issue 14). So SQLite keeps it in a
//! file of its own, mode 0600, backed up apart from the database; a secret an older
//! version stored in the database moves into that file (the same value, so live codes and
//! queued messages keep working) and is then deleted from the database.

use std::path::{Path, PathBuf};

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{DatabaseSettings, SecretSettings};
use crate::private_file::{self, FileError};
use crate::startup::StartupError;
use crate::store::{sqlite, Store};

/// Shortest secret accepted, from SECRET_KEY or a key file.
pub const MIN_SECRET_LEN: usize = 32;

/// The server secret for these settings, creating the key file if it is SQLite's and
/// missing.
pub async fn load(
    database: &DatabaseSettings,
    settings: &SecretSettings,
    store: &dyn Store,
) -> Result<SecretString, StartupError> {
    if let Some(key) = &settings.secret_key {
        return Ok(key.clone());
    }
    let (key_file, is_sqlite) = key_file(database, settings);
    match key_file {
        Some(path) => from_file(&path, store, is_sqlite).await,
        // An in-memory SQLite database: the secret lives exactly as long as the data.
        None if is_sqlite => Ok(generate()),
        None => {
            tracing::warn!(
                "SECRET_KEY and SECRET_KEY_FILE are unset: the server secret is read from the \
                 database (generated there by the first instance), beside the code hashes it \
                 protects. Set SECRET_KEY or SECRET_KEY_FILE to the same value on every \
                 instance instead"
            );
            let secret = store.server_secret(generate().expose_secret()).await?;
            Ok(SecretString::from(secret))
        }
    }
}

/// Where `load` would take the secret from, checked without creating or changing
/// anything: what `check-config` reports.
pub fn describe(database: &DatabaseSettings, settings: &SecretSettings) -> Result<String, String> {
    if settings.secret_key.is_some() {
        return Ok("from SECRET_KEY".into());
    }
    let (key_file, is_sqlite) = key_file(database, settings);
    match key_file {
        Some(path) => match private_file::read(&path).map_err(|e| e.to_string())? {
            Some(contents) => parse(&path, &contents)
                .map(|_| format!("from {}", path.display()))
                .map_err(|e| e.to_string()),
            None if is_sqlite => Ok(format!(
                "{} does not exist yet; it will be generated at start",
                path.display()
            )),
            None => Err(format!("SECRET_KEY_FILE {} does not exist", path.display())),
        },
        None if is_sqlite => Ok("in-memory database: generated at each start".into()),
        None => Ok("stored in the database (set SECRET_KEY or SECRET_KEY_FILE instead)".into()),
    }
}

/// The key file (SECRET_KEY_FILE, else SQLite's default beside an on-disk database), and
/// whether the database is SQLite.
fn key_file(database: &DatabaseSettings, settings: &SecretSettings) -> (Option<PathBuf>, bool) {
    let url = database.database_url.as_str();
    let is_sqlite = url.starts_with("sqlite:");
    let path = match &settings.secret_key_file {
        Some(path) => Some(path.clone()),
        None if is_sqlite => sqlite::database_path(url).map(|db| beside(&db)),
        None => None,
    };
    (path, is_sqlite)
}

/// SQLite's default key file: `gatehouse.db` → `gatehouse.db.key`.
pub fn beside(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

fn generate() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(hex::encode(bytes))
}

/// Reads the key file, or creates it (SQLite only: PostgreSQL/MySQL instances must share
/// one secret, so each must be given the same file). A secret still stored in a SQLite
/// database goes into the new file, and is deleted from the database once the file is
/// safely on disk.
async fn from_file(
    path: &Path,
    store: &dyn Store,
    is_sqlite: bool,
) -> Result<SecretString, StartupError> {
    let stored = if is_sqlite {
        store.stored_server_secret().await?
    } else {
        None
    };
    let secret = match private_file::read(path)? {
        Some(contents) => parse(path, &contents)?,
        None if !is_sqlite => {
            return Err(StartupError::Config(format!(
                "SECRET_KEY_FILE {} does not exist. Instances sharing a database must share \
                 the secret: create it once (`openssl rand -hex 32 > {0}; chmod 600 {0}`) and \
                 give every instance the same file",
                path.display()
            )));
        }
        None => {
            let (secret, from_database) = match &stored {
                Some(stored) => (parse(path, stored)?, true),
                None => (generate(), false),
            };
            match private_file::write_new(path, &format!("{}\n", secret.expose_secret())) {
                Ok(()) if from_database => tracing::info!(
                    "moved the server secret out of the database into {} (mode 0600): back \
                     it up with the database, and keep the two apart",
                    path.display()
                ),
                Ok(()) => tracing::info!(
                    "generated the server secret in {} (mode 0600): back it up with the \
                     database, and keep the two apart",
                    path.display()
                ),
                // Another process created it first: theirs is the one.
                Err(FileError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    return Box::pin(from_file(path, store, is_sqlite)).await;
                }
                Err(e) => return Err(e.into()),
            }
            secret
        }
    };
    if let Some(stored) = stored {
        if stored != secret.expose_secret() {
            return Err(StartupError::Config(format!(
                "the database holds a server secret different from the one in {}; one of \
                 them belongs to another installation. To keep the database's (codes and \
                 queued messages stay valid), move {0} away and start again: the secret moves \
                 into a new {0}. To keep the file's, delete the database's: `DELETE FROM \
                 server_secret`",
                path.display()
            )));
        }
        store.forget_server_secret(&stored).await?;
    }
    Ok(secret)
}

fn parse(path: &Path, contents: &str) -> Result<SecretString, StartupError> {
    let secret = contents.trim();
    if secret.len() < MIN_SECRET_LEN {
        return Err(StartupError::Config(format!(
            "{}: the server secret must be at least {MIN_SECRET_LEN} characters",
            path.display()
        )));
    }
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_file_sits_beside_the_database() {
        assert_eq!(
            beside(Path::new("data/gatehouse.db")),
            PathBuf::from("data/gatehouse.db.key")
        );
    }

    #[test]
    fn a_short_secret_is_refused_and_surrounding_whitespace_ignored() {
        let path = Path::new("k");
        assert!(parse(path, "short\n").is_err());
        let long = "a".repeat(MIN_SECRET_LEN);
        assert_eq!(
            parse(path, &format!("  {long}\n")).unwrap().expose_secret(),
            long
        );
    }
}
