//! The passages of ranked index hits: each hit's chunk with its document
//! and a snippet, or nothing when the chunk is not the user's, is gone, or
//! is not in its document's live set (staged, or replaced since the index
//! last took in its deletes).

use rusqlite::{Connection, OptionalExtension, params};
use tracing::instrument;

use super::snippet::snippet;
use crate::db::Result;
use crate::types::Passage;

/// The first `limit` hits (rowid, score) that are live chunks of the
/// user's, in the hits' order, as passages with snippets around `words`.
#[instrument(skip_all, fields(hits = hits.len()))]
pub fn passages(
    conn: &Connection,
    user_id: &str,
    hits: &[(i64, f32)],
    words: &[String],
    limit: usize,
) -> Result<Vec<Passage>> {
    // One snapshot: a chunk found live is still there when it is read.
    let tx = conn.unchecked_transaction()?;
    let mut found = Vec::with_capacity(limit.min(hits.len()));
    let mut read = tx.prepare_cached(
        "SELECT c.document_id, d.filename, c.text, c.context
         FROM chunks c JOIN documents d ON d.id = c.document_id
         WHERE c.rowid = ?1 AND c.user_id = ?2 AND c.rowid BETWEEN d.chunks_first AND d.chunks_last",
    )?;
    for &(rowid, score) in hits {
        if found.len() == limit {
            break;
        }
        let passage = read
            .query_row(params![rowid, user_id], |r| {
                let text: String = r.get(2)?;
                Ok(Passage {
                    document_id: r.get(0)?,
                    filename: r.get(1)?,
                    chunk_id: rowid.to_string(),
                    snippet: snippet(&text, words),
                    score: f64::from(score),
                    text,
                    context: r.get(3)?,
                })
            })
            .optional()?;
        found.extend(passage);
    }
    Ok(found)
}
