//! Files only their owner may read: the SQLite database with its `-wal` and `-shm`
//! companions, and the server key file. Gatehouse creates them mode 0600 and refuses to
//! start when an existing one is open to its group or to other users: the database holds
//! password hashes and the keyed hashes of live codes, the key file the secret that keys
//! them, and a local user (or a backup reader) with both brute-forces a live code offline
//! in under a second.
//!
//! The process umask is left alone: a file is created with `O_CREAT | O_EXCL` and mode
//! 0600, which a umask can only narrow, and SQLite's unix VFS gives the `-wal` and `-shm`
//! files it creates later the mode of the database file (`findCreateFileMode`), so they are
//! 0600 too. Unix only; elsewhere files are created with the platform's defaults.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Readable or writable by the group or other users.
    #[error(
        "{} is open to other users (mode {mode:03o}) but must be readable by its owner only; \
         run `chmod 600 {}` and start again",
        path.display(),
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Options that create a new file, failing if one exists, readable by its owner only.
fn create_new() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `path` empty and private if it does not exist yet (before SQLite creates it
/// with the umask's mode); an existing file is left as it is. Returns whether it was
/// created.
pub fn create_if_missing(path: &Path) -> Result<bool, FileError> {
    match create_new().open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

/// Fails when `path` exists and its group or other users have any access to it. A
/// missing file passes: whoever creates it creates it private.
pub fn check(path: &Path) -> Result<(), FileError> {
    match std::fs::metadata(path) {
        Ok(meta) => check_mode(path, &meta),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FileError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}

/// The contents of `path` if its mode passes `check` (taken from the open file, so it is
/// the mode of what is read), or `None` when there is no such file.
pub fn read(path: &Path) -> Result<Option<String>, FileError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    check_mode(path, &file.metadata().map_err(io(path))?)?;
    let mut contents = String::new();
    file.read_to_string(&mut contents).map_err(io(path))?;
    Ok(Some(contents))
}

/// Writes a new private file and makes it durable (the file, then its directory entry)
/// before returning, so whatever the caller deletes next is not the only copy. Fails with
/// `AlreadyExists` when the file is there already, and leaves nothing half-written.
pub fn write_new(path: &Path, contents: &str) -> Result<(), FileError> {
    let mut file = create_new().open(path).map_err(io(path))?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(io(path)(e));
    }
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_created_private_and_existing_ones_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        assert!(create_if_missing(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        std::fs::write(&path, "kept").unwrap();
        assert!(!create_if_missing(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");
        check(&path).unwrap();
        check(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn a_file_open_to_the_group_or_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_new(&path, "secret").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read(&path).unwrap().as_deref(), Some("secret"));
        for exposed in [0o644, 0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(exposed)).unwrap();
            let err = read(&path).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, FileError::Exposed { mode, .. } if mode == exposed));
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
            assert!(text.contains(&format!("{exposed:03o}")), "{text}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("secret"));
        assert!(read(&dir.path().join("missing")).unwrap().is_none());
        let again = write_new(&path, "other").unwrap_err();
        assert!(
            matches!(again, FileError::Io { ref source, .. } if source.kind() == ErrorKind::AlreadyExists)
        );
    }
}
