//! Schema migrations tracked by `PRAGMA user_version`: `schema.sql` is
//! version 1, each later entry of `MIGRATIONS` is the next version.

use rusqlite::Connection;

use super::{Error, Result};

/// Migration N+1 is `MIGRATIONS[N]`. Append only; never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema.sql"),
    include_str!("migrations/002_events_messages.sql"),
    include_str!("migrations/003_documents.sql"),
    include_str!("migrations/004_batched_index.sql"),
    include_str!("migrations/005_chunk_context.sql"),
    include_str!("migrations/006_event_indexes.sql"),
    include_str!("migrations/007_user_indexes.sql"),
    include_str!("migrations/008_search_index.sql"),
    include_str!("migrations/009_revocations.sql"),
];

/// Brings the database to the newest version in one IMMEDIATE transaction.
pub fn run(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: usize = tx
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?
        .try_into()
        .unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(Error::Other(format!(
            "the database is at schema version {current}, newer than this ragd knows ({}); use a newer ragd",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        tracing::info!(version, "applying schema migration");
        before(&tx, version)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i64::try_from(version).unwrap_or(i64::MAX))?;
        tracing::info!(version, "applied schema migration");
    }
    tx.commit()?;
    Ok(())
}

/// The database's schema version, and the newest this ragd knows.
pub fn versions(conn: &Connection) -> Result<(usize, usize)> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok((usize::try_from(current).unwrap_or(0), MIGRATIONS.len()))
}

/// Fails unless the database is at exactly the newest version: for the
/// admin commands, which work beside a running server and so must never
/// migrate (the server does that, holding the data dir).
pub fn check_current(conn: &Connection) -> Result<()> {
    let (current, newest) = versions(conn)?;
    match current {
        version if version == newest => Ok(()),
        version if version > newest => Err(Error::Other(format!(
            "the database is at schema version {version}, newer than this ragd knows ({newest}); use a newer ragd"
        ))),
        version => Err(Error::Other(format!(
            "the database is at schema version {version}, older than this ragd ({newest}); start this ragd's server once to migrate it"
        ))),
    }
}

/// What a migration needs done before its SQL that SQL cannot say.
fn before(conn: &Connection, version: usize) -> Result<()> {
    if version == 8 {
        // The per-user FTS5 tables of version 7, named after their keys.
        let keys: Vec<i64> = conn
            .prepare("SELECT n FROM user_indexes")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for n in keys {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS chunks_fts_{n}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_and_keeps_foreign_keys_consistent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("t.db")).expect("open");
        conn.pragma_update(None, "foreign_keys", "ON").expect("pragma");
        run(&mut conn).expect("first migration");
        run(&mut conn).expect("second run is a no-op");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        let problems: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
            .expect("fk check");
        assert_eq!(problems, 0);
    }

    /// Applies the migrations after `from` up to `to`, as `run` would
    /// if `to` were the newest.
    fn upgrade(conn: &Connection, from: usize, to: usize) {
        for (index, sql) in MIGRATIONS[..to].iter().enumerate().skip(from) {
            conn.execute_batch(sql).expect("migration");
            conn.pragma_update(None, "user_version", index as i64 + 1)
                .expect("version");
        }
    }

    /// A database migrated to `version` only.
    fn at_version(version: usize) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("t.db")).expect("open");
        conn.pragma_update(None, "foreign_keys", "ON")
            .expect("as the server runs it");
        upgrade(&conn, 0, version);
        (dir, conn)
    }

    #[test]
    fn chunks_indexed_before_version_5_stay_searchable_and_deletable() {
        let (_dir, conn) = at_version(4);
        conn.execute_batch(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ('u', 'u', 'x', 0);
             INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256,
                                    status, created_at, updated_at)
             VALUES ('d', 'u', 'f.txt', 'text/plain', 'txt', 0, '', 'ready', 0, 0);
             INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
             VALUES ('d', 'u', 0, 0, 0, 'the heron nests near water'),
                    ('d', 'u', 1, 0, 0, 'the grey heron hunts fish');
             -- What version 4's writer did before each commit.
             INSERT INTO chunks_fts (rowid, text) SELECT rowid, text FROM chunks;
             UPDATE fts_state SET indexed_through = 2;",
        )
        .expect("a version 4 database with indexed chunks");

        upgrade(&conn, 4, 5);
        let search = |conn: &Connection| -> Vec<i64> {
            let mut statement = conn
                .prepare("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'heron' ORDER BY rowid")
                .expect("prepare");
            let rows = statement.query_map([], |r| r.get(0)).expect("query");
            rows.collect::<rusqlite::Result<_>>().expect("rows")
        };
        assert_eq!(search(&conn), vec![1, 2], "the old chunks are still found");
        let context: String = conn
            .query_row("SELECT context FROM chunks WHERE rowid = 1", [], |r| r.get(0))
            .expect("context");
        assert_eq!(context, "", "old chunks have no context until reprocessed");

        conn.execute("DELETE FROM chunks WHERE rowid = 1", [])
            .expect("delete");
        assert_eq!(search(&conn), vec![2]);
        conn.execute(
            "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .expect("the index matches the chunks after the delete");
    }

    #[test]
    fn events_stored_before_version_6_are_tombstoned_with_their_scope() {
        let (_dir, mut conn) = at_version(5);
        conn.execute_batch(
            "INSERT INTO users (id, email, password_hash, event_seq, created_at) VALUES ('u', 'u', 'x', 4, 0);
             INSERT INTO events (user_id, id, type, subject_id, conversation_id, data, created_at)
             VALUES ('u', 1, 'conversation.created', 'c', 'c', '{\"id\":\"c\",\"title\":\"t\"}', 0),
                    ('u', 2, 'message.created', 'm', 'c', '{\"id\":\"m\",\"content\":\"hi\"}', 0),
                    ('u', 3, 'document.created', 'd', 'd', '{\"id\":\"d\",\"filename\":\"f\"}', 0),
                    ('u', 4, 'job.status_updated', 'j', 'd', '{\"id\":\"j\",\"status\":\"queued\"}', 0);",
        )
        .expect("a version 5 database with events");

        run(&mut conn).expect("migrate to version 6");
        let data = |conn: &Connection| -> Vec<String> {
            let mut statement = conn
                .prepare("SELECT data FROM events WHERE user_id = 'u' ORDER BY id")
                .expect("prepare");
            let rows = statement.query_map([], |r| r.get(0)).expect("query");
            rows.collect::<rusqlite::Result<_>>().expect("rows")
        };
        crate::db::events::tombstone(&conn, "u", "c").expect("tombstone the conversation");
        let after = data(&conn);
        assert_eq!(
            after[..2],
            [r#"{"id":"c","deleted":true}"#, r#"{"id":"m","deleted":true}"#]
        );
        assert_eq!(
            after[2], r#"{"id":"d","filename":"f"}"#,
            "another scope is untouched"
        );
        crate::db::events::tombstone(&conn, "u", "d").expect("tombstone the document");
        assert_eq!(
            data(&conn)[2..],
            [r#"{"id":"d","deleted":true}"#, r#"{"id":"j","deleted":true}"#]
        );
    }

    #[test]
    fn version_8_drops_the_fts5_indexes_and_keeps_every_chunk_live() {
        let (_dir, mut conn) = at_version(7);
        conn.execute_batch(
            "INSERT INTO users (id, email, password_hash, created_at)
             VALUES ('u1', 'u1', 'x', 0), ('u2', 'u2', 'x', 0);
             INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256,
                                    status, created_at, updated_at)
             VALUES ('d1', 'u1', 'f.txt', 'text/plain', 'txt', 0, '', 'ready', 0, 0),
                    ('d2', 'u2', 'g.txt', 'text/plain', 'txt', 0, '', 'ready', 0, 0),
                    ('d3', 'u2', 'h.txt', 'text/plain', 'txt', 0, '', 'queued', 0, 0);
             INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text, context)
             VALUES ('d1', 'u1', 0, 0, 0, 'the heron nests near water', 'Birds'),
                    ('d1', 'u1', 1, 0, 0, 'the grey heron hunts fish', 'Birds'),
                    ('d2', 'u2', 0, 0, 0, 'a heron painted in oil', '');
             -- What version 7's writer did before each commit.
             INSERT INTO user_indexes (user_id) VALUES ('u1'), ('u2');
             CREATE VIRTUAL TABLE chunks_fts_1 USING fts5 (text, context, content = '');
             CREATE VIRTUAL TABLE chunks_fts_2 USING fts5 (text, context, content = '');
             UPDATE fts_state SET indexed_through = 3;",
        )
        .expect("a version 7 database with two users' indexes");

        run(&mut conn).expect("migrate to the newest version");
        let fts: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name GLOB 'chunks_fts*' OR name GLOB 'fts_*'",
                [],
                |r| r.get(0),
            )
            .expect("tables");
        assert_eq!(fts, 0, "no FTS5 table or its bookkeeping is left");
        let live: Vec<(String, Option<i64>, Option<i64>)> = conn
            .prepare("SELECT id, chunks_first, chunks_last FROM documents ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            live,
            [
                ("d1".to_owned(), Some(1), Some(2)),
                ("d2".to_owned(), Some(3), Some(3)),
                ("d3".to_owned(), None, None),
            ],
            "every chunk stays in its document's live set"
        );
        let keys: Vec<(i64, String)> = conn
            .prepare("SELECT n, user_id FROM user_indexes ORDER BY n")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            keys,
            [(1, "u1".to_owned()), (2, "u2".to_owned())],
            "users keep their keys"
        );

        // A deleted chunk is queued for the index.
        conn.execute("DELETE FROM documents WHERE id = 'd1'", [])
            .expect("delete a document");
        let queued: Vec<i64> = conn
            .prepare("SELECT chunk FROM index_deletes ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(queued, [1, 2]);
    }

    #[test]
    fn refuses_a_database_from_a_newer_version() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("t.db")).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("pragma");
        let err = run(&mut conn).expect_err("must refuse");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
