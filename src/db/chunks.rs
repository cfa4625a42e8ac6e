//! Full-text search over a user's chunks (FTS5, BM25). Queries are plain
//! text: every word becomes a quoted FTS5 string, so nothing a user types
//! is query syntax; stop-words are dropped.

use std::collections::HashMap;

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, params};
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
    /// The title the chunk falls under, or empty (not part of the API item).
    #[serde(skip)]
    pub context: String,
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

/// The name of the full-text index table of a user's chunks (migration 7):
/// `n` comes from `user_indexes`, never from input.
fn index_table(n: i64) -> String {
    format!("chunks_fts_{n}")
}

/// The user's index table, if the user has indexed chunks (or had).
fn user_index(conn: &Connection, user_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT n FROM user_indexes WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))
        .optional()?
        .map(index_table))
}

/// Creates the user's (empty) index table.
fn create_user_index(conn: &Connection, user_id: &str) -> Result<String> {
    conn.prepare_cached("INSERT INTO user_indexes (user_id) VALUES (?1)")?
        .execute([user_id])?;
    let table = index_table(conn.last_insert_rowid());
    // Contentless: the text is in `chunks` (and, for a deleted chunk, in
    // `fts_deleted`). Background merges (`merge_index_step`) combine any
    // two segments of a level.
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {table} USING fts5 (
             text, context, content = '',
             tokenize = 'porter unicode61 remove_diacritics 2'
         );
         INSERT INTO {table} ({table}, rank) VALUES ('usermerge', 2);"
    ))?;
    Ok(table)
}

/// Drops the user's index table (the account is being deleted).
pub fn drop_user_index(conn: &Connection, user_id: &str) -> Result<()> {
    let n: Option<i64> = conn
        .prepare_cached("DELETE FROM user_indexes WHERE user_id = ?1 RETURNING n")?
        .query_row([user_id], |r| r.get(0))
        .optional()?;
    if let Some(n) = n {
        conn.execute_batch(&format!("DROP TABLE {}", index_table(n)))?;
    }
    Ok(())
}

/// Brings the full-text indexes up to date with `chunks`: removes the
/// chunks deleted since the last call (queued by a trigger, migration 7)
/// and adds the chunks written since, in one pass over them, so that FTS5
/// writes each user's new chunks as one segment. The writer calls it at the
/// end of every batch, in the batch's transaction and outside every
/// savepoint: a chunk is searchable from the commit that adds it, and gone
/// from the commit that deletes it. Returns how many chunks it indexed.
pub fn index_pending(conn: &Connection) -> Result<usize> {
    let deleted: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT user_id FROM fts_deleted")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for user_id in &deleted {
        // No index left: the account was deleted, and its index with it.
        if let Some(table) = user_index(conn, user_id)? {
            mark_changed(conn, user_id)?;
            conn.prepare_cached(&format!(
                "INSERT INTO {table} ({table}, rowid, text, context)
                 SELECT 'delete', rowid, text, context FROM fts_deleted WHERE user_id = ?1"
            ))?
            .execute([user_id])?;
        }
    }
    if !deleted.is_empty() {
        conn.prepare_cached("DELETE FROM fts_deleted")?.execute([])?;
    }

    let through: i64 = conn
        .prepare_cached("SELECT indexed_through FROM fts_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    // Every write but a single-row insert into FTS5 (a statement that may
    // need rolling back alone, such as INSERT ... SELECT) makes FTS5 write
    // out the terms it holds for the tables already written in this
    // transaction as a segment. So the bookkeeping comes first, and the pass
    // below only inserts, one row at a time: one segment per user.
    let users: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT user_id FROM chunks WHERE rowid > ?1")?
        .query_map([through], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut tables: HashMap<String, String> = HashMap::with_capacity(users.len());
    for user_id in users {
        let table = match user_index(conn, &user_id)? {
            Some(table) => table,
            None => create_user_index(conn, &user_id)?,
        };
        mark_changed(conn, &user_id)?;
        tables.insert(user_id, table);
    }
    if tables.is_empty() {
        // Most batches (chat turns, uploads) write no chunks.
        return Ok(0);
    }
    let mut pending = conn
        .prepare_cached("SELECT rowid, user_id, text, context FROM chunks WHERE rowid > ?1 ORDER BY rowid")?;
    let mut rows = pending.query([through])?;
    let mut indexed = 0;
    while let Some(row) = rows.next()? {
        let user_id: String = row.get(1)?;
        let table = tables
            .get(&user_id)
            .ok_or_else(|| super::Error::Other(format!("no search index for the chunks of {user_id}")))?;
        conn.prepare_cached(&format!(
            "INSERT INTO {table} (rowid, text, context) VALUES (?1, ?2, ?3)"
        ))?
        .execute(params![
            row.get::<_, i64>(0)?,
            ToSqlOutput::Borrowed(row.get_ref(2)?),
            ToSqlOutput::Borrowed(row.get_ref(3)?)
        ])?;
        indexed += 1;
    }
    if indexed > 0 {
        conn.prepare_cached(
            "UPDATE fts_state SET indexed_through = (SELECT max(rowid) FROM chunks) WHERE id = 1",
        )?
        .execute([])?;
    }
    Ok(indexed)
}

/// Notes that the user's index changed: it may have segments to merge.
fn mark_changed(conn: &Connection, user_id: &str) -> Result<()> {
    conn.prepare_cached("UPDATE user_indexes SET merged = 0 WHERE user_id = ?1 AND merged")?
        .execute([user_id])?;
    Ok(())
}

/// One step of background index maintenance: FTS5 merges up to `pages`
/// leaf pages of segments on the same level (two or more) in the first
/// user index, changed since it was last merged, that has any. Fewer
/// segments make every search cheaper, since each query term is looked up
/// in each segment. Returns whether there was work to do.
pub fn merge_index_step(conn: &Connection, pages: u32) -> Result<bool> {
    let changed: Vec<i64> = conn
        .prepare_cached("SELECT n FROM user_indexes WHERE NOT merged ORDER BY n")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for n in changed {
        let table = index_table(n);
        let before = conn.total_changes();
        conn.prepare_cached(&format!(
            "INSERT INTO {table} ({table}, rank) VALUES ('merge', ?1)"
        ))?
        .execute([pages])?;
        // FTS5's documented test: a merge that did nothing changes fewer
        // than two rows.
        if conn.total_changes() - before >= 2 {
            return Ok(true);
        }
        conn.prepare_cached("UPDATE user_indexes SET merged = 1 WHERE n = ?1")?
            .execute([n])?;
    }
    Ok(false)
}

/// The distinct non-stop-words of plain text, lower-cased, at most 32.
fn query_terms(text: &str) -> Vec<String> {
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
fn any_of<S: AsRef<str>>(terms: &[S]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.as_ref()))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// A term in at least this share of all chunks (1/16) counts as common:
/// scoring every chunk it matches is what makes a search slow, and its
/// weight in BM25 is small (idf <= ln 15).
const COMMON_SHARE: i64 = 16;
/// Below this many matches no term is worth treating apart.
const COMMON_MIN: i64 = 256;
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
pub fn search(conn: &Connection, user_id: &str, text: &str, limit: usize) -> Result<Vec<Hit>> {
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
fn rank(conn: &Connection, index: &str, expr: &str, limit: i64) -> Result<Vec<(i64, f64)>> {
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
fn rank_by_rare_terms(
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
fn hit(conn: &Connection, terms: &[String], rowid: i64, score: f64) -> Result<Hit> {
    let hit = conn
        .prepare_cached(
            "SELECT c.document_id, d.filename, c.text, c.context
             FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.rowid = ?1",
        )?
        .query_row(params![rowid], |r| {
            let text: String = r.get(2)?;
            Ok(Hit {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated database holding, per user, one document with these
    /// chunks.
    fn database(corpus: &[(&str, Vec<String>)]) -> (tempfile::TempDir, Connection) {
        let (dir, mut conn) = crate::db::testing::migrated();
        let tx = conn.transaction().expect("begin");
        for (user, chunks) in corpus {
            crate::db::testing::insert_user(&tx, user);
            let doc = format!("doc-{user}");
            tx.execute(
                "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256,
                                        status, created_at, updated_at)
                 VALUES (?1, ?2, 'f.txt', 'text/plain', 'txt', 0, '', 'ready', 0, 0)",
                [&doc, *user],
            )
            .expect("document");
            for (ordinal, text) in chunks.iter().enumerate() {
                tx.execute(
                    "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
                     VALUES (?1, ?2, ?3, 0, 0, ?4)",
                    params![doc, user, ordinal as i64, text],
                )
                .expect("chunk");
            }
        }
        index_pending(&tx).expect("index");
        tx.commit().expect("commit");
        (dir, conn)
    }

    /// `n` chunks over a Zipf-like vocabulary: word `wN` is in about
    /// 1/(N+1) of them, 1-3 times, so the first words are common and later
    /// ones rare, like natural text.
    fn zipf_chunks(n: usize, mut seed: u64) -> Vec<String> {
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        (0..n)
            .map(|_| {
                let mut words = Vec::new();
                for w in 0..300 {
                    if next() < 1.0 / (w as f64 + 1.0) {
                        let times = 1 + (next() * 3.0) as usize;
                        words.extend(std::iter::repeat_n(format!("w{w}"), times));
                    }
                }
                words.join(" ")
            })
            .collect()
    }

    /// The user's index table.
    fn index_of(conn: &Connection, user: &str) -> String {
        user_index(conn, user)
            .expect("lookup")
            .expect("the user has an index")
    }

    /// Checks the user's index with FTS5's integrity check.
    fn assert_index_consistent(conn: &Connection, user: &str) {
        let index = index_of(conn, user);
        conn.execute(
            &format!("INSERT INTO {index} ({index}) VALUES ('integrity-check')"),
            [],
        )
        .expect("the index is consistent");
    }

    /// Asserts that `search` returns what ranking every match returns.
    fn assert_ranked_like_every_match(conn: &Connection, user: &str, text: &str, limit: i64) {
        let every = rank(conn, &index_of(conn, user), &any_of(&query_terms(text)), limit).expect("rank all");
        let hits = search(conn, user, text, limit as usize).expect("search");
        assert_eq!(hits.len(), every.len(), "{text} limit {limit}");
        for (hit, (rowid, score)) in hits.iter().zip(&every) {
            assert!(
                (hit.score - score).abs() < 1e-9,
                "{text}: {} vs {score}",
                hit.score
            );
            // Equal scores may come in either order.
            if hits.iter().filter(|h| (h.score - score).abs() < 1e-9).count() == 1 {
                assert_eq!(hit.chunk_id, rowid.to_string(), "{text} limit {limit}");
            }
        }
    }

    #[test]
    fn the_shortcut_ranks_exactly_like_scoring_every_match() {
        let (_dir, conn) = database(&[("u1", zipf_chunks(3000, 7)), ("u2", zipf_chunks(3000, 8))]);
        let mut shortcut_taken = 0;
        // A common word (w0-w9: in a tenth to all of the chunks) with
        // rarer ones (down to a handful of chunks), for several limits.
        for common in [0, 2, 5, 9] {
            for rare in [11, 14, 20, 45, 150, 299] {
                for limit in [1, 4, 10, 50] {
                    let text = format!("w{common} w{rare} w{}", rare + 1);
                    assert_ranked_like_every_match(&conn, "u1", &text, limit);
                    let terms = query_terms(&text);
                    if rank_by_rare_terms(&conn, &index_of(&conn, "u1"), &terms, limit)
                        .expect("shortcut")
                        .is_some()
                    {
                        shortcut_taken += 1;
                    }
                }
            }
        }
        // The comparison means something only if the shortcut ran.
        assert!(
            shortcut_taken >= 20,
            "shortcut taken {shortcut_taken} times of 96"
        );
    }

    #[test]
    fn a_chunk_with_only_common_words_still_wins_when_it_scores_higher() {
        // "alpha" is common (300 of 3,004 chunks, over the 256 threshold);
        // "beta" is rare but only in four very long chunks, so short chunks
        // that repeat "alpha" score higher than any "beta" chunk.
        let mut chunks = vec!["filler words here".to_owned(); 2700];
        chunks.extend((0..296).map(|i| format!("alpha alpha alpha alpha x{i}")));
        chunks.extend((0..4).map(|i| format!("alpha beta {} y{i}", "padding ".repeat(200))));
        chunks.extend((0..4).map(|i| format!("beta {} z{i}", "padding ".repeat(200))));
        let (_dir, conn) = database(&[("u1", chunks)]);
        let hits = search(&conn, "u1", "alpha beta", 4).expect("search");
        assert_eq!(hits.len(), 4);
        assert!(hits.iter().all(|h| h.text.starts_with("alpha alpha")), "{hits:?}");
        assert_ranked_like_every_match(&conn, "u1", "alpha beta", 4);
        assert_ranked_like_every_match(&conn, "u1", "alpha beta", 10);
    }

    #[test]
    fn merging_leaves_fewer_segments_and_the_same_results() {
        let (_dir, mut conn) = database(&[("u1", zipf_chunks(100, 3))]);
        // Each batch of new chunks becomes one segment.
        for batch in 0..6 {
            let tx = conn.transaction().expect("begin");
            for (ordinal, text) in zipf_chunks(100, 10 + batch).iter().enumerate() {
                tx.execute(
                    "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
                     VALUES ('doc-u1', 'u1', ?1, 0, 0, ?2)",
                    params![ordinal as i64, text],
                )
                .expect("chunk");
            }
            assert_eq!(index_pending(&tx).expect("index"), 100);
            tx.commit().expect("commit");
        }
        let index = index_of(&conn, "u1");
        let segments = |conn: &Connection| -> i64 {
            conn.query_row(
                &format!("SELECT count(DISTINCT segid) FROM {index}_idx"),
                [],
                |r| r.get(0),
            )
            .expect("segments")
        };
        let before = segments(&conn);
        let hits_before = search(&conn, "u1", "w3 w17 w60", 20).expect("search");
        let mut steps = 0;
        while merge_index_step(&conn, 16).expect("merge") {
            steps += 1;
            assert!(steps < 1000, "merging never ends");
        }
        assert!(steps > 0);
        assert!(
            segments(&conn) < before,
            "{} segments, {before} before",
            segments(&conn)
        );
        assert_eq!(
            search(&conn, "u1", "w3 w17 w60", 20).expect("search"),
            hits_before
        );
        // Nothing more to merge, and the index is not looked at again until
        // it changes.
        assert!(!merge_index_step(&conn, 16).expect("merge"));
        let merged = |conn: &Connection| -> bool {
            conn.query_row("SELECT merged FROM user_indexes WHERE user_id = 'u1'", [], |r| {
                r.get(0)
            })
            .expect("flag")
        };
        assert!(merged(&conn));
        let tx = conn.transaction().expect("begin");
        tx.execute(
            "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
             VALUES ('doc-u1', 'u1', 999, 0, 0, 'w1 w2')",
            [],
        )
        .expect("chunk");
        index_pending(&tx).expect("index");
        tx.commit().expect("commit");
        assert!(!merged(&conn), "a new segment may need merging");
        while merge_index_step(&conn, 16).expect("merge") {}
        assert!(merged(&conn));
        let tx = conn.transaction().expect("begin");
        tx.execute("DELETE FROM chunks WHERE ordinal = 999", [])
            .expect("delete");
        index_pending(&tx).expect("apply the delete");
        tx.commit().expect("commit");
        assert!(!merged(&conn), "a delete writes to the index too");
    }

    #[test]
    fn chunks_deleted_before_and_after_indexing_leave_a_consistent_index() {
        let (_dir, mut conn) = database(&[("u1", vec!["kept alpha".to_owned(), "gone beta".to_owned()])]);
        let tx = conn.transaction().expect("begin");
        // Written and deleted in one batch: never indexed, nothing to remove.
        tx.execute(
            "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
             VALUES ('doc-u1', 'u1', 9, 0, 0, 'fleeting gamma')",
            [],
        )
        .expect("chunk");
        tx.execute("DELETE FROM chunks WHERE text = 'fleeting gamma'", [])
            .expect("delete new");
        // Indexed in an earlier batch: removed from the index.
        tx.execute("DELETE FROM chunks WHERE text = 'gone beta'", [])
            .expect("delete old");
        assert_eq!(index_pending(&tx).expect("index"), 0);
        tx.commit().expect("commit");
        assert_index_consistent(&conn, "u1");
        assert_eq!(search(&conn, "u1", "alpha", 5).expect("search").len(), 1);
        assert!(search(&conn, "u1", "beta gamma", 5).expect("search").is_empty());
    }

    #[test]
    fn chunks_with_a_context_match_it_and_leave_the_index_consistent_when_deleted() {
        let (_dir, mut conn) = database(&[("u1", vec!["plain delta".to_owned()])]);
        let tx = conn.transaction().expect("begin");
        for (ordinal, text) in ["first passage", "second passage"].iter().enumerate() {
            tx.execute(
                "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text, context)
                 VALUES ('doc-u1', 'u1', ?1, 0, 0, ?2, 'Volcanic soils')",
                params![ordinal as i64 + 1, text],
            )
            .expect("chunk");
        }
        assert_eq!(index_pending(&tx).expect("index"), 2);
        tx.commit().expect("commit");
        let hits = search(&conn, "u1", "volcanic", 5).expect("search");
        assert_eq!(hits.len(), 2, "both passages match their title: {hits:?}");
        assert!(
            hits.iter()
                .all(|h| h.context == "Volcanic soils" && !h.text.contains("Volcanic"))
        );

        let tx = conn.transaction().expect("begin");
        tx.execute("DELETE FROM chunks WHERE context <> ''", [])
            .expect("delete");
        index_pending(&tx).expect("apply the deletes");
        tx.commit().expect("commit");
        assert_index_consistent(&conn, "u1");
        assert!(search(&conn, "u1", "volcanic", 5).expect("search").is_empty());
        assert_eq!(search(&conn, "u1", "delta", 5).expect("search").len(), 1);
    }

    #[test]
    fn deleted_chunks_leave_the_scores_of_an_index_that_never_had_them() {
        let kept = zipf_chunks(400, 21);
        let (_dir, mut conn) = database(&[("u1", kept.clone())]);
        let tx = conn.transaction().expect("begin");
        for (ordinal, text) in zipf_chunks(400, 22).iter().enumerate() {
            tx.execute(
                "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
                 VALUES ('doc-u1', 'u1', ?1, 0, 0, ?2)",
                params![1000 + ordinal as i64, text],
            )
            .expect("chunk");
        }
        index_pending(&tx).expect("index");
        tx.commit().expect("commit");
        let tx = conn.transaction().expect("begin");
        tx.execute("DELETE FROM chunks WHERE ordinal >= 1000", [])
            .expect("delete the second half");
        index_pending(&tx).expect("apply the deletes");
        tx.commit().expect("commit");

        // BM25 counts chunks and their lengths: the deleted ones must not.
        let (_fresh_dir, fresh) = database(&[("u1", kept)]);
        for text in ["w0 w30", "w3 w17 w60", "w120", "w1 w2 w250"] {
            let scores = |conn: &Connection| -> Vec<(String, f64)> {
                search(conn, "u1", text, 20)
                    .expect("search")
                    .into_iter()
                    .map(|h| (h.chunk_id, h.score))
                    .collect()
            };
            let (after, never) = (scores(&conn), scores(&fresh));
            assert_eq!(after.len(), never.len(), "{text}");
            for ((id, score), (fresh_id, fresh_score)) in after.iter().zip(&never) {
                assert!(
                    (score - fresh_score).abs() < 1e-9,
                    "{text}: {id} {score} vs {fresh_id} {fresh_score}"
                );
            }
        }
    }

    #[test]
    fn chunks_of_interleaved_users_make_one_segment_per_index() {
        let (_dir, mut conn) = database(&[
            ("u1", vec!["first".to_owned()]),
            ("u2", vec!["second".to_owned()]),
        ]);
        let tx = conn.transaction().expect("begin");
        crate::db::testing::insert_user(&tx, "u3");
        tx.execute(
            "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256,
                                    status, created_at, updated_at)
             VALUES ('doc-u3', 'u3', 'f.txt', 'text/plain', 'txt', 0, '', 'ready', 0, 0)",
            [],
        )
        .expect("document");
        // u1, u2 and a new user u3 (whose index is created on the way),
        // row after row.
        for ordinal in 1..=30 {
            let user = ["u1", "u2", "u3"][ordinal as usize % 3];
            tx.execute(
                "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
                 VALUES ('doc-' || ?1, ?1, ?2, 0, 0, 'word' || ?2)",
                params![user, ordinal],
            )
            .expect("chunk");
        }
        assert_eq!(index_pending(&tx).expect("index"), 30);
        tx.commit().expect("commit");
        for user in ["u1", "u2", "u3"] {
            let index = index_of(&conn, user);
            let segments: i64 = conn
                .query_row(
                    &format!("SELECT count(DISTINCT segid) FROM {index}_idx"),
                    [],
                    |r| r.get(0),
                )
                .expect("segments");
            // u1 and u2 also have the segment of their first chunk.
            let expected = if user == "u3" { 1 } else { 2 };
            assert_eq!(segments, expected, "{user}");
        }
        assert_eq!(search(&conn, "u3", "word2", 5).expect("search").len(), 1);
        assert!(search(&conn, "u3", "word3", 5).expect("search").is_empty());
    }

    #[test]
    fn search_never_returns_another_users_chunks() {
        let (_dir, conn) = database(&[("u1", zipf_chunks(500, 1)), ("u2", zipf_chunks(500, 2))]);
        for text in ["w0 w40", "w1 w2 w120", "w250"] {
            let hits = search(&conn, "u2", text, 50).expect("search");
            assert!(!hits.is_empty(), "{text}");
            assert!(hits.iter().all(|h| h.document_id == "doc-u2"), "{text}");
        }
    }

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    /// The FTS5 query `search` ranks for `text` (`None`: nothing searchable).
    fn fts_query(text: &str) -> Option<String> {
        let terms = query_terms(text);
        (!terms.is_empty()).then(|| any_of(&terms))
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
