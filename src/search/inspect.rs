//! The index read from outside the server, for `ragd check`: it only
//! reads (no writer, whose lock a running server holds), and reports what
//! the last commit holds.

use std::collections::HashSet;
use std::path::Path;

use tantivy::ReloadPolicy;

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

/// Why the index cannot be compared with the database: the reasons the
/// server would build a new one at start (`Missing`, `Stale`), or could
/// not read it (`Damaged`).
pub use super::Fresh as Unusable;

/// Reads the index in `dir` without writing to it.
pub fn read(dir: &Path) -> Result<Contents, Unusable> {
    let (index, payload) = super::open_current(dir)?;
    let damaged = |e: tantivy::TantivyError| Unusable::Damaged(e.to_string());
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
