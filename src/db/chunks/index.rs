//! Each user's full-text index (FTS5, one contentless table per user,
//! migration 7), kept in step with `chunks` by the writer at the end of
//! every batch, and merged in the background.

use std::collections::HashMap;

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::Result;

/// The name of the full-text index table of a user's chunks (migration 7):
/// `n` comes from `user_indexes`, never from input.
fn index_table(n: i64) -> String {
    format!("chunks_fts_{n}")
}

/// The user's index table, if the user has indexed chunks (or had).
pub(super) fn user_index(conn: &Connection, user_id: &str) -> Result<Option<String>> {
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
            .ok_or_else(|| crate::db::Error::Other(format!("no search index for the chunks of {user_id}")))?;
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
