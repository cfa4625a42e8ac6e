//! The writer over a real database file: batches commit together, and
//! every write of a batch is answered as it really ended when SQLite drops
//! the transaction (a full disk).

use super::*;

/// A write that inserts `bytes` zero bytes as row `name` of `t`.
fn insert(name: &'static str, bytes: i64) -> (Box<dyn QueuedWrite>, oneshot::Receiver<Result<()>>) {
    let (reply, done) = oneshot::channel();
    let f = move |tx: &mut Tx<'_>| -> Result<()> {
        tx.execute(
            "INSERT INTO t (name, body) VALUES (?1, zeroblob(?2))",
            rusqlite::params![name, bytes],
        )?;
        Ok(())
    };
    (Box::new(TypedWrite { f, reply }), done)
}

#[test]
fn every_answer_of_a_batch_matches_what_was_committed_when_the_disk_fills() {
    let (_dir, conn) = super::super::testing::migrated();
    conn.execute_batch("CREATE TABLE t (name TEXT, body BLOB)")
        .expect("table");
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("pages");
    // The database may grow by 64 pages: a full disk, as SQLite sees it.
    conn.pragma_update(None, "max_page_count", pages + 64)
        .expect("limit");
    let publish: Publisher = Arc::new(|_| {});
    let (writes, replies): (Vec<_>, Vec<_>) = [
        insert("a", 1_000),
        insert("big", 4 << 20),
        insert("c", 1_000),
        insert("d", 1_000),
    ]
    .into_iter()
    .unzip();

    commit_batch(&conn, &publish, writes.into_iter());

    let answers: Vec<(&str, bool)> = ["a", "big", "c", "d"]
        .into_iter()
        .zip(replies)
        .map(|(name, mut done)| (name, done.try_recv().expect("answered").is_ok()))
        .collect();
    assert!(!answers[1].1, "the write that does not fit fails");
    // SQLite dropped the whole transaction (no statement journal for a
    // one-row insert): the write before it is lost too, and says so.
    assert!(!answers[0].1, "the write before it was rolled back with it");
    for (name, answered_ok) in answers {
        let stored: bool = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM t WHERE name = ?1)", [name], |r| {
                r.get(0)
            })
            .expect("query");
        assert_eq!(
            answered_ok, stored,
            "{name}: answered {answered_ok}, stored {stored}"
        );
    }
    assert!(conn.is_autocommit(), "no transaction is left open");
}
