//! Ranked plain-text search over a user's index: every word becomes a
//! quoted FTS5 string, so nothing a user types is query syntax; stop-words
//! are dropped. Ranking is BM25 with an exact shortcut for common terms.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use tracing::instrument;

use super::index::user_index;
use crate::db::Result;
use crate::types::Passage;
use crate::words::is_stop_word;

/// The distinct non-stop-words of plain text, lower-cased, at most 32.
pub(super) fn query_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        if is_stop_word(&word) || terms.contains(&word) {
            continue;
        }
        terms.push(word);
        if terms.len() == 32 {
            break;
        }
    }
    terms
}

/// Terms as an FTS5 expression: each a quoted string, joined with OR (BM25
/// ranks chunks matching more of them higher). Words hold only
/// alphanumerics, so quoting cannot be broken out of.
pub(super) fn any_of<S: AsRef<str>>(terms: &[S]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.as_ref()))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// A term in at least this share of all chunks (1/16) counts as common:
/// scoring every chunk it matches is what makes a search slow, and its
/// weight in BM25 is small (idf <= ln 15).
pub(super) const COMMON_SHARE: i64 = 16;
/// Below this many matches no term is worth treating apart.
pub(super) const COMMON_MIN: i64 = 256;
/// BM25's k1 in FTS5's `bm25()`: one occurrence of a term adds at most
/// idf * (k1 + 1) to a chunk's score, however often it occurs.
const BM25_K1: f64 = 1.2;

/// The best `limit` chunks of the user's documents for `text`, best first.
///
/// Ranking is FTS5's `bm25()` over every query term, and the result is
/// that of ranking every matching chunk; but a common term (stop-word-like
/// in this corpus) can match most chunks, and computing BM25 for each is
/// slow. So the search first ranks only the chunks that hold a rarer term
/// (the MaxScore idea): the chunks that hold them and a common term too are
/// ranked with all terms, those that hold only rare terms with those. A
/// chunk holding common terms alone can score at most the sum of their
/// upper bounds; when the `limit`-th best score found already reaches that
/// bound, no such chunk can enter the result and the shortcut is exact.
/// Otherwise the search ranks every match. Snippets and texts are read for
/// the returned chunks only.
#[instrument(skip_all)]
pub fn search(conn: &Connection, user_id: &str, text: &str, limit: usize) -> Result<Vec<Passage>> {
    let terms = query_terms(text);
    if terms.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let all = any_of(&terms);
    // One snapshot for all the statements: a chunk ranked here is still
    // there when its snippet is read.
    let tx = conn.unchecked_transaction()?;
    let Some(index) = user_index(&tx, user_id)? else {
        return Ok(Vec::new());
    };
    let ranked = match rank_by_rare_terms(&tx, &index, &terms, limit)? {
        Some(ranked) => ranked,
        None => rank(&tx, &index, &all, limit)?,
    };
    ranked
        .into_iter()
        .map(|(rowid, score)| hit(&tx, &terms, rowid, score))
        .collect()
}

/// The best `limit` (rowid, score) of the chunks in `index` (a user's
/// index table) matching `expr`.
pub(super) fn rank(conn: &Connection, index: &str, expr: &str, limit: i64) -> Result<Vec<(i64, f64)>> {
    let ranked = conn
        .prepare_cached(&format!(
            "SELECT rowid, -bm25({index}) FROM {index} WHERE {index} MATCH ?1
             ORDER BY bm25({index}) LIMIT ?2"
        ))?
        .query_map(params![expr, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ranked)
}

/// The exact ranking of [`search`] without scoring the chunks that hold
/// only common terms; `None` when the query has no such split or the
/// shortcut cannot prove its result, and every match must be ranked.
pub(super) fn rank_by_rare_terms(
    conn: &Connection,
    index: &str,
    terms: &[String],
    limit: i64,
) -> Result<Option<Vec<(i64, f64)>>> {
    if terms.len() < 2 {
        return Ok(None);
    }
    // An upper bound of the number of the user's chunks (rowids only grow,
    // and are shared by all users), which is all the bound below needs: idf
    // grows with it.
    let chunks: i64 = conn
        .prepare_cached("SELECT coalesce(max(rowid), 0) FROM chunks")?
        .query_row([], |r| r.get(0))?;
    let common = (chunks / COMMON_SHARE).max(COMMON_MIN);
    let mut rare = Vec::new();
    let mut frequent = Vec::new();
    for term in terms {
        // Counting stops at `common`, so a common term costs little here.
        let matches: i64 = conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM (SELECT 1 FROM {index} WHERE {index} MATCH ?1 LIMIT ?2)"
            ))?
            .query_row(params![any_of(&[term]), common], |r| r.get(0))?;
        if matches < common {
            rare.push(term)
        } else {
            frequent.push(term)
        }
    }
    if rare.is_empty() || frequent.is_empty() {
        return Ok(None);
    }
    // FTS5's idf: ln((N - n + 0.5) / (n + 0.5)), at least 1e-6; largest
    // for the fewest matches (n = common) in the largest table.
    let (n, matches) = (chunks as f64, common as f64);
    let idf = ((n - matches + 0.5) / (matches + 0.5)).ln().max(1e-6);
    let common_only_bound = frequent.len() as f64 * idf * (BM25_K1 + 1.0);

    let rare_expr = any_of(&rare);
    // Chunks with a rare and a common term: scored with every term.
    let both = rank(
        conn,
        index,
        &format!("({rare_expr}) AND ({})", any_of(&frequent)),
        limit,
    )?;
    // Chunks with rare terms: scored with those; exact for the ones that
    // hold no common term, and a lower bound (never above `both`'s last
    // score) for the others that `both` did not return.
    let mut scores: HashMap<i64, f64> = rank(conn, index, &rare_expr, limit)?.into_iter().collect();
    scores.extend(both);
    let mut ranked: Vec<(i64, f64)> = scores.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let proven = usize::try_from(limit).is_ok_and(|l| ranked.len() == l)
        && ranked
            .last()
            .is_some_and(|&(_, score)| score >= common_only_bound);
    Ok(proven.then_some(ranked))
}

/// The API item of one ranked chunk: its document, and a snippet around
/// the query's terms.
fn hit(conn: &Connection, terms: &[String], rowid: i64, score: f64) -> Result<Passage> {
    let hit = conn
        .prepare_cached(
            "SELECT c.document_id, d.filename, c.text, c.context
             FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.rowid = ?1",
        )?
        .query_row(params![rowid], |r| {
            let text: String = r.get(2)?;
            Ok(Passage {
                document_id: r.get(0)?,
                filename: r.get(1)?,
                chunk_id: rowid.to_string(),
                snippet: super::snippet::snippet(&text, terms),
                score,
                text,
                context: r.get(3)?,
            })
        })?;
    Ok(hit)
}
