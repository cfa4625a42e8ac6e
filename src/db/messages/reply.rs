//! A reply's life after its turn is stored: streaming, finished (done or
//! error), cancelled, reset for a retry, interrupted by a dead process.
//! Every change is fenced by the reply's `generation` where a generation
//! could race it, and commits with its `message.status_updated`.

use rusqlite::{Connection, OptionalExtension, params};
use tracing::instrument;

use super::{COLUMNS, Message, Outcome, emit, get, message};
use crate::db::events::{NewEvent, Subject};
use crate::db::{Error, Result, Tx};
use crate::types::{EventType, MessageStatus, Role};

/// Ends a generation, unless the reply is no longer running (cancelled, or
/// gone with its conversation): then nothing changes and `None` is returned.
#[instrument(skip_all)]
pub fn finish(
    tx: &mut Tx<'_>,
    user_id: &str,
    id: &str,
    generation: i64,
    outcome: Outcome,
    now: i64,
) -> Result<Option<Message>> {
    let (content, sources, status, error) = match outcome {
        Outcome::Done { content, sources } => {
            let sources = serde_json::to_string(&sources).map_err(|e| Error::Other(e.to_string()))?;
            (Some(content), sources, MessageStatus::Done, None)
        }
        Outcome::Failed(error, partial) => (partial, "[]".to_owned(), MessageStatus::Error, Some(error)),
    };
    let updated = tx
        .prepare_cached(&format!(
            "UPDATE messages SET content = coalesce(?3, content), sources = ?4, status = ?5, error = ?6, updated_at = ?7
             WHERE id = ?1 AND user_id = ?2 AND generation = ?8 AND status IN ('pending', 'streaming')
             RETURNING {COLUMNS}"
        ))?
        .query_row(params![id, user_id, content, sources, status, error, now, generation], message)
        .optional()?;
    match updated {
        Some(row) => {
            emit(tx, EventType::MessageStatusUpdated, user_id, &row.message, now)?;
            Ok(Some(row.message))
        }
        None => Ok(None),
    }
}

/// The first streamed text arrived: `pending` -> `streaming`, with its
/// event. `None` when the reply is no longer this generation's.
#[instrument(skip_all)]
pub fn mark_streaming(
    tx: &mut Tx<'_>,
    user_id: &str,
    id: &str,
    generation: i64,
    now: i64,
) -> Result<Option<Message>> {
    let row = tx
        .prepare_cached(&format!(
            "UPDATE messages SET status = 'streaming', updated_at = ?4
             WHERE id = ?1 AND user_id = ?2 AND generation = ?3 AND status = 'pending' RETURNING {COLUMNS}"
        ))?
        .query_row(params![id, user_id, generation, now], message)
        .optional()?;
    if let Some(row) = &row {
        emit(tx, EventType::MessageStatusUpdated, user_id, &row.message, now)?;
    }
    Ok(row.map(|r| r.message))
}

/// Saves the text streamed so far, so a reload shows it (no event: the
/// `message.delta` frames are its live signal).
#[instrument(skip_all)]
pub fn save_partial(
    conn: &Connection,
    user_id: &str,
    id: &str,
    generation: i64,
    content: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE messages SET content = ?4 WHERE id = ?1 AND user_id = ?2 AND generation = ?3 AND status = 'streaming'",
    )?
    .execute(params![id, user_id, generation, content])?;
    Ok(())
}

/// A running generation was cancelled by its user: `cancelled`, with the
/// text produced so far, and its event.
#[instrument(skip_all)]
pub fn cancel_generation(
    tx: &mut Tx<'_>,
    user_id: &str,
    id: &str,
    generation: i64,
    content: &str,
    now: i64,
) -> Result<Option<Message>> {
    let row = tx
        .prepare_cached(&format!(
            "UPDATE messages SET status = 'cancelled', content = ?4, updated_at = ?5
             WHERE id = ?1 AND user_id = ?2 AND generation = ?3 AND status IN ('pending', 'streaming')
             RETURNING {COLUMNS}"
        ))?
        .query_row(params![id, user_id, generation, content, now], message)
        .optional()?;
    if let Some(row) = &row {
        emit(tx, EventType::MessageStatusUpdated, user_id, &row.message, now)?;
    }
    Ok(row.map(|r| r.message))
}

/// Cancels a running reply that has no generation in this process,
/// keeping its content.
#[instrument(skip_all)]
pub fn cancel(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<Message> {
    let current = get(tx, user_id, id)?;
    if current.role != Role::Assistant || !current.status.is_running() {
        return Err(Error::Conflict(
            "only a reply that is still being generated can be cancelled",
        ));
    }
    let row = tx
        .prepare_cached(&format!(
            "UPDATE messages SET status = 'cancelled', updated_at = ?3 WHERE id = ?1 AND user_id = ?2 RETURNING {COLUMNS}"
        ))?
        .query_row(params![id, user_id, now], message)?;
    emit(tx, EventType::MessageStatusUpdated, user_id, &row.message, now)?;
    Ok(row.message)
}

/// Puts a finished reply back to `pending` (empty content, no error, no
/// sources) for regeneration, as a new generation; returns it, the
/// question it answers and its generation.
#[instrument(skip_all)]
pub fn reset_for_retry(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<(Message, String, i64)> {
    let current = get(tx, user_id, id)?;
    if current.role != Role::Assistant {
        return Err(Error::Conflict("only an assistant reply can be retried"));
    }
    if current.status.is_running() {
        return Err(Error::Conflict("the reply is still being generated"));
    }
    let row = tx
        .prepare_cached(&format!(
            "UPDATE messages SET status = 'pending', content = '', error = NULL, sources = '[]', updated_at = ?3,
             generation = generation + 1 WHERE id = ?1 AND user_id = ?2 RETURNING {COLUMNS}"
        ))?
        .query_row(params![id, user_id, now], message)?;
    let question: String = tx
        .prepare_cached(
            "SELECT content FROM messages
             WHERE conversation_id = ?1 AND role = 'user' AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )?
        .query_row(
            params![row.message.conversation_id, row.key.at, row.key.id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_default();
    emit(tx, EventType::MessageStatusUpdated, user_id, &row.message, now)?;
    let generation = row.message.generation;
    Ok((row.message, question, generation))
}

/// Start-up (and shutdown) sweep: every reply left `pending`/`streaming` by
/// a process that is gone becomes `error`/"interrupted", keeping its
/// partial content, with its event. Returns how many were fixed.
#[instrument(skip_all)]
pub fn interrupt_unfinished(tx: &mut Tx<'_>, now: i64) -> Result<usize> {
    let mut rows = tx
        .prepare_cached(&format!(
            "UPDATE messages SET status = 'error', error = 'interrupted', updated_at = ?1
             WHERE status IN ('pending', 'streaming') RETURNING {COLUMNS}"
        ))?
        .query_map([now], message)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING has no order: emit in creation order.
    rows.sort_unstable_by(|a, b| (a.key.at, &a.key.id).cmp(&(b.key.at, &b.key.id)));
    let events = rows
        .iter()
        .map(|row| {
            let subject = Subject {
                id: &row.message.id,
                scope: Some(&row.message.conversation_id),
            };
            NewEvent::new(
                &row.user_id,
                EventType::MessageStatusUpdated,
                subject,
                &row.message,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    tx.emit_all(events, now)?;
    Ok(rows.len())
}
