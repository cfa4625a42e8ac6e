//! Conversations, always scoped to their owner: another user's id is
//! indistinguishable from an unknown one.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

use super::events::{self, Subject};
use super::{Error, ListKey, Result, Tx, format_ms};
use crate::types::EventType;

fn subject(id: &str) -> Subject<'_> {
    Subject { id, scope: Some(id) }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
}

fn conversation(row: &Row<'_>) -> rusqlite::Result<(Conversation, ListKey)> {
    let id: String = row.get(0)?;
    let updated_at: i64 = row.get(3)?;
    Ok((
        Conversation {
            id: id.clone(),
            title: row.get(1)?,
            created_at: format_ms(row.get(2)?),
            updated_at: format_ms(updated_at),
        },
        ListKey { at: updated_at, id },
    ))
}

#[instrument(skip_all)]
pub fn create(tx: &mut Tx<'_>, user_id: &str, title: &str, now: i64) -> Result<Conversation> {
    let id = super::new_id();
    tx.execute(
        "INSERT INTO conversations (id, user_id, title, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id, user_id, title, now],
    )?;
    let conversation = Conversation {
        id,
        title: title.to_owned(),
        created_at: format_ms(now),
        updated_at: format_ms(now),
    };
    tx.emit(
        user_id,
        EventType::ConversationCreated,
        subject(&conversation.id),
        &conversation,
        now,
    )?;
    Ok(conversation)
}

#[instrument(skip_all)]
pub fn get(conn: &Connection, user_id: &str, id: &str) -> Result<Conversation> {
    conn.prepare_cached(
        "SELECT id, title, created_at, updated_at FROM conversations WHERE id = ?1 AND user_id = ?2",
    )?
    .query_row([id, user_id], conversation)
    .optional()?
    .map(|(c, _)| c)
    .ok_or(Error::NotFound)
}

/// One page, most recently updated first, strictly after `before` in that
/// order. Returns the items and the key of the last one when more follow.
#[instrument(skip_all)]
pub fn list(
    conn: &Connection,
    user_id: &str,
    limit: usize,
    before: Option<&ListKey>,
) -> Result<(Vec<Conversation>, Option<ListKey>)> {
    super::list_page(
        conn,
        "SELECT id, title, created_at, updated_at FROM conversations
         WHERE user_id = ?1 AND (?2 IS NULL OR (updated_at, id) < (?2, ?3))
         ORDER BY updated_at DESC, id DESC LIMIT ?4",
        user_id,
        before,
        limit,
        conversation,
    )
}

#[instrument(skip_all)]
pub fn rename(tx: &mut Tx<'_>, user_id: &str, id: &str, title: &str, now: i64) -> Result<Conversation> {
    let conversation = tx
        .prepare_cached(
            "UPDATE conversations SET title = ?3, updated_at = max(updated_at, ?4)
         WHERE id = ?1 AND user_id = ?2 RETURNING id, title, created_at, updated_at",
        )?
        .query_row(params![id, user_id, title, now], conversation)
        .optional()?
        .map(|(c, _)| c)
        .ok_or(Error::NotFound)?;
    tx.emit(
        user_id,
        EventType::ConversationUpdated,
        subject(id),
        &conversation,
        now,
    )?;
    Ok(conversation)
}

/// Deletes the conversation and its messages, rewrites the stored events
/// about them to tombstones, and emits `conversation.deleted`.
#[instrument(skip_all)]
pub fn delete(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<()> {
    if tx.execute(
        "DELETE FROM conversations WHERE id = ?1 AND user_id = ?2",
        [id, user_id],
    )? == 0
    {
        return Err(Error::NotFound);
    }
    events::tombstone_and_emit(tx, user_id, EventType::ConversationDeleted, id, now)
}
