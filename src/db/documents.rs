//! Documents: metadata of uploaded files, scoped to their owner. Their
//! parse jobs live in `jobs.rs`, their text in `chunks.rs`.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

use super::events::{self, Subject};
use super::jobs::{self, Job};
use super::{Error, Result, Tx, format_ms};

pub const CREATED: &str = "document.created";
pub const STATUS_UPDATED: &str = "document.status_updated";
pub const DELETED: &str = "document.deleted";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Document {
    pub id: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub status: String,
    pub error: Option<String>,
    pub chunk_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// Position of a document in the list order (newest first), for cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKey {
    pub created_at: i64,
    pub id: String,
}

/// A stored upload about to become a document.
pub struct NewDocument {
    pub id: String,
    pub user_id: String,
    pub filename: String,
    pub content_type: String,
    pub kind: String,
    pub size_bytes: i64,
    pub sha256: String,
}

pub(super) const COLUMNS: &str =
    "id, filename, content_type, size_bytes, sha256, status, error, chunk_count, created_at, updated_at";

pub(super) fn document(row: &Row<'_>) -> rusqlite::Result<(Document, ListKey)> {
    let id: String = row.get(0)?;
    let created_at: i64 = row.get(8)?;
    Ok((
        Document {
            id: id.clone(),
            filename: row.get(1)?,
            content_type: row.get(2)?,
            size_bytes: row.get(3)?,
            sha256: row.get(4)?,
            status: row.get(5)?,
            error: row.get(6)?,
            chunk_count: row.get(7)?,
            created_at: format_ms(created_at),
            updated_at: format_ms(row.get(9)?),
        },
        ListKey { created_at, id },
    ))
}

/// Events about a document are grouped under its id, so deleting it can
/// rewrite them (and its jobs' events) to tombstones.
pub(crate) fn subject(id: &str) -> Subject<'_> {
    Subject { id, scope: Some(id) }
}

/// Emits `document.status_updated` with the document as stored now.
pub(crate) fn emit_status(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<Document> {
    let doc = get(tx, user_id, id)?;
    tx.emit(user_id, STATUS_UPDATED, subject(id), &doc, now)?;
    Ok(doc)
}

/// Inserts the document (`queued`) and its parse job, with their events.
#[instrument(skip_all)]
pub fn create(tx: &mut Tx<'_>, new: &NewDocument, max_retries: u32, now: i64) -> Result<(Document, Job)> {
    tx.prepare_cached(
        "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8)",
    )?
    .execute(params![
        new.id,
        new.user_id,
        new.filename,
        new.content_type,
        new.kind,
        new.size_bytes,
        new.sha256,
        now
    ])?;
    let doc = get(tx, &new.user_id, &new.id)?;
    tx.emit(&new.user_id, CREATED, subject(&new.id), &doc, now)?;
    let job = jobs::enqueue(tx, &new.user_id, &new.id, max_retries, now)?;
    Ok((doc, job))
}

#[instrument(skip_all)]
pub fn get(conn: &Connection, user_id: &str, id: &str) -> Result<Document> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM documents WHERE id = ?1 AND user_id = ?2"
    ))?
    .query_row([id, user_id], document)
    .optional()?
    .map(|(d, _)| d)
    .ok_or(Error::NotFound)
}

/// The parser kind of a document (owner-scoped).
#[instrument(skip_all)]
pub fn kind(conn: &Connection, user_id: &str, id: &str) -> Result<String> {
    conn.prepare_cached("SELECT kind FROM documents WHERE id = ?1 AND user_id = ?2")?
        .query_row([id, user_id], |r| r.get(0))
        .optional()?
        .ok_or(Error::NotFound)
}

/// One page, newest first, strictly after `before` in that order.
#[instrument(skip_all)]
pub fn list(
    conn: &Connection,
    user_id: &str,
    limit: usize,
    before: Option<&ListKey>,
) -> Result<(Vec<Document>, Option<ListKey>)> {
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM documents
             WHERE user_id = ?1 AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ))?
        .query_map(
            params![
                user_id,
                before.map(|k| k.created_at),
                before.map(|k| k.id.as_str()),
                fetch
            ],
            document,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for (doc, key) in rows.into_iter().take(limit) {
        items.push(doc);
        last = Some(key);
    }
    Ok((items, if more { last } else { None }))
}

/// Deletes the document with its jobs, attempts and chunks (the index
/// follows by trigger), rewrites its events to tombstones and emits
/// `document.deleted`.
#[instrument(skip_all)]
pub fn delete(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<()> {
    if tx.execute(
        "DELETE FROM documents WHERE id = ?1 AND user_id = ?2",
        [id, user_id],
    )? == 0
    {
        return Err(Error::NotFound);
    }
    events::tombstone_and_emit(tx, user_id, DELETED, id, now)
}

/// Queues a new parse job for a document (409 while one is queued or
/// running). The document's chunks stay searchable meanwhile.
#[instrument(skip_all)]
pub fn reprocess(tx: &mut Tx<'_>, user_id: &str, id: &str, max_retries: u32, now: i64) -> Result<Job> {
    get(tx, user_id, id)?;
    let busy: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE document_id = ?1 AND status IN ('queued', 'running'))",
        )?
        .query_row([id], |r| r.get(0))?;
    if busy {
        return Err(Error::Conflict(
            "the document already has a parse job queued or running",
        ));
    }
    // The new job is the cause of the document's `queued`: its event first.
    let job = jobs::enqueue(tx, user_id, id, max_retries, now)?;
    tx.execute(
        "UPDATE documents SET status = 'queued', error = NULL, updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    emit_status(tx, user_id, id, now)?;
    Ok(job)
}

/// Ids of every document of a user (for removing files after an account
/// deletion).
#[instrument(skip_all)]
pub fn ids_of_user(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let ids = conn
        .prepare_cached("SELECT id FROM documents WHERE user_id = ?1")?
        .query_map([user_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Every document id (any owner): the start-up sweep removes files that
/// none of them owns.
#[instrument(skip_all)]
pub fn all_ids(conn: &Connection) -> Result<std::collections::HashSet<String>> {
    let ids = conn
        .prepare("SELECT id FROM documents")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}
