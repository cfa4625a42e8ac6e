//! The transactional outbox: every observable change appends its event in
//! the same transaction, with the next id of the user's gap-free sequence.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tracing::instrument;

use super::{Error, Result, format_ms};

/// An event as stored and as sent: its id and its frame's JSON text
/// `{"id","type","ts","data"}`, serialized once.
#[derive(Debug, Clone)]
pub struct EventFrame {
    pub user_id: String,
    pub id: i64,
    pub text: String,
}

fn envelope(id: i64, kind: &str, created_at: i64, data: &str) -> String {
    // `kind` is one of our static ASCII type names; `ts` is ASCII too.
    format!(
        r#"{{"id":{id},"type":"{kind}","ts":"{}","data":{data}}}"#,
        format_ms(created_at)
    )
}

/// What an event is about: the object, and the conversation it lives in
/// (so deleting the conversation can rewrite its events).
pub struct Subject<'a> {
    pub id: &'a str,
    pub conversation_id: Option<&'a str>,
}

/// Appends an event for `user_id` inside the caller's transaction and
/// returns its frame, to be published once the transaction commits.
#[instrument(skip_all, fields(kind))]
pub fn append(
    conn: &Connection,
    user_id: &str,
    kind: &'static str,
    subject: Subject<'_>,
    data: &impl Serialize,
    now: i64,
) -> Result<EventFrame> {
    let data = serde_json::to_string(data).map_err(|e| Error::Other(format!("event data: {e}")))?;
    let id: i64 = conn
        .prepare_cached("UPDATE users SET event_seq = event_seq + 1 WHERE id = ?1 RETURNING event_seq")?
        .query_row([user_id], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO events (user_id, id, type, subject_id, conversation_id, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        user_id,
        id,
        kind,
        subject.id,
        subject.conversation_id,
        data,
        now
    ])?;
    Ok(EventFrame {
        user_id: user_id.to_owned(),
        id,
        text: envelope(id, kind, now, &data),
    })
}

/// The user's latest event id (0 when none).
#[instrument(skip_all)]
pub fn head(conn: &Connection, user_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT event_seq FROM users WHERE id = ?1")?
        .query_row([user_id], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The smallest id still retained for the user, if any.
#[instrument(skip_all)]
pub fn oldest(conn: &Connection, user_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(id) FROM events WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))?)
}

/// Up to `limit` stored events with `after < id <= upto`, in order.
#[instrument(skip_all)]
pub fn range(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<EventFrame>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, type, data, created_at FROM events
         WHERE user_id = ?1 AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![user_id, after, upto, limit], |r| {
        let id: i64 = r.get(0)?;
        let kind: String = r.get(1)?;
        let data: String = r.get(2)?;
        Ok(EventFrame {
            user_id: user_id.to_owned(),
            id,
            text: envelope(id, &kind, r.get(3)?, &data),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Rewrites the stored events about `subject_id` and, when it is a
/// conversation, about everything in it, to tombstones
/// `{"id": <object id>, "deleted": true}` keeping id, type and ts.
#[instrument(skip_all)]
pub fn tombstone(conn: &Connection, user_id: &str, subject_id: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE events SET data = json_object('id', subject_id, 'deleted', json('true'))
         WHERE user_id = ?1 AND (subject_id = ?2 OR conversation_id = ?2)",
        params![user_id, subject_id],
    )?)
}

/// After deleting an object: rewrites its stored events to tombstones and
/// emits `kind` (e.g. `conversation.deleted`) with `{"id"}`.
pub fn tombstone_and_emit(
    tx: &mut super::Tx<'_>,
    user_id: &str,
    kind: &'static str,
    id: &str,
    now: i64,
) -> Result<()> {
    tombstone(tx, user_id, id)?;
    let subject = Subject {
        id,
        conversation_id: None,
    };
    tx.emit(user_id, kind, subject, &serde_json::json!({ "id": id }), now)
}

/// Deletes events older than `before_ms`, except each user's newest
/// `keep_last`. Returns how many were deleted.
#[instrument(skip_all)]
pub fn prune(conn: &Connection, before_ms: i64, keep_last: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM events WHERE created_at < ?1
           AND id <= (SELECT event_seq FROM users WHERE users.id = events.user_id) - ?2",
        params![before_ms, keep_last],
    )?)
}
