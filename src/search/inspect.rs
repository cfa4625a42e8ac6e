//! The index read from outside the server, for `ragd check`: it only
//! reads (no writer, whose lock a running server holds), and reports what
//! the last commit holds.

use std::collections::HashSet;
use std::path::Path;

use tantivy::{Index as Tantivy, ReloadPolicy};

use super::{FORMAT, Payload, schema};

/// What the index's last commit holds.
#[derive(Debug)]
pub struct Contents {
    /// The database it was built from (`Db::epoch`).
    pub epoch: String,
    /// Every chunk up to this rowid was taken in (or was gone by then).
    pub through: i64,
    /// The rowids of the chunks it holds (deleted ones left out).
    pub rowids: HashSet<i64>,
}

/// Why the index cannot be compared with the database.
#[derive(Debug)]
pub enum Unusable {
    /// There is none (a server builds it at start).
    Missing,
    /// Another format or no payload: a server rebuilds it at start.
    Stale(String),
    /// It cannot be opened or read.
    Damaged(String),
}

/// Reads the index in `dir` without writing to it.
pub fn read(dir: &Path) -> Result<Contents, Unusable> {
    if !dir.join("meta.json").exists() {
        return Err(Unusable::Missing);
    }
    let damaged = |e: tantivy::TantivyError| Unusable::Damaged(e.to_string());
    let index = Tantivy::open_in_dir(dir).map_err(damaged)?;
    if index.schema() != schema().0 {
        return Err(Unusable::Stale("its schema is not this version's".into()));
    }
    let payload: Payload = match index.load_metas().map_err(damaged)?.payload.as_deref() {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Unusable::Damaged(format!("unreadable commit payload: {e}")))?,
        None => return Err(Unusable::Stale("no commit payload".into())),
    };
    if payload.format != FORMAT {
        return Err(Unusable::Stale(format!(
            "format {} (this version: {FORMAT})",
            payload.format
        )));
    }
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .num_warming_threads(0)
        .try_into()
        .map_err(damaged)?;
    let searcher = reader.searcher();
    let mut rowids = HashSet::new();
    for segment in searcher.segment_readers() {
        let column = segment.fast_fields().u64("rowid").map_err(damaged)?;
        for doc in segment.doc_ids_alive() {
            let rowid = column
                .first(doc)
                .ok_or_else(|| Unusable::Damaged("a chunk without a rowid".into()))?;
            rowids.insert(i64::try_from(rowid).unwrap_or(i64::MAX));
        }
    }
    Ok(Contents {
        epoch: payload.epoch,
        through: payload.through,
        rowids,
    })
}
