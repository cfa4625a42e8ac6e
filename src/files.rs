//! Uploaded originals on disk: `<data-dir>/files/<document id>`, named by
//! id only, never by the client's file name. An upload is written to a
//! temporary `.upload-*` file first (removed unless it is kept), fsynced,
//! and renamed into place with the directory fsynced too.

use std::collections::HashSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// The files directory.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

/// An upload being written; its file is removed when dropped unless kept.
pub struct Incoming {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    kept: bool,
}

impl Files {
    pub fn new(data_dir: &Path) -> Files {
        Files {
            dir: data_dir.join("files"),
        }
    }

    /// Creates the directory (owner only) if it is missing.
    pub fn create_dir(&self) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    /// Where a document's original is.
    pub fn path(&self, document_id: &str) -> PathBuf {
        self.dir.join(document_id)
    }

    /// Opens a new temporary file for an upload (mode 0600).
    pub async fn incoming(&self) -> std::io::Result<Incoming> {
        let path = self
            .dir
            .join(format!(".upload-{}", uuid::Uuid::now_v7().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        Ok(Incoming {
            path,
            file: Some(file),
            kept: false,
        })
    }

    /// Moves a finished upload into place as the document's original; the
    /// rename is made durable like the bytes. On error the upload is gone.
    pub async fn keep(&self, mut incoming: Incoming, document_id: &str) -> std::io::Result<Kept> {
        let (from, to, dir) = (incoming.path.clone(), self.path(document_id), self.dir.clone());
        incoming.file = None;
        let moved = tokio::task::spawn_blocking(move || {
            std::fs::rename(&from, &to)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?;
        moved?;
        incoming.kept = true;
        Ok(Kept {
            path: self.path(document_id),
            committed: false,
        })
    }

    /// Removes a document's original; a missing one is fine (the start-up
    /// sweep also removes files that no document owns).
    pub async fn remove(&self, document_id: &str) {
        let path = self.path(document_id);
        if let Err(err) = tokio::fs::remove_file(&path).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, path = %path.display(), "cannot remove a stored file");
        }
    }

    /// Removes every file that no document in `known` owns (interrupted
    /// uploads); returns how many. Blocking.
    pub fn remove_orphans(&self, known: &HashSet<String>) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

impl Incoming {
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(bytes).await,
            None => Err(std::io::Error::other("the upload was already finished")),
        }
    }

    /// Flushes and fsyncs the bytes written so far.
    pub async fn sync(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => {
                file.flush().await?;
                file.sync_all().await
            }
            None => Ok(()),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A document's original, in place but not yet owned by a committed row:
/// removed when dropped unless `committed` is called.
pub struct Kept {
    path: PathBuf,
    committed: bool,
}

impl Kept {
    /// The row that owns the file committed: keep it.
    pub fn committed(mut self) {
        self.committed = true;
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
