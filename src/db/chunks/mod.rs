//! The `chunks` table: each document's chunk sets (a new set is staged
//! beside the live one, then made live: `stage`, `keep_only`), the users'
//! keys in the full-text index (`user_indexes`), what the index reads to
//! keep in step (`feed`), and the passages of ranked hits (`passages`).
//! The index itself is `crate::search`.

mod feed;
mod passages;
mod snippet;
#[cfg(test)]
mod tests;

use rusqlite::{Connection, OptionalExtension, params};
use tracing::instrument;

use super::{Error, Result};
use crate::types::ChunkText;
pub use feed::{Deletes, clear_deletes, deletes, last_rowid, unindexed};
pub use passages::passages;

/// The rowids of a chunk set, first..=last (consecutive: a set is written
/// by one statement loop in one transaction).
pub type Set = (i64, i64);

/// The user's key in the index, if the user has ever had chunks.
#[instrument(skip_all)]
pub fn user_key(conn: &Connection, user_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT n FROM user_indexes WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))
        .optional()?)
}

/// Forgets the user's key (the account is being deleted); its chunks'
/// deletes are queued for the index by the trigger as usual.
pub fn forget_user(conn: &Connection, user_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM user_indexes WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// Writes a new chunk set for the document beside its live set `live`,
/// first removing every other chunk of the document (a set staged by an
/// attempt that never finished). Returns the new set, `None` when
/// `chunks` is empty. Nothing is served from it until `keep_only` makes it
/// live.
#[instrument(skip_all, fields(chunks = chunks.len()))]
pub fn stage(
    conn: &Connection,
    document_id: &str,
    user_id: &str,
    live: Option<Set>,
    chunks: &[ChunkText],
) -> Result<Option<Set>> {
    delete_outside(conn, document_id, live)?;
    if chunks.is_empty() {
        return Ok(None);
    }
    conn.prepare_cached("INSERT INTO user_indexes (user_id) VALUES (?1) ON CONFLICT DO NOTHING")?
        .execute([user_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text, context)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut first = None;
    for (ordinal, chunk) in chunks.iter().enumerate() {
        let ordinal = i64::try_from(ordinal).unwrap_or(i64::MAX);
        insert.execute(params![
            document_id,
            user_id,
            ordinal,
            chunk.start,
            chunk.end,
            chunk.text,
            chunk.context
        ])?;
        first.get_or_insert(conn.last_insert_rowid());
    }
    let last = conn.last_insert_rowid();
    let first = first.unwrap_or(last);
    let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
    if last - first + 1 != count {
        return Err(Error::Other(format!(
            "the chunks of {document_id} did not get consecutive rowids ({first}..{last} for {count})"
        )));
    }
    Ok(Some((first, last)))
}

/// Deletes every chunk of the document outside `set` (all of them when
/// `None`): the old set once a new one is live.
#[instrument(skip_all)]
pub fn keep_only(conn: &Connection, document_id: &str, set: Option<Set>) -> Result<()> {
    delete_outside(conn, document_id, set)
}

fn delete_outside(conn: &Connection, document_id: &str, set: Option<Set>) -> Result<()> {
    // An empty range keeps nothing.
    let (first, last) = set.unwrap_or((1, 0));
    conn.prepare_cached("DELETE FROM chunks WHERE document_id = ?1 AND (rowid < ?2 OR rowid > ?3)")?
        .execute(params![document_id, first, last])?;
    Ok(())
}
