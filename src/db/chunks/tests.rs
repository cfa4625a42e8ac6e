//! Search over real FTS5 tables: ranking, the rare-term shortcut, per-user
//! statistics, deletes, and the index's bookkeeping.

use rusqlite::Connection;

use super::index::user_index;
use super::search::{any_of, query_terms, rank, rank_by_rare_terms};
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
