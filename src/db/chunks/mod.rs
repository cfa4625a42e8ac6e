//! The `chunks` table and its search: a document's current chunk set
//! (`replace`), each user's full-text index kept in step with it by the
//! writer (`index`), and ranked plain-text search over it (`search`).

mod index;
mod search;
mod snippet;
#[cfg(test)]
mod tests;

use rusqlite::{Connection, params};
use tracing::instrument;

use super::Result;
use crate::types::ChunkText;
pub use index::{drop_user_index, index_pending, merge_index_step};
pub use search::search;

/// Swaps in a document's new chunk set: the old chunks leave (their index
/// entries follow, see `index`), the new ones take new ids.
#[instrument(skip_all, fields(chunks = chunks.len()))]
pub fn replace(conn: &Connection, document_id: &str, user_id: &str, chunks: &[ChunkText]) -> Result<()> {
    conn.execute("DELETE FROM chunks WHERE document_id = ?1", [document_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text, context)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
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
    }
    Ok(())
}
