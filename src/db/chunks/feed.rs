//! What the full-text index reads to keep in step with `chunks`: the
//! chunks written since it last read (rowids only grow, AUTOINCREMENT),
//! and the queue of deleted chunks that a trigger fills (migration 8),
//! which it clears once it has applied them.

use rusqlite::{Connection, params};
use tracing::instrument;

use crate::db::Result;
use crate::types::IndexChunk;

/// The chunks with rowids above `after`, at most `limit`, in rowid order,
/// with their owners' keys.
#[instrument(skip_all)]
pub fn unindexed(conn: &Connection, after: i64, limit: usize) -> Result<Vec<IndexChunk>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let chunks = conn
        .prepare_cached(
            "SELECT c.rowid, k.n, c.context, c.text
             FROM chunks c JOIN user_indexes k ON k.user_id = c.user_id
             WHERE c.rowid > ?1 ORDER BY c.rowid LIMIT ?2",
        )?
        .query_map(params![after, limit], |r| {
            Ok(IndexChunk {
                rowid: r.get(0)?,
                user_key: r.get(1)?,
                context: r.get(2)?,
                text: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(chunks)
}

/// The highest rowid any chunk has had (0 for none).
pub fn last_rowid(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'chunks'), 0)")?
        .query_row([], |r| r.get(0))?)
}

/// A slice of the delete queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deletes {
    /// Rowids of deleted chunks, ascending.
    pub chunks: Vec<i64>,
    /// The last queue entry read (`clear_deletes` removes up to it).
    pub through: i64,
}

/// The oldest `limit` entries of the delete queue.
#[instrument(skip_all)]
pub fn deletes(conn: &Connection, limit: usize) -> Result<Deletes> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT id, chunk FROM index_deletes ORDER BY id LIMIT ?1")?
        .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let through = rows.last().map_or(0, |r| r.0);
    let mut chunks: Vec<i64> = rows.into_iter().map(|r| r.1).collect();
    chunks.sort_unstable();
    Ok(Deletes { chunks, through })
}

/// Removes the queue entries up to `through`, which the index has applied.
pub fn clear_deletes(conn: &Connection, through: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM index_deletes WHERE id <= ?1")?
        .execute([through])?;
    Ok(())
}
