use super::*;

fn chunk(rowid: i64, user_key: i64, text: &str) -> IndexChunk {
    IndexChunk {
        rowid,
        user_key,
        context: String::new(),
        text: text.to_owned(),
    }
}

fn terms(user_key: i64, question: &str) -> Vec<String> {
    analyzer::query_terms(user_key, &analyzer::query_words(question))
}

fn rowids(hits: &[(i64, f32)]) -> Vec<i64> {
    hits.iter().map(|h| h.0).collect()
}

fn open(dir: &Path) -> Index {
    Index::open(dir, "epoch-1").expect("open").0
}

#[test]
fn a_committed_batch_is_searchable_and_each_user_sees_only_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(&dir.path().join("index"));
    index
        .apply(Batch {
            chunks: vec![
                chunk(1, 1, "The lighthouse keeper logs the tide."),
                chunk(2, 1, "Bread rises overnight."),
                chunk(3, 2, "Another lighthouse, another keeper."),
            ],
            deleted: vec![],
            through: 3,
        })
        .expect("apply");
    assert_eq!(index.through(), 3);
    let one = index
        .search(1, &terms(1, "lighthouse keepers"), 10)
        .expect("search");
    assert_eq!(rowids(&one), [1]);
    let two = index.search(2, &terms(2, "lighthouse"), 10).expect("search");
    assert_eq!(rowids(&two), [3]);
    assert!(
        index
            .search(3, &terms(3, "lighthouse"), 10)
            .expect("search")
            .is_empty()
    );
}

#[test]
fn scores_depend_on_the_askers_chunks_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(&dir.path().join("index"));
    let mine = vec![
        chunk(1, 1, "granite quarry on the hill"),
        chunk(2, 1, "a walk by the river"),
    ];
    index
        .apply(Batch {
            chunks: mine,
            deleted: vec![],
            through: 2,
        })
        .expect("apply");
    let before = index.search(1, &terms(1, "granite"), 10).expect("search");
    // Someone else uploads many chunks with the same word, and longer ones.
    let theirs = (10..60)
        .map(|r| chunk(r, 2, &"granite granite and more words about stone ".repeat(5)))
        .collect();
    index
        .apply(Batch {
            chunks: theirs,
            deleted: vec![],
            through: 59,
        })
        .expect("apply");
    let after = index.search(1, &terms(1, "granite"), 10).expect("search");
    assert_eq!(before, after);
}

#[test]
fn deletes_apply_to_single_rowids_and_runs_even_in_the_batch_that_adds_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(&dir.path().join("index"));
    let chunks = (1..=10)
        .map(|r| chunk(r, 1, &format!("harbour number {r}")))
        .collect();
    index
        .apply(Batch {
            chunks,
            deleted: vec![3, 5, 6, 7],
            through: 10,
        })
        .expect("apply");
    let mut hits = rowids(&index.search(1, &terms(1, "harbour"), 20).expect("search"));
    hits.sort_unstable();
    assert_eq!(hits, [1, 2, 4, 8, 9, 10]);
    index
        .apply(Batch {
            chunks: vec![],
            deleted: vec![1, 2, 10],
            through: 10,
        })
        .expect("apply");
    let mut hits = rowids(&index.search(1, &terms(1, "harbour"), 20).expect("search"));
    hits.sort_unstable();
    assert_eq!(hits, [4, 8, 9]);
}

#[test]
fn reopening_keeps_what_was_committed_and_a_foreign_or_broken_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    let (index, fresh) = Index::open(&path, "epoch-1").expect("open");
    assert_eq!(fresh, Some(Fresh::Missing));
    index
        .apply(Batch {
            chunks: vec![chunk(7, 1, "quince jam")],
            deleted: vec![],
            through: 9,
        })
        .expect("apply");
    drop(index);

    let (index, fresh) = Index::open(&path, "epoch-1").expect("reopen");
    assert_eq!(fresh, None);
    assert_eq!(index.through(), 9);
    assert_eq!(
        rowids(&index.search(1, &terms(1, "quince"), 5).expect("search")),
        [7]
    );
    drop(index);

    // Built from another database: rebuilt.
    let (index, fresh) = Index::open(&path, "epoch-2").expect("open for another db");
    assert!(matches!(fresh, Some(Fresh::Stale(_))), "{fresh:?}");
    assert_eq!((index.through(), index.len()), (0, 0));
    drop(index);

    // A damaged meta.json: rebuilt.
    std::fs::write(path.join("meta.json"), b"{ not json").expect("damage");
    let (index, fresh) = Index::open(&path, "epoch-2").expect("open damaged");
    assert!(matches!(fresh, Some(Fresh::Damaged(_))), "{fresh:?}");
    assert_eq!(index.through(), 0);
}

#[test]
fn runs_join_consecutive_rowids() {
    assert_eq!(runs(&[1, 2, 3, 5, 7, 8]), [(1, 3), (5, 5), (7, 8)]);
    assert_eq!(runs(&[]), []);
    assert_eq!(runs(&[4, 4, 5]), [(4, 5)]);
}

#[test]
fn the_best_chunk_comes_first_and_the_limit_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(&dir.path().join("index"));
    let mut chunks: Vec<IndexChunk> = (1..=30)
        .map(|r| {
            chunk(
                r,
                1,
                &format!("notes about meadow number {r} and some filler words"),
            )
        })
        .collect();
    chunks.push(chunk(31, 1, "kestrel over the meadow, a kestrel hunting"));
    index
        .apply(Batch {
            chunks,
            deleted: vec![],
            through: 31,
        })
        .expect("apply");
    let hits = index.search(1, &terms(1, "kestrel meadow"), 5).expect("search");
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0].0, 31);
    assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "{hits:?}");
}

#[test]
fn a_deleted_chunk_stops_counting_in_the_scores_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(&dir.path().join("index"));
    let chunks = vec![
        chunk(1, 1, "kestrel over the meadow at dawn"),
        chunk(2, 1, "field notes on meadow grasses"),
        chunk(3, 1, "rainfall totals for spring"),
    ];
    index
        .apply(Batch {
            chunks,
            deleted: vec![],
            through: 3,
        })
        .expect("apply");
    let question = terms(1, "kestrel meadow");
    let before = index.search(1, &question, 10).expect("search");
    index
        .apply(Batch {
            chunks: vec![chunk(4, 1, "a kestrel nest by the meadow wall")],
            deleted: vec![],
            through: 4,
        })
        .expect("apply");
    assert_ne!(index.search(1, &question, 10).expect("search")[..2], before[..]);
    index
        .apply(Batch {
            chunks: vec![],
            deleted: vec![4],
            through: 4,
        })
        .expect("apply");
    assert_eq!(index.search(1, &question, 10).expect("search"), before);
}

#[test]
fn an_idle_writer_is_closed_and_the_next_batch_opens_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(&dir.path().join("index"));
    // A new index holds no writer (nothing to close).
    assert!(!index.close_idle(Duration::ZERO).expect("close"));
    index
        .apply(Batch {
            chunks: vec![chunk(1, 1, "Tide tables for the harbour.")],
            deleted: vec![],
            through: 1,
        })
        .expect("apply");
    // Used just now: kept open for a long idle time, closed for none.
    assert!(!index.close_idle(Duration::from_secs(3600)).expect("close"));
    assert!(index.close_idle(Duration::ZERO).expect("close"));
    assert!(!index.close_idle(Duration::ZERO).expect("close"));
    assert_eq!(
        rowids(&index.search(1, &terms(1, "harbour"), 10).expect("search")),
        [1]
    );
    // The next batch opens a writer again, and deletes still apply.
    index
        .apply(Batch {
            chunks: vec![chunk(2, 1, "A second harbour.")],
            deleted: vec![1],
            through: 2,
        })
        .expect("apply after close");
    assert_eq!(
        rowids(&index.search(1, &terms(1, "harbour"), 10).expect("search")),
        [2]
    );
    drop(index);
    // What was committed survives a reopen.
    let reopened = open(&dir.path().join("index"));
    assert_eq!(reopened.through(), 2);
    assert_eq!(
        rowids(&reopened.search(1, &terms(1, "harbour"), 10).expect("search")),
        [2]
    );
}

#[test]
fn stop_words_are_not_indexed_so_they_do_not_make_a_chunk_longer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(&dir.path().join("index"));
    let padded = format!("granite quarry {}", "the of and to in it was ".repeat(20));
    let mut chunks = vec![chunk(1, 1, "granite quarry"), chunk(2, 1, &padded)];
    // Enough other chunks that "granite" is a rare word (a positive idf).
    chunks.extend((3..=12).map(|r| chunk(r, 1, &format!("meadow number {r}"))));
    index
        .apply(Batch {
            chunks,
            deleted: vec![],
            through: 12,
        })
        .expect("apply");
    let hits = index.search(1, &terms(1, "granite"), 10).expect("search");
    assert_eq!(hits.len(), 2, "{hits:?}");
    // Had its 140 stop-words counted, the padded chunk would score lower.
    assert_eq!(hits[0].1, hits[1].1, "{hits:?}");
    // The term a stop-word would have had is not in the index.
    let of = vec![format!("{}:of", analyzer::key(1))];
    assert!(index.search(1, &of, 10).expect("search").is_empty());
}

#[test]
fn an_index_of_an_older_format_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    let index = open(&path);
    index
        .apply(Batch {
            chunks: vec![chunk(1, 1, "quince jam")],
            deleted: vec![],
            through: 1,
        })
        .expect("apply");
    drop(index);
    // The payload, a JSON string inside meta.json, as an older build wrote it.
    let meta = std::fs::read_to_string(path.join("meta.json")).expect("meta");
    let ours = format!("\\\"format\\\":{FORMAT}");
    assert!(meta.contains(&ours), "{meta}");
    let older = meta.replace(&ours, &format!("\\\"format\\\":{}", FORMAT - 1));
    std::fs::write(path.join("meta.json"), older).expect("write meta");
    let (index, fresh) = Index::open(&path, "epoch-1").expect("open");
    assert!(
        matches!(&fresh, Some(Fresh::Stale(why)) if why.contains("format")),
        "{fresh:?}"
    );
    assert_eq!((index.through(), index.len()), (0, 0));
}
