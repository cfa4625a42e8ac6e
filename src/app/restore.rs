//! `ragd restore`: unpacks an archive of `ragd backup` into a new or empty
//! data dir, as the server would have made it (dirs 0700, files 0600), and
//! gives the database a new epoch: event ids after the backup's are
//! handed out again, so a client that reconnects with a `since` of the old
//! database is told to resync (docs/API.md, "Event ids, order and replay").
//!
//! The archive is read as untrusted input: only the entries `ragd backup`
//! writes are accepted (the manifest first, `ragd.db`, `secret.key`,
//! `files/<name>`), as regular files with plain names; anything else (an
//! absolute path, `..`, a link, another name) fails the restore, and so
//! does a database that fails `PRAGMA quick_check` or an original whose
//! SHA-256 is not the one its document recorded at upload; a failed
//! restore removes what it wrote.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::StartupError;
use super::backup::{DATABASE, FILES, FORMAT, MANIFEST, Manifest, SECRET, is_plain_name};
use crate::db::maintenance;
use crate::lock::DataDirLock;

/// What a restore put in place.
#[derive(Debug)]
pub struct Restored {
    pub documents: usize,
    /// Documents of the database whose file the archive did not hold.
    pub missing_files: Vec<String>,
    pub secret_key: bool,
    /// The restored database's new epoch.
    pub epoch: String,
    pub created_at: String,
}

/// Restores the archive `from` into `data_dir` (created if missing; it
/// must be empty). Blocking.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Restored, StartupError> {
    let archive = File::open(from)
        .map_err(|e| StartupError::Config(format!("cannot open the archive {}: {e}", from.display())))?;
    let mut target = Target::prepare(data_dir)?;
    let _lock = DataDirLock::acquire(data_dir).map_err(StartupError::Runtime)?;
    // Only now, with the lock held and the dir still empty, is what it
    // will hold the restore's to remove on failure.
    target.arm()?;
    let manifest = unpack(archive, data_dir).map_err(|e| match e {
        Unpack::Refused(why) => {
            StartupError::Config(format!("{} is not a usable ragd backup: {why}", from.display()))
        }
        Unpack::Io(e) => StartupError::Runtime(format!("cannot restore into {}: {e}", data_dir.display())),
    })?;
    let (epoch, digests) = reopen(&data_dir.join(DATABASE))?;
    let missing_files = verify_files(&data_dir.join(FILES), &digests)?;
    for dir in [data_dir.join(FILES), data_dir.to_owned()] {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StartupError::Runtime(format!("cannot sync {}: {e}", dir.display())))?;
    }
    target.done();
    Ok(Restored {
        documents: digests.len(),
        missing_files,
        secret_key: manifest.secret_key,
        epoch,
        created_at: manifest.created_at,
    })
}

/// The data dir being restored: what the restore wrote goes if it fails.
struct Target {
    dir: PathBuf,
    created: bool,
    /// Set once the lock is held and the dir found empty (`arm`).
    armed: bool,
    done: bool,
}

impl Target {
    /// Creates the dir (0700) or checks that it is empty.
    fn prepare(dir: &Path) -> Result<Target, StartupError> {
        let created = match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(StartupError::Config(format!(
                        "refusing to restore into {}: it is not empty (restore into a new or empty directory)",
                        dir.display()
                    )));
                }
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                    StartupError::Runtime(format!("cannot set the mode of {}: {e}", dir.display()))
                })?;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| StartupError::Runtime(format!("cannot create {}: {e}", dir.display())))?;
                true
            }
            Err(e) => {
                return Err(StartupError::Config(format!(
                    "cannot restore into {}: {e}",
                    dir.display()
                )));
            }
        };
        Ok(Target {
            dir: dir.to_owned(),
            created,
            armed: false,
            done: false,
        })
    }

    /// Checks, with the data dir lock held, that the dir holds nothing but
    /// the lock: another process may have written into it since `prepare`.
    fn arm(&mut self) -> Result<(), StartupError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| StartupError::Runtime(format!("cannot read {}: {e}", self.dir.display())))?;
        for entry in entries.flatten() {
            if entry.file_name() != "ragd.lock" {
                return Err(StartupError::Config(format!(
                    "refusing to restore into {}: it is not empty (restore into a new or empty directory)",
                    self.dir.display()
                )));
            }
        }
        self.armed = true;
        Ok(())
    }

    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Unarmed, the dir may be another process's: leave it (an empty
        // dir this made is removed below).
        if !self.armed {
            if self.created {
                let _ = fs::remove_dir(&self.dir);
            }
            return;
        }
        // The dir was empty: everything in it is the restore's.
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
        if self.created {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

enum Unpack {
    /// Not an archive this version accepts.
    Refused(String),
    Io(io::Error),
}

impl From<io::Error> for Unpack {
    fn from(e: io::Error) -> Unpack {
        Unpack::Io(e)
    }
}

/// Writes the archive's entries into `dir`; returns its manifest.
fn unpack(archive: File, dir: &Path) -> Result<Manifest, Unpack> {
    let refused = |why: String| Unpack::Refused(why);
    fs::DirBuilder::new().mode(0o700).create(dir.join(FILES))?;
    let mut archive = tar::Archive::new(io::BufReader::new(archive));
    let mut manifest: Option<Manifest> = None;
    let mut has_database = false;
    let entries = archive
        .entries()
        .map_err(|e| refused(format!("not a tar archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| refused(format!("unreadable entry ({e})")))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = entry
            .path()
            .map_err(|e| refused(format!("unreadable path {shown:?} ({e})")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() && path.components().eq([Component::Normal(FILES.as_ref())]) {
            continue;
        }
        let place = place_of(&path).ok_or_else(|| refused(format!("unexpected or unsafe path {shown:?}")))?;
        if !kind.is_file() {
            return Err(refused(format!("{shown:?} is not a regular file")));
        }
        match (&place, &manifest) {
            (Place::Manifest, None) => {
                let mut text = Vec::new();
                entry.by_ref().take(1 << 20).read_to_end(&mut text)?;
                let read: Manifest = serde_json::from_slice(&text)
                    .map_err(|e| refused(format!("unreadable {MANIFEST} ({e})")))?;
                if read.format != FORMAT {
                    return Err(refused(format!(
                        "archive format {} (this ragd reads {FORMAT})",
                        read.format
                    )));
                }
                manifest = Some(read);
                continue;
            }
            (_, None) => return Err(refused(format!("{MANIFEST} is not its first entry"))),
            (Place::Manifest, Some(_)) => return Err(refused(format!("{MANIFEST} appears twice"))),
            _ => {}
        }
        has_database |= matches!(place, Place::Database);
        let to = dir.join(&path);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(refused(format!("{shown:?} appears twice")));
            }
            Err(e) => return Err(e.into()),
        };
        io::copy(&mut entry, &mut file)?;
        file.sync_all()?;
    }
    let manifest = manifest.ok_or_else(|| refused(format!("no {MANIFEST}")))?;
    if !has_database {
        return Err(refused(format!("no {DATABASE}")));
    }
    Ok(manifest)
}

/// Where an entry may go.
enum Place {
    Manifest,
    Database,
    Secret,
    File,
}

/// The place of an archive path: only the names `ragd backup` writes, as
/// relative plain components (nothing absolute, no `..`).
fn place_of(path: &Path) -> Option<Place> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name.to_str()?),
            _ => return None,
        }
    }
    match names.as_slice() {
        [MANIFEST] => Some(Place::Manifest),
        [DATABASE] => Some(Place::Database),
        [SECRET] => Some(Place::Secret),
        [FILES, name] if is_plain_name(name) => Some(Place::File),
        _ => None,
    }
}

/// Checks the restored database and gives it a new epoch; returns the
/// epoch and its documents' digests.
fn reopen(path: &Path) -> Result<(String, HashMap<String, String>), StartupError> {
    let failed = |e: crate::db::Error| {
        StartupError::Runtime(format!(
            "cannot open the restored database {}: {e}",
            path.display()
        ))
    };
    let conn = Connection::open(path).map_err(|e| failed(e.into()))?;
    let problems = maintenance::quick_check(&conn).map_err(failed)?;
    if let Some(first) = problems.first() {
        return Err(StartupError::Config(format!(
            "the archive's database is damaged: {first}"
        )));
    }
    if maintenance::epoch(&conn).map_err(failed)?.is_none() {
        return Err(StartupError::Config(
            "the archive's database is not a ragd database (no epoch)".into(),
        ));
    }
    let epoch = maintenance::renew_epoch(&conn).map_err(failed)?;
    let digests = maintenance::document_digests(&conn).map_err(failed)?;
    conn.close().map_err(|(_, e)| failed(e.into()))?;
    Ok((epoch, digests))
}

/// Checks each restored original against the SHA-256 its document
/// recorded at upload (a damaged archive fails the restore); returns the
/// documents whose file the archive did not hold, sorted.
fn verify_files(files: &Path, digests: &HashMap<String, String>) -> Result<Vec<String>, StartupError> {
    let mut missing = Vec::new();
    for (id, expected) in digests {
        // A crafted database could name any path as a document's file.
        if !super::backup::is_plain_name(id) {
            return Err(StartupError::Config(format!(
                "the archive is not a usable ragd backup: a document id is not a plain name ({id:?})"
            )));
        }
        let path = files.join(id);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(id.clone());
                continue;
            }
            Err(e) => {
                return Err(StartupError::Runtime(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|e| StartupError::Runtime(format!("cannot read {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        let actual: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if &actual != expected {
            return Err(StartupError::Config(format!(
                "the archive is damaged: the original of document {id} does not have the SHA-256 recorded at its upload"
            )));
        }
    }
    missing.sort();
    Ok(missing)
}
