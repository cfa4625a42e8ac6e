//! The `documents` table: metadata of uploaded files, scoped to their
//! owner, each change with its event. Their parse jobs are `jobs.rs`'s,
//! their text `chunks.rs`'s; `documents::` (the domain) combines them.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

use super::events::{self, NewEvent, Subject};
use super::{Error, ListKey, Result, Tx, format_ms};
use crate::types::{DocumentStatus, EventType};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Document {
    pub id: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub status: DocumentStatus,
    /// Why it failed, or why its job waits for a retry; else null.
    #[schema(required = true)]
    pub error: Option<String>,
    pub chunk_count: i64,
    pub created_at: String,
    pub updated_at: String,
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

const COLUMNS: &str =
    "id, filename, content_type, size_bytes, sha256, status, error, chunk_count, created_at, updated_at";

fn document(row: &Row<'_>) -> rusqlite::Result<(Document, ListKey)> {
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
        ListKey { at: created_at, id },
    ))
}

/// Events about a document are grouped under its id, so deleting it can
/// rewrite them (and its jobs' events) to tombstones.
pub fn subject(id: &str) -> Subject<'_> {
    Subject { id, scope: Some(id) }
}

/// The `document.status_updated` event of `doc` (for bulk changes that
/// emit many events at once).
pub fn status_event<'a>(user_id: &'a str, doc: &'a Document) -> Result<NewEvent<'a>> {
    NewEvent::new(user_id, EventType::DocumentStatusUpdated, subject(&doc.id), doc)
}

/// Inserts the document (`queued`) with its `document.created` event.
#[instrument(skip_all)]
pub fn insert(tx: &mut Tx<'_>, new: &NewDocument, now: i64) -> Result<Document> {
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
    tx.emit(
        &new.user_id,
        EventType::DocumentCreated,
        subject(&new.id),
        &doc,
        now,
    )?;
    Ok(doc)
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
    super::list_page(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM documents
             WHERE user_id = ?1 AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ),
        user_id,
        before,
        limit,
        document,
    )
}

/// Moves the document to `status` (with `error`), with its event.
#[instrument(skip_all)]
pub fn set_status(
    tx: &mut Tx<'_>,
    user_id: &str,
    id: &str,
    status: DocumentStatus,
    error: Option<&str>,
    now: i64,
) -> Result<Document> {
    tx.prepare_cached("UPDATE documents SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, status, error, now])?;
    let doc = get(tx, user_id, id)?;
    tx.emit(user_id, EventType::DocumentStatusUpdated, subject(id), &doc, now)?;
    Ok(doc)
}

/// The document's live chunk set (`db::chunks::Set`), if it has one.
#[instrument(skip_all)]
pub fn live_chunks(conn: &Connection, id: &str) -> Result<Option<(i64, i64)>> {
    let set: (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT chunks_first, chunks_last FROM documents WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(Error::NotFound)?;
    Ok(set.0.zip(set.1))
}

/// Makes `set` (`None`: no chunks) the document's live chunk set of
/// `count` chunks (no event: the status change that follows carries it).
pub fn set_live_chunks(conn: &Connection, id: &str, set: Option<(i64, i64)>, count: usize) -> Result<()> {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "UPDATE documents SET chunks_first = ?2, chunks_last = ?3, chunk_count = ?4 WHERE id = ?1",
    )?
    .execute(params![id, set.map(|s| s.0), set.map(|s| s.1), count])?;
    Ok(())
}

/// Moves many documents at once, each to its status and error, in one
/// statement (the start-up sweep may move a whole queue); returns them by
/// id, without events (the caller emits them in its order).
#[instrument(skip_all, fields(count = moves.len()))]
pub fn set_statuses(
    conn: &Connection,
    moves: &[(&str, DocumentStatus, Option<&str>)],
    now: i64,
) -> Result<HashMap<String, Document>> {
    let json: Vec<serde_json::Value> = moves
        .iter()
        .map(|(id, status, error)| serde_json::json!([id, status, error]))
        .collect();
    let json = serde_json::to_string(&json).map_err(|e| Error::Other(format!("document moves: {e}")))?;
    let rows = conn
        // (RETURNING names only the updated table's columns.)
        .prepare_cached(&format!(
            "UPDATE documents SET status = m.value ->> 1, error = m.value ->> 2, updated_at = ?2
             FROM json_each(?1) AS m WHERE documents.id = m.value ->> 0
             RETURNING {COLUMNS}"
        ))?
        .query_map(params![json, now], |row| {
            document(row).map(|(d, _)| (d.id.clone(), d))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Deletes the document with its jobs, attempts and chunks (the search
/// index follows), rewrites its events to tombstones and emits
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
    events::tombstone_and_emit(tx, user_id, EventType::DocumentDeleted, id, now)
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
