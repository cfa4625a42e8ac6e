//! `ragd backup`: one archive (an uncompressed tar, mode 0600) of a data
//! dir, taken while the server runs: a snapshot of the database, the
//! originals that the snapshot's documents own, and `secret.key` unless
//! left out. The search index is derived and left out: a server rebuilds
//! it at start.
//!
//! Why every document of the snapshot has its file in the archive, whatever
//! uploads and deletes run meanwhile: an upload moves its file into
//! `files/` before its row commits, and a delete (of a document or of an
//! account) removes the file only after the row's removal committed
//! (`documents::delete`, `accounts::delete`); nothing else removes the
//! file of a committed row. So, in order:
//!
//! 1. snapshot the database (SQLite's online backup API, one read
//!    transaction: the server's writer goes on meanwhile);
//! 2. hard-link (or, across file systems, copy) the file of each of its
//!    documents into a staging dir `<data-dir>/.backup-<id>/`: once
//!    linked, a delete can no longer take the bytes away;
//! 3. a file that is already gone belongs to a document deleted since
//!    the snapshot: take a new snapshot (which no longer has it) and link
//!    the files of documents it has that are not linked yet; repeat until
//!    none is missing. A file missing in two snapshots in a row is not a
//!    race but a damaged data dir: it is reported and the backup goes on
//!    without it;
//! 4. write the archive from the staging dir to a temporary name beside
//!    `--out`, fsync it and rename it into place, so `--out` is always a
//!    whole archive. The staging dir goes.
//!
//! The backup takes no lock on the data dir (the server holds it) and
//! writes nothing in it but the staging dir.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StartupError;
use crate::db::{self, maintenance};

/// The archive's entries.
pub(super) const MANIFEST: &str = "ragd-backup.json";
pub(super) const DATABASE: &str = "ragd.db";
pub(super) const SECRET: &str = "secret.key";
pub(super) const FILES: &str = "files";
/// The archive layout this version writes and reads.
pub(super) const FORMAT: u32 = 1;
/// Snapshots taken at most before giving up on a data dir whose documents
/// keep being deleted faster than their files are linked.
const MAX_ROUNDS: u32 = 10;

/// The first entry of every archive.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub format: u32,
    pub ragd_version: String,
    pub created_at: String,
    /// The epoch of the database it was taken from (a restore gives the
    /// copy a new one).
    pub epoch: String,
    pub documents: usize,
    pub secret_key: bool,
    /// Documents whose file was already missing from the data dir.
    #[serde(default)]
    pub missing_files: Vec<String>,
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackedUp {
    pub documents: usize,
    pub bytes: u64,
    pub secret_key: bool,
    /// Documents whose file was missing in the data dir itself.
    pub missing_files: Vec<String>,
    /// Snapshots taken (more than one when deletes raced the copy).
    pub snapshots: u32,
}

/// Writes the archive of `data_dir` to `out` (replacing a file there only
/// once the new archive is complete). Blocking.
pub fn backup(data_dir: &Path, out: &Path, with_secret: bool) -> Result<BackedUp, StartupError> {
    super::existing_database(data_dir).map_err(StartupError::Config)?;
    if out.is_dir() {
        return Err(StartupError::Config(format!(
            "--out {} is a directory; name the archive file",
            out.display()
        )));
    }
    if inside(out, data_dir) {
        return Err(StartupError::Config(format!(
            "--out {} is inside the data dir {}: write the archive elsewhere",
            out.display(),
            data_dir.display()
        )));
    }
    let staging = Staging::create(data_dir)?;
    let staged = stage(data_dir, &staging, &mut |_| {})?;
    let secret_path = data_dir.join(SECRET);
    let secret = if with_secret && secret_path.is_file() {
        Some(secret_path)
    } else {
        None
    };
    let manifest = Manifest {
        format: FORMAT,
        ragd_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: db::format_ms(db::now_ms()),
        epoch: staged.epoch.clone(),
        documents: staged.documents.len() + staged.missing.len(),
        secret_key: secret.is_some(),
        missing_files: staged.missing.clone(),
    };
    let bytes = write_archive(out, &manifest, &staging, &staged, secret.as_deref())
        .map_err(|e| StartupError::Runtime(format!("cannot write the archive {}: {e}", out.display())))?;
    Ok(BackedUp {
        documents: manifest.documents,
        bytes,
        secret_key: manifest.secret_key,
        missing_files: staged.missing,
        snapshots: staged.snapshots,
    })
}

/// `<data-dir>/.backup-<id>/`: the snapshot and links to the files it
/// needs; removed when dropped. Its `.lock` is held while the backup runs,
/// so a later backup knows an interrupted one's dir and removes it.
struct Staging {
    dir: PathBuf,
    _lock: File,
}

/// The name of a staging dir's lock file.
const STAGING_LOCK: &str = ".lock";
/// A staging dir without its lock older than this was left by a backup
/// that died between creating it and locking it.
const UNLOCKED_STAGING_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Staging {
    fn create(data_dir: &Path) -> Result<Staging, StartupError> {
        remove_interrupted(data_dir);
        let dir = data_dir.join(format!("{STAGING_PREFIX}{}", uuid::Uuid::now_v7().simple()));
        let failed = |e: io::Error| StartupError::Runtime(format!("cannot create {}: {e}", dir.display()));
        fs::DirBuilder::new().mode(0o700).create(&dir).map_err(failed)?;
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(STAGING_LOCK))
            .map_err(failed)?;
        lock.try_lock()
            .map_err(|e| failed(io::Error::other(e.to_string())))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.join(FILES))
            .map_err(failed)?;
        Ok(Staging { dir, _lock: lock })
    }

    fn database(&self) -> PathBuf {
        self.dir.join(DATABASE)
    }

    fn file(&self, document_id: &str) -> PathBuf {
        self.dir.join(FILES).join(document_id)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot remove the backup's staging dir");
        }
    }
}

/// The prefix of staging dirs' names.
pub(super) const STAGING_PREFIX: &str = ".backup-";

/// Removes the staging dirs of backups that were interrupted (their lock
/// is free); those of running backups stay.
fn remove_interrupted(data_dir: &Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // The lock stays held (`_held`) until the dir is gone, so no
        // backup can take the dir up meanwhile.
        let lock = File::open(dir.join(STAGING_LOCK));
        let (interrupted, _held) = match lock {
            Ok(lock) => (lock.try_lock().is_ok(), Some(lock)),
            Err(_) => (
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > UNLOCKED_STAGING_AGE)),
                None,
            ),
        };
        if interrupted {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "removed the staging dir of an interrupted backup")
                }
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot remove the staging dir of an interrupted backup")
                }
            }
        }
    }
}

/// The snapshot in the staging dir and the files of its documents.
struct Staged {
    epoch: String,
    /// The snapshot's documents whose files are staged, sorted.
    documents: Vec<String>,
    /// The snapshot's documents whose files are missing in the data dir.
    missing: Vec<String>,
    snapshots: u32,
}

/// Steps 1 to 3 of the module's order; `after_snapshot` runs after each
/// snapshot (a seam for tests, which change the data dir there).
fn stage(
    data_dir: &Path,
    staging: &Staging,
    after_snapshot: &mut dyn FnMut(u32),
) -> Result<Staged, StartupError> {
    let runtime = StartupError::Runtime;
    let (db_path, files) = (data_dir.join(DATABASE), data_dir.join(FILES));
    let mut linked: HashSet<String> = HashSet::new();
    let mut missing_before: HashSet<String> = HashSet::new();
    for round in 1..=MAX_ROUNDS {
        let snapshot = staging.database();
        match fs::remove_file(&snapshot) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(runtime(format!("cannot remove {}: {e}", snapshot.display()))),
        }
        let (epoch, ids) = read_snapshot(&db_path, &snapshot)?;
        after_snapshot(round);
        let mut missing = HashSet::new();
        for id in &ids {
            if linked.contains(id) {
                continue;
            }
            if !is_plain_name(id) {
                return Err(runtime(format!(
                    "the database names a document {id:?}, which is not a file name; the data dir is damaged"
                )));
            }
            match preserve(&files.join(id), &staging.file(id)) {
                Ok(()) => {
                    linked.insert(id.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.insert(id.clone());
                }
                Err(e) => {
                    return Err(runtime(format!("cannot copy {}: {e}", files.join(id).display())));
                }
            }
        }
        // Missing again in a newer snapshot: not a delete racing the copy.
        if missing.is_subset(&missing_before) {
            let mut documents: Vec<String> = ids.iter().filter(|id| linked.contains(*id)).cloned().collect();
            documents.sort();
            let mut missing: Vec<String> = missing.into_iter().collect();
            missing.sort();
            return Ok(Staged {
                epoch,
                documents,
                missing,
                snapshots: round,
            });
        }
        tracing::info!(
            deleted = missing.difference(&missing_before).count(),
            "documents were deleted while the backup copied their files; taking a new snapshot"
        );
        missing_before = missing;
    }
    Err(runtime(format!(
        "documents were deleted faster than the backup could copy their files ({MAX_ROUNDS} snapshots); try again when the server is less busy"
    )))
}

/// Takes the snapshot; returns its epoch and document ids.
fn read_snapshot(db_path: &Path, snapshot: &Path) -> Result<(String, HashSet<String>), StartupError> {
    let failed =
        |e: db::Error| StartupError::Runtime(format!("cannot take a snapshot of {}: {e}", db_path.display()));
    let conn = maintenance::snapshot(db_path, snapshot).map_err(failed)?;
    let epoch = maintenance::epoch(&conn)
        .map_err(failed)?
        .ok_or_else(|| StartupError::Config(format!("{} is not a ragd database", db_path.display())))?;
    let ids = maintenance::document_ids(&conn).map_err(failed)?;
    Ok((epoch, ids))
}

/// Keeps the bytes of `from` at `to` even if `from` is removed next: a
/// hard link, or a copy where links cannot be made. A copy is as safe:
/// once the source is open, its bytes stay readable after a removal.
fn preserve(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(_) => fs::copy(from, to).map(|_| ()),
    }
}

/// A name that stays inside its directory: no separator, not `.` or `..`,
/// not hidden (temporary uploads are `.upload-*`).
/// Whether the file `out` would be written inside `dir` (compared by
/// their canonical parents, so `..` and links do not hide it).
fn inside(out: &Path, dir: &Path) -> bool {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), dir.canonicalize()) {
        (Ok(parent), Ok(dir)) => parent.starts_with(dir),
        _ => false,
    }
}

pub(super) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

/// Step 4: the archive, written to a temporary name and renamed into
/// place; returns its size.
fn write_archive(
    out: &Path,
    manifest: &Manifest,
    staging: &Staging,
    staged: &Staged,
    secret: Option<&Path>,
) -> io::Result<u64> {
    let name = out
        .file_name()
        .ok_or_else(|| io::Error::other("--out names no file"))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let temporary = Temporary(parent.join(format!(".{name}.tmp-{}", uuid::Uuid::now_v7().simple())));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary.0)?;
    let mut archive = tar::Builder::new(BufWriter::new(file));
    let manifest = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    append(&mut archive, MANIFEST, manifest.len() as u64, manifest.as_slice())?;
    append_file(&mut archive, DATABASE, &staging.database())?;
    if let Some(secret) = secret {
        append_file(&mut archive, SECRET, secret)?;
    }
    for id in &staged.documents {
        append_file(&mut archive, &format!("{FILES}/{id}"), &staging.file(id))?;
    }
    let file = archive.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    fs::rename(&temporary.0, out)?;
    temporary.kept();
    File::open(&parent)?.sync_all()?;
    Ok(bytes)
}

fn append(archive: &mut tar::Builder<impl Write>, path: &str, size: u64, bytes: impl Read) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(db::now_ms() / 1000).unwrap_or(0));
    archive.append_data(&mut header, path, bytes)
}

fn append_file(archive: &mut tar::Builder<impl Write>, path: &str, from: &Path) -> io::Result<()> {
    let file = File::open(from)?;
    let size = file.metadata()?.len();
    // `take`: the header promised `size` bytes.
    append(archive, path, size, file.take(size))
}

/// The archive being written: removed unless kept.
struct Temporary(PathBuf);

impl Temporary {
    fn kept(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, params};

    /// A data dir with a migrated database in WAL mode, a user, and
    /// documents whose files exist unless listed in `without_file`.
    fn data_dir(documents: &[&str], without_file: &[&str]) -> (tempfile::TempDir, Connection) {
        let (dir, conn) = crate::db::testing::migrated();
        let path = dir.path().join(DATABASE);
        conn.execute("VACUUM INTO ?1", [path.to_str().expect("a UTF-8 path")])
            .expect("copy the migrated database");
        drop(conn);
        let conn = Connection::open(&path).expect("open");
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .expect("WAL");
        crate::db::testing::insert_user(&conn, "u");
        fs::create_dir(dir.path().join(FILES)).expect("files/");
        for id in documents {
            add(dir.path(), &conn, id, !without_file.contains(id));
        }
        (dir, conn)
    }

    /// An upload as the server makes it: the file in place, then the row.
    fn add(dir: &Path, conn: &Connection, id: &str, with_file: bool) {
        if with_file {
            fs::write(dir.join(FILES).join(id), format!("bytes of {id}")).expect("write a file");
        }
        conn.execute(
            "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256, status, created_at, updated_at)
             VALUES (?1, 'u', 'a.txt', 'text/plain', 'txt', 1, 'x', 'ready', 0, 0)",
            params![id],
        )
        .expect("a document row");
    }

    /// A delete as the server makes it: the row, then the file.
    fn delete(dir: &Path, conn: &Connection, id: &str) {
        conn.execute("DELETE FROM documents WHERE id = ?1", [id])
            .expect("delete the row");
        fs::remove_file(dir.join(FILES).join(id)).expect("remove the file");
    }

    #[test]
    fn a_delete_racing_the_copy_takes_a_new_snapshot_and_a_missing_file_is_reported() {
        let (dir, conn) = data_dir(&["a", "b", "lost"], &["lost"]);
        let staging = Staging::create(dir.path()).expect("staging");
        let mut rounds = Vec::new();
        let staged = stage(dir.path(), &staging, &mut |round| {
            rounds.push(round);
            if round == 1 {
                // After the first snapshot: "b" goes, "c" comes.
                delete(dir.path(), &conn, "b");
                add(dir.path(), &conn, "c", true);
            }
        })
        .expect("staged");
        assert_eq!(rounds, [1, 2], "one more snapshot, after the delete");
        assert_eq!(staged.documents, ["a", "c"]);
        assert_eq!(staged.missing, ["lost"], "missing in two snapshots: reported");
        for id in ["a", "c"] {
            let bytes = fs::read(staging.file(id)).expect("staged file");
            assert_eq!(bytes, format!("bytes of {id}").into_bytes());
        }
        let snapshot = Connection::open(staging.database()).expect("the snapshot");
        let ids = maintenance::document_ids(&snapshot).expect("ids");
        assert_eq!(
            ids,
            HashSet::from(["a".to_owned(), "c".to_owned(), "lost".to_owned()])
        );
    }

    #[test]
    fn a_file_linked_before_its_delete_stays_in_the_backup() {
        let (dir, conn) = data_dir(&["a"], &[]);
        let staging = Staging::create(dir.path()).expect("staging");
        let staged = stage(dir.path(), &staging, &mut |_| {}).expect("staged");
        // Deleted once linked: the snapshot still has it, and so do its bytes.
        delete(dir.path(), &conn, "a");
        assert_eq!(staged.documents, ["a"]);
        assert_eq!(fs::read(staging.file("a")).expect("staged"), b"bytes of a");
    }

    #[test]
    fn a_backup_removes_the_staging_dir_of_an_interrupted_one_but_not_of_a_running_one() {
        let (dir, _conn) = data_dir(&[], &[]);
        let running = Staging::create(dir.path()).expect("staging");
        let interrupted = dir.path().join(format!("{STAGING_PREFIX}interrupted"));
        fs::create_dir_all(interrupted.join(FILES)).expect("mkdir");
        fs::write(interrupted.join(STAGING_LOCK), b"").expect("its lock file, not held");
        let next = Staging::create(dir.path()).expect("staging");
        assert!(!interrupted.exists(), "the interrupted one's dir is removed");
        assert!(running.dir.exists(), "the running one's stays");
        drop((running, next));
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
            .collect();
        assert!(left.is_empty(), "each backup removes its own");
    }

    #[test]
    fn archive_names_stay_inside_their_directory() {
        for bad in ["", ".", "..", ".upload-1", "a/b", "../x"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(is_plain_name("0190aaaa-0000-7000-8000-000000000000"));
    }
}
