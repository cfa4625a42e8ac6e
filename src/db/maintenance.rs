//! The SQL of the operator's commands (`ragd backup`, `restore`, `check`),
//! which work on the database file beside a running server, through
//! connections of their own: a snapshot with SQLite's online backup API,
//! a new epoch for a restored copy, and the consistency checks.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, Result};

/// Tries of a snapshot that finds the database busy (50 ms apart).
const SNAPSHOT_WAITS: u32 = 100;

/// Opens the database read-only, as one more reader beside the server (WAL
/// lets it read while the server writes); it never migrates.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Copies the database at `from` into a new file `to` as of one instant
/// (one read transaction: in WAL mode it does not stop the server's
/// writer), and returns a connection to the copy, which is a plain
/// self-contained file (no WAL).
pub fn snapshot(from: &Path, to: &Path) -> Result<Connection> {
    let source = open_read_only(from)?;
    let mut copy = Connection::open(to)?;
    {
        let backup = Backup::new(&source, &mut copy)?;
        // All pages in one step (-1): copied in several, a write by the
        // server between two steps would start the copy over. Busy only
        // while another connection holds an exclusive lock (a WAL reset).
        let mut waits = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked if waits < SNAPSHOT_WAITS => {
                    waits += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return Err(super::Error::Busy),
            }
        }
    }
    drop(source);
    let mode: String = copy.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(super::Error::Other(format!(
            "cannot take the snapshot out of WAL mode (journal_mode is {mode})"
        )));
    }
    Ok(copy)
}

/// The database's epoch (`meta`), or `None` in a database that has none
/// (not ragd's).
pub fn epoch(conn: &Connection) -> Result<Option<String>> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    match conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0)) {
        Ok(epoch) => Ok(Some(epoch)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Gives the database a new epoch (a restored copy is another database:
/// clients that saw event ids of the old one must resync); returns it.
pub fn renew_epoch(conn: &Connection) -> Result<String> {
    let epoch: String = conn.query_row(
        "UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'epoch' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    Ok(epoch)
}

/// The ids of every document.
pub fn document_ids(conn: &Connection) -> Result<HashSet<String>> {
    let ids = conn
        .prepare("SELECT id FROM documents")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// Every document's id and the SHA-256 (hex) of its original.
pub fn document_digests(conn: &Connection) -> Result<HashMap<String, String>> {
    let digests = conn
        .prepare("SELECT id, sha256 FROM documents")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(digests)
}

/// Which of `ids` are documents (one read).
pub fn existing_documents(conn: &Connection, ids: &[String]) -> Result<HashSet<String>> {
    let mut statement = conn.prepare("SELECT 1 FROM documents WHERE id = ?1")?;
    let mut found = HashSet::new();
    for id in ids {
        if statement.exists([id])? {
            found.insert(id.clone());
        }
    }
    Ok(found)
}

/// What `PRAGMA integrity_check` found (empty when the database is sound).
pub fn integrity_problems(conn: &Connection) -> Result<Vec<String>> {
    problems_of(conn, "PRAGMA integrity_check")
}

/// `PRAGMA quick_check`: the checks of `integrity_problems` that take
/// linear time (not that indexes match their tables).
pub fn quick_check(conn: &Connection) -> Result<Vec<String>> {
    problems_of(conn, "PRAGMA quick_check")
}

fn problems_of(conn: &Connection, pragma: &str) -> Result<Vec<String>> {
    let rows: Vec<String> = conn
        .prepare(pragma)?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows.into_iter().filter(|r| r != "ok").collect())
}

/// Rows whose parent row is gone (`PRAGMA foreign_key_check`), as
/// "table rowid N has no parent in parent".
pub fn foreign_key_problems(conn: &Connection) -> Result<Vec<String>> {
    let rows = conn
        .prepare("PRAGMA foreign_key_check")?
        .query_map([], |r| {
            let table: String = r.get(0)?;
            let rowid: Option<i64> = r.get(1)?;
            let parent: String = r.get(2)?;
            Ok(match rowid {
                Some(rowid) => format!("{table} row {rowid} refers to a missing row of {parent}"),
                None => format!("a row of {table} refers to a missing row of {parent}"),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The chunks as the search index must know them, read in one snapshot.
#[derive(Debug, Default)]
pub struct ChunkSet {
    /// Rowids of every chunk.
    pub rowids: HashSet<i64>,
    /// Rowids of deleted chunks that the index has not yet dropped.
    pub pending_deletes: HashSet<i64>,
    /// The highest rowid any chunk has had.
    pub last_rowid: i64,
}

/// Every chunk's rowid, the delete queue and the last rowid, in one read
/// transaction.
pub fn chunk_set(conn: &Connection) -> Result<ChunkSet> {
    let tx = conn.unchecked_transaction()?;
    let rowids = tx
        .prepare("SELECT rowid FROM chunks")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let pending_deletes = tx
        .prepare("SELECT chunk FROM index_deletes")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let last_rowid = tx.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'chunks'), 0)",
        [],
        |r| r.get(0),
    )?;
    tx.finish()?;
    Ok(ChunkSet {
        rowids,
        pending_deletes,
        last_rowid,
    })
}
