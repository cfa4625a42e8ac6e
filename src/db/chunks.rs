//! Full-text search over a user's chunks (FTS5, BM25). Queries are plain
//! text: every word becomes a quoted FTS5 string, so nothing a user types
//! is query syntax; stop-words are dropped.

use rusqlite::{Connection, params};
use serde::Serialize;
use tracing::instrument;

use super::Result;

/// A matching chunk; `score` is higher for better matches.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub document_id: String,
    pub filename: String,
    pub chunk_id: String,
    pub snippet: String,
    pub score: f64,
    /// The whole chunk, for answer composition (not part of the API item).
    #[serde(skip)]
    pub text: String,
}

/// Common English words that carry no meaning for retrieval: matching
/// them costs time and ranks nothing.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "being", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing",
    "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here",
    "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more",
    "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours",
    "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
    "why", "will", "with", "would", "you", "your", "yours",
];

/// Whether a lower-cased word is too common to carry meaning.
pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// Turns plain text into an FTS5 query: the distinct non-stop-words, each
/// a quoted string, joined with OR (BM25 ranks documents matching more
/// words higher). `None` when nothing searchable is left.
pub fn fts_query(text: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        if STOP_WORDS.binary_search(&word.as_str()).is_ok() || terms.contains(&word) {
            continue;
        }
        terms.push(word);
        if terms.len() == 32 {
            break;
        }
    }
    if terms.is_empty() {
        return None;
    }
    // Words hold only alphanumerics, so quoting cannot be broken out of.
    Some(
        terms
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR "),
    )
}

/// The best `limit` chunks of the user's documents for `text`.
#[instrument(skip_all)]
pub fn search(conn: &Connection, user_id: &str, text: &str, limit: usize) -> Result<Vec<Hit>> {
    let Some(query) = fts_query(text) else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let hits = conn
        .prepare_cached(
            "SELECT c.document_id, d.filename, c.rowid,
                    snippet(chunks_fts, 0, '', '', '…', 24), -bm25(chunks_fts), c.text
             FROM chunks_fts
             JOIN chunks c ON c.rowid = chunks_fts.rowid
             JOIN documents d ON d.id = c.document_id
             WHERE chunks_fts MATCH ?1 AND c.user_id = ?2
             ORDER BY bm25(chunks_fts) LIMIT ?3",
        )?
        .query_map(params![query, user_id, limit], |r| {
            Ok(Hit {
                document_id: r.get(0)?,
                filename: r.get(1)?,
                chunk_id: r.get::<_, i64>(2)?.to_string(),
                snippet: r.get(3)?,
                score: r.get(4)?,
                text: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn user_text_never_becomes_query_syntax() {
        assert_eq!(fts_query("the and of"), None);
        assert_eq!(
            fts_query("\" -x a:b * NEAR( AND OR"),
            Some("\"x\" OR \"b\" OR \"near\"".to_owned())
        );
        assert_eq!(
            fts_query("Zürich zürich latency"),
            Some("\"zürich\" OR \"latency\"".to_owned())
        );
    }
}
