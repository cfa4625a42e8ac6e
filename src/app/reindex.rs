//! `ragd reindex`: throws the search index away and builds it again from
//! the database, with the server stopped (the data dir lock says so). The
//! server does the same by itself when the index is missing, damaged or of
//! an older format; the command is for an operator who wants it now, or
//! who suspects the index.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::StartupError;
use crate::config::SyncMode;
use crate::db::{self, Db};
use crate::lock::DataDirLock;
use crate::search;
use crate::worker::indexer;

/// What a rebuild did.
#[derive(Debug)]
pub struct Reindexed {
    /// Chunks in the new index.
    pub chunks: u64,
    pub took: Duration,
}

/// Rebuilds `<data_dir>/index` from `<data_dir>/ragd.db`.
pub async fn reindex(data_dir: &Path) -> Result<Reindexed, StartupError> {
    let started = Instant::now();
    let db_path = super::existing_database(data_dir).map_err(StartupError::Config)?;
    let runtime = |e: String| StartupError::Runtime(e);
    let (dir, path) = (data_dir.to_owned(), db_path.clone());
    let (_lock, db) = tokio::task::spawn_blocking(move || {
        let lock = DataDirLock::acquire(&dir).map_err(runtime)?;
        // No events come of a rebuild: nobody listens.
        let db = Db::open(&path, SyncMode::Full, Arc::new(|_| {}))
            .map_err(|e| runtime(format!("cannot open the database {}: {e}", path.display())))?;
        Ok::<_, StartupError>((lock, db))
    })
    .await
    .map_err(|e| runtime(format!("start-up task failed: {e}")))??;

    let index_dir = data_dir.join("index");
    let epoch = db.epoch().to_owned();
    let index = tokio::task::spawn_blocking(move || {
        match std::fs::remove_dir_all(&index_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", index_dir.display())),
        }
        search::Index::open(&index_dir, &epoch)
            .map(|(index, _)| index)
            .map_err(|e| format!("cannot create the search index: {e}"))
    })
    .await
    .map_err(|e| runtime(format!("start-up task failed: {e}")))?
    .map_err(runtime)?;

    let last = db
        .read(db::chunks::last_rowid)
        .await
        .map_err(|e| runtime(e.to_string()))?;
    tracing::info!(last_chunk = last, "rebuilding the search index");
    let mut deletes_through = 0;
    let mut logged = Instant::now();
    loop {
        let applied = indexer::apply_next(&db, &index)
            .await
            .map_err(|e| runtime(format!("cannot rebuild the search index: {e}")))?;
        deletes_through = deletes_through.max(applied.deletes_through);
        if !applied.changed {
            break;
        }
        if logged.elapsed() >= Duration::from_secs(5) {
            tracing::info!(
                through = index.through(),
                last_chunk = last,
                "rebuilding the search index"
            );
            logged = Instant::now();
        }
    }
    // The queue holds deletes of chunks that are gone: the new index never
    // had them.
    if deletes_through > 0 {
        db.write(move |tx| db::chunks::clear_deletes(tx, deletes_through))
            .await
            .map_err(|e| runtime(e.to_string()))?;
    }
    db.close().await;
    Ok(Reindexed {
        chunks: index.len(),
        took: started.elapsed(),
    })
}
