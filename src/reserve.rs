//! The disk reserve: a file of `--disk-reserve-mb` kept in the data dir, so
//! that a full disk can still be freed through ragd. Deleting a document or
//! a conversation writes to the database before anything is freed, and on a
//! full disk that write fails like any other. Such a write releases the
//! reserve and runs once more ([`crate::AppState::write_to_free_space`]).
//! Uploads are refused while the reserve is out, so that they do not take
//! the space it freed; the next upload or the periodic sweep puts it back
//! once the disk has room for it twice over.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes written per call when the file system cannot `fallocate`.
const STEP: usize = 1 << 20;

pub struct DiskReserve {
    path: PathBuf,
    bytes: u64,
    /// One creator at a time.
    creating: tokio::sync::Mutex<()>,
    /// What the last look at the disk found (`ensure`, `release`).
    in_place: AtomicBool,
}

impl DiskReserve {
    pub fn new(data_dir: &Path, bytes: u64) -> DiskReserve {
        DiskReserve {
            path: data_dir.join("reserve"),
            bytes,
            creating: tokio::sync::Mutex::new(()),
            in_place: AtomicBool::new(false),
        }
    }

    /// Creates the reserve when it is missing and the disk has room for it
    /// twice over (never taking the last free space from other writes).
    /// Returns whether it is in place.
    pub async fn ensure(&self) -> bool {
        let _creating = self.creating.lock().await;
        let (path, bytes) = (self.path.clone(), self.bytes);
        let in_place = tokio::task::spawn_blocking(move || ensure(&path, bytes))
            .await
            .unwrap_or(false);
        self.in_place.store(in_place, Ordering::Release);
        in_place
    }

    /// Whether an upload may go ahead: the reserve is in place, as last
    /// seen (an atomic load on the upload path; the periodic sweep looks at
    /// the disk again), or can be put in place now.
    pub async fn allows_upload(&self) -> bool {
        self.in_place.load(Ordering::Acquire) || self.ensure().await
    }

    /// Deletes the reserve; returns whether there was one to delete.
    pub async fn release(&self) -> bool {
        self.in_place.store(false, Ordering::Release);
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => {
                tracing::warn!(
                    mib = self.bytes >> 20,
                    "the disk is full: released the disk reserve so that deletions can free space"
                );
                true
            }
            Err(err) => {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %err, path = %self.path.display(), "cannot release the disk reserve");
                }
                false
            }
        }
    }
}

fn ensure(path: &Path, bytes: u64) -> bool {
    if bytes == 0 {
        // None wanted: a reserve left by an earlier setting is freed.
        let _ = std::fs::remove_file(path);
        return true;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes) {
        return true;
    }
    let dir = path.parent().unwrap_or(path);
    let free = match rustix::fs::statvfs(dir) {
        Ok(stats) => stats.f_bavail.saturating_mul(stats.f_frsize),
        Err(err) => {
            tracing::debug!(error = %err, "cannot read the free space of the data dir");
            return false;
        }
    };
    if free < bytes.saturating_mul(2) {
        return false;
    }
    match allocate(path, bytes) {
        Ok(()) => {
            tracing::info!(mib = bytes >> 20, "disk reserve in place");
            true
        }
        Err(err) => {
            let _ = std::fs::remove_file(path);
            tracing::warn!(error = %err, path = %path.display(), "cannot create the disk reserve");
            false
        }
    }
}

/// Allocates the blocks (a sparse file would hold no space): with
/// `fallocate` where the file system has it, otherwise by writing random
/// bytes (a compressing file system stores zeros in no space at all).
fn allocate(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    if rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes).is_ok() {
        return file.sync_all();
    }
    // Fresh noise per step: a deduplicating file system would store
    // repeated blocks once.
    let mut noise = vec![0u8; STEP];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(STEP, |l| l.min(STEP));
        rand::Rng::fill(&mut rand::rng(), &mut noise[..n]);
        file.write_all(&noise[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reserve_is_created_once_released_and_created_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reserve = DiskReserve::new(dir.path(), 3 * STEP as u64 + 5);
        let path = dir.path().join("reserve");
        assert!(reserve.ensure().await, "a temp dir has room for 3 MiB twice");
        assert_eq!(
            std::fs::metadata(&path).expect("the file").len(),
            3 * STEP as u64 + 5
        );
        assert!(reserve.ensure().await, "already in place");
        assert!(reserve.release().await);
        assert!(!path.exists());
        assert!(!reserve.release().await, "nothing left to release");
        assert!(reserve.ensure().await);
        assert!(path.exists());
    }

    #[tokio::test]
    async fn no_reserve_is_taken_from_a_disk_without_room_for_it_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reserve = DiskReserve::new(dir.path(), u64::MAX / 4);
        assert!(!reserve.ensure().await);
        assert!(!dir.path().join("reserve").exists());
    }
}
