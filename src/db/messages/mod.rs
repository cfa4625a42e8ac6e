//! Chat messages. A user message is stored `done`; its assistant reply is
//! stored `pending` in the same transaction and later finished, cancelled
//! or interrupted, each change with its event.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

mod reply;

use super::events::Subject;
use super::{Error, ListKey, Result, Tx, format_ms};
use crate::types::{EventType, MessageStatus, Role, Source, Turn};
pub use reply::{
    cancel, cancel_generation, finish, interrupt_unfinished, mark_streaming, reset_for_retry, save_partial,
};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub role: Role,
    pub content: String,
    pub status: MessageStatus,
    /// Why the reply failed (`"interrupted"` after a shutdown), else null.
    #[schema(required = true)]
    pub error: Option<String>,
    /// What the answer cites: `[n]` in the content is `sources[n-1]`.
    pub sources: Vec<Source>,
    pub created_at: String,
    pub updated_at: String,
    /// Which generation of the reply the row holds (each retry starts a
    /// new one); not part of the API.
    #[serde(skip)]
    pub generation: i64,
}

/// Which page of a conversation to list.
pub enum Page {
    /// The newest messages (older than the key when given).
    Before(Option<ListKey>),
    /// The messages just after the key.
    After(ListKey),
}

/// How a generation ended.
#[derive(Clone)]
pub enum Outcome {
    Done {
        content: String,
        sources: Vec<Source>,
    },
    /// The error, and the text streamed before it (kept, like a cancel).
    Failed(String, Option<String>),
}

const COLUMNS: &str =
    "id, conversation_id, role, content, status, error, sources, created_at, updated_at, user_id, generation";

struct Row2 {
    message: Message,
    key: ListKey,
    user_id: String,
}

fn message(row: &Row<'_>) -> rusqlite::Result<Row2> {
    let sources: String = row.get(6)?;
    let created_at: i64 = row.get(7)?;
    let id: String = row.get(0)?;
    Ok(Row2 {
        key: ListKey {
            at: created_at,
            id: id.clone(),
        },
        message: Message {
            id,
            conversation_id: row.get(1)?,
            role: row.get(2)?,
            content: row.get(3)?,
            status: row.get(4)?,
            error: row.get(5)?,
            // Written by us as a JSON array; an unreadable value shows as none.
            sources: serde_json::from_str(&sources).unwrap_or_default(),
            created_at: format_ms(created_at),
            updated_at: format_ms(row.get(8)?),
            generation: row.get(10)?,
        },
        user_id: row.get(9)?,
    })
}

fn emit(tx: &mut Tx<'_>, kind: EventType, user_id: &str, m: &Message, now: i64) -> Result<()> {
    tx.emit(
        user_id,
        kind,
        Subject {
            id: &m.id,
            scope: Some(&m.conversation_id),
        },
        m,
        now,
    )
}

/// Inserts a user message and its pending reply, moves the conversation's
/// `updated_at`, and emits both `message.created` events.
#[instrument(skip_all)]
pub fn insert_turn(
    tx: &mut Tx<'_>,
    user_id: &str,
    conversation_id: &str,
    content: &str,
    now: i64,
) -> Result<(Message, Message)> {
    let touched = tx.execute(
        "UPDATE conversations SET updated_at = max(updated_at, ?3) WHERE id = ?1 AND user_id = ?2",
        params![conversation_id, user_id, now],
    )?;
    if touched == 0 {
        return Err(Error::NotFound);
    }
    // Never before the conversation's newest message, even if the clock
    // stepped back: list order and `after` cursors follow commit order.
    let newest: Option<i64> = tx
        .prepare_cached("SELECT max(created_at) FROM messages WHERE conversation_id = ?1")?
        .query_row([conversation_id], |r| r.get(0))?;
    let now = newest.map_or(now, |n| n.max(now));
    let user = insert(
        tx,
        user_id,
        conversation_id,
        Role::User,
        content,
        MessageStatus::Done,
        now,
    )?;
    let reply = insert(
        tx,
        user_id,
        conversation_id,
        Role::Assistant,
        "",
        MessageStatus::Pending,
        now,
    )?;
    emit(tx, EventType::MessageCreated, user_id, &user, now)?;
    emit(tx, EventType::MessageCreated, user_id, &reply, now)?;
    Ok((user, reply))
}

fn insert(
    conn: &Connection,
    user_id: &str,
    conversation_id: &str,
    role: Role,
    content: &str,
    status: MessageStatus,
    now: i64,
) -> Result<Message> {
    let id = super::new_id();
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, user_id, role, content, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![id, conversation_id, user_id, role, content, status, now])?;
    Ok(Message {
        id,
        conversation_id: conversation_id.to_owned(),
        role,
        content: content.to_owned(),
        status,
        error: None,
        sources: Vec::new(),
        created_at: format_ms(now),
        updated_at: format_ms(now),
        generation: 0,
    })
}

#[instrument(skip_all)]
pub fn get(conn: &Connection, user_id: &str, id: &str) -> Result<Message> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE id = ?1 AND user_id = ?2"
    ))?
    .query_row([id, user_id], message)
    .optional()?
    .map(|r| r.message)
    .ok_or(Error::NotFound)
}

/// The finished turns before a reply, oldest first, newest kept when the
/// budget of characters runs out.
#[instrument(skip_all)]
pub fn history(conn: &Connection, user_id: &str, reply_id: &str, max_chars: usize) -> Result<Vec<Turn>> {
    let reply = conn
        .prepare_cached("SELECT conversation_id, created_at FROM messages WHERE id = ?1 AND user_id = ?2")?
        .query_row([reply_id, user_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?;
    let Some((conversation_id, created_at)) = reply else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT role, content FROM messages
         WHERE conversation_id = ?1 AND (created_at, id) < (?2, ?3) AND status = 'done' AND content != ''
         ORDER BY created_at DESC, id DESC LIMIT 50",
    )?;
    let rows = stmt.query_map(params![conversation_id, created_at, reply_id], |r| {
        Ok(Turn {
            role: r.get(0)?,
            content: r.get(1)?,
        })
    })?;
    let mut turns = Vec::new();
    let mut used = 0;
    for turn in rows {
        let turn = turn?;
        used += turn.content.chars().count();
        if used > max_chars {
            break;
        }
        turns.push(turn);
    }
    turns.reverse();
    // The question itself is sent separately: drop it from the history.
    if turns.last().is_some_and(|t| t.role == Role::User) {
        turns.pop();
    }
    Ok(turns)
}

/// One page of a conversation, oldest first, with the keys of its first
/// and last items and whether older messages exist before it.
pub struct Listed {
    pub items: Vec<Message>,
    pub first: Option<ListKey>,
    pub last: Option<ListKey>,
    pub more_before: bool,
}

/// One page of a conversation's messages (only the user's: the caller
/// checks the conversation is theirs, so another's is 404 even when empty).
#[instrument(skip_all)]
pub fn list(
    conn: &Connection,
    user_id: &str,
    conversation_id: &str,
    limit: usize,
    page: Page,
) -> Result<Listed> {
    let fetch = super::fetch_for(limit);
    let (sql, key, descending) = match &page {
        Page::Before(key) => (
            format!(
                "SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 AND user_id = ?5
                 AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
                 ORDER BY created_at DESC, id DESC LIMIT ?4"
            ),
            key.as_ref(),
            true,
        ),
        Page::After(key) => (
            format!(
                "SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 AND user_id = ?5
                 AND (?2 IS NULL OR (created_at, id) > (?2, ?3))
                 ORDER BY created_at ASC, id ASC LIMIT ?4"
            ),
            Some(key),
            false,
        ),
    };
    let mut rows = conn
        .prepare_cached(&sql)?
        .query_map(
            params![
                conversation_id,
                key.map(|k| k.at),
                key.map(|k| k.id.as_str()),
                fetch,
                user_id
            ],
            message,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    if descending {
        rows.reverse();
    }
    Ok(Listed {
        first: rows.first().map(|r| r.key.clone()),
        last: rows.last().map(|r| r.key.clone()),
        more_before: if descending { more } else { !rows.is_empty() },
        items: rows.into_iter().map(|r| r.message).collect(),
    })
}
