//! Chunk sets over a real database: staging beside the live set, making a
//! set live, what the index reads (new chunks, the delete queue), and
//! which hits become passages.

use rusqlite::Connection;

use super::*;
use crate::db::documents;
use crate::db::testing::{insert_user, migrated};

fn texts(words: &[&str]) -> Vec<ChunkText> {
    words
        .iter()
        .map(|w| ChunkText {
            text: (*w).to_owned(),
            start: 0,
            end: 0,
            context: String::new(),
        })
        .collect()
}

/// A user `u` with a document `d` (and another user `v` with `e`).
fn database() -> (tempfile::TempDir, Connection) {
    let (dir, conn) = migrated();
    for (user, doc) in [("u", "d"), ("v", "e")] {
        insert_user(&conn, user);
        conn.execute(
            "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256,
                                    status, created_at, updated_at)
             VALUES (?1, ?2, 'f.txt', 'text/plain', 'txt', 0, '', 'ready', 0, 0)",
            [doc, user],
        )
        .expect("document");
    }
    (dir, conn)
}

fn make_live(conn: &Connection, doc: &str, set: Option<Set>, count: usize) {
    keep_only(conn, doc, set).expect("keep");
    documents::set_live_chunks(conn, doc, set, count).expect("live");
}

fn rowids(conn: &Connection, doc: &str) -> Vec<i64> {
    conn.prepare("SELECT rowid FROM chunks WHERE document_id = ?1 ORDER BY rowid")
        .expect("prepare")
        .query_map([doc], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

fn hits(rowids: &[i64]) -> Vec<(i64, f32)> {
    rowids.iter().map(|&r| (r, 1.0)).collect()
}

fn served(conn: &Connection, user: &str, rowids: &[i64]) -> Vec<String> {
    passages(conn, user, &hits(rowids), &["heron".to_owned()], 10)
        .expect("passages")
        .into_iter()
        .map(|p| p.text)
        .collect()
}

#[test]
fn a_staged_set_is_served_only_once_it_is_live_and_then_the_old_one_is_gone() {
    let (_dir, conn) = database();
    let first = stage(&conn, "d", "u", None, &texts(&["old heron", "old water"]))
        .expect("stage")
        .expect("a set");
    assert_eq!(first, (1, 2));
    assert!(served(&conn, "u", &[1, 2]).is_empty(), "staged, not live");
    make_live(&conn, "d", Some(first), 2);
    assert_eq!(served(&conn, "u", &[1, 2]), ["old heron", "old water"]);

    // A reprocess stages a new set beside the live one, which stays served.
    let live = documents::live_chunks(&conn, "d").expect("live");
    assert_eq!(live, Some(first));
    let second = stage(&conn, "d", "u", live, &texts(&["new heron"]))
        .expect("stage")
        .expect("a set");
    assert_eq!(second, (3, 3));
    assert_eq!(served(&conn, "u", &[3, 1]), ["old heron"]);
    make_live(&conn, "d", Some(second), 1);
    assert_eq!(served(&conn, "u", &[3, 1, 2]), ["new heron"]);
    assert_eq!(rowids(&conn, "d"), [3]);
}

#[test]
fn a_new_stage_removes_a_set_an_unfinished_attempt_left() {
    let (_dir, conn) = database();
    let live = stage(&conn, "d", "u", None, &texts(&["a", "b"])).expect("stage");
    make_live(&conn, "d", live, 2);
    // Staged, then the attempt died before making it live.
    stage(&conn, "d", "u", live, &texts(&["c", "d"])).expect("stage");
    assert_eq!(rowids(&conn, "d"), [1, 2, 3, 4]);
    let retried = stage(&conn, "d", "u", live, &texts(&["e"])).expect("stage");
    assert_eq!(retried, Some((5, 5)));
    assert_eq!(
        rowids(&conn, "d"),
        [1, 2, 5],
        "the leftover set is gone, the live one kept"
    );
    // No chunks at all: nothing staged, and keeping none clears the document.
    assert_eq!(stage(&conn, "d", "u", live, &[]).expect("stage"), None);
    make_live(&conn, "d", None, 0);
    assert!(rowids(&conn, "d").is_empty());
}

#[test]
fn hits_of_another_user_or_of_deleted_chunks_are_never_served() {
    let (_dir, conn) = database();
    let mine = stage(&conn, "d", "u", None, &texts(&["my heron"])).expect("stage");
    make_live(&conn, "d", mine, 1);
    let theirs = stage(&conn, "e", "v", None, &texts(&["their heron"])).expect("stage");
    make_live(&conn, "e", theirs, 1);
    assert_eq!(served(&conn, "u", &[2, 1]), ["my heron"]);
    conn.execute("DELETE FROM documents WHERE id = 'd'", [])
        .expect("delete");
    assert!(served(&conn, "u", &[1, 2]).is_empty());
}

#[test]
fn the_index_reads_new_chunks_with_their_keys_and_the_deletes_in_order() {
    let (_dir, conn) = database();
    let set = stage(&conn, "d", "u", None, &texts(&["a", "b", "c"])).expect("stage");
    stage(&conn, "e", "v", None, &texts(&["x"])).expect("stage");
    let keys: Vec<i64> = unindexed(&conn, 0, 10)
        .expect("unindexed")
        .iter()
        .map(|c| c.user_key)
        .collect();
    assert_eq!(keys, [1, 1, 1, 2]);
    let after_two: Vec<i64> = unindexed(&conn, 2, 1)
        .expect("unindexed")
        .iter()
        .map(|c| c.rowid)
        .collect();
    assert_eq!(after_two, [3], "after a rowid, at most the limit");
    assert_eq!(last_rowid(&conn).expect("last"), 4);

    make_live(&conn, "d", set, 3);
    conn.execute("DELETE FROM chunks WHERE rowid IN (3, 1)", [])
        .expect("delete");
    let queued = deletes(&conn, 10).expect("deletes");
    assert_eq!(queued.chunks, [1, 3]);
    // A delete queued after the read survives the clear of what was read.
    conn.execute("DELETE FROM chunks WHERE rowid = 2", [])
        .expect("delete");
    clear_deletes(&conn, queued.through).expect("clear");
    assert_eq!(deletes(&conn, 10).expect("deletes").chunks, [2]);
    // The highest rowid ever used stays, deleted or not.
    conn.execute("DELETE FROM chunks", []).expect("delete all");
    assert_eq!(last_rowid(&conn).expect("last"), 4);
}

#[test]
fn an_account_deletion_forgets_the_key_and_queues_every_chunk() {
    let (_dir, conn) = database();
    let set = stage(&conn, "d", "u", None, &texts(&["a", "b"])).expect("stage");
    make_live(&conn, "d", set, 2);
    assert_eq!(user_key(&conn, "u").expect("key"), Some(1));
    forget_user(&conn, "u").expect("forget");
    crate::db::users::delete(&conn, "u").expect("delete the account");
    assert_eq!(user_key(&conn, "u").expect("key"), None);
    assert_eq!(deletes(&conn, 10).expect("deletes").chunks, [1, 2]);
    // A new user never gets the old key.
    stage(&conn, "e", "v", None, &texts(&["x"])).expect("stage");
    assert_eq!(user_key(&conn, "v").expect("key"), Some(2));
}
