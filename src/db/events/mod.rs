//! The transactional outbox: every observable change appends its event in
//! the same transaction, with the next id of the user's gap-free sequence.

use std::collections::HashMap;
use std::fmt::Write;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tracing::instrument;

use super::{Error, Result, format_ms};
use crate::types::EventType;

/// An event as stored and as sent: its id and its frame's JSON text
/// `{"id","type","ts","data"}`, serialized once.
#[derive(Debug, Clone)]
pub struct EventFrame {
    pub user_id: String,
    pub id: i64,
    pub text: String,
}

/// `ts` is the event's `created_at` as `format_ms` writes it.
fn envelope(id: i64, kind: &str, ts: &str, data: &str) -> String {
    // Sized up front: a bulk change builds hundreds of thousands of frames.
    let mut text = String::with_capacity(data.len() + kind.len() + ts.len() + 64);
    // `kind` is one of our static ASCII type names; `ts` is ASCII too.
    let _ = write!(text, r#"{{"id":{id},"type":"{kind}","ts":"{ts}","data":{data}}}"#);
    text
}

/// What an event is about: the object, and its scope, the conversation or
/// document it belongs to (itself for a conversation or a document), so that
/// deleting the scope can rewrite its events. `*.deleted` events have none.
pub struct Subject<'a> {
    pub id: &'a str,
    pub scope: Option<&'a str>,
}

/// An event about to be appended: its data serialized, its id not yet taken.
pub struct NewEvent<'a> {
    pub user_id: &'a str,
    pub kind: EventType,
    pub subject: Subject<'a>,
    /// The `data` JSON text.
    pub data: String,
}

impl<'a> NewEvent<'a> {
    pub fn new(
        user_id: &'a str,
        kind: EventType,
        subject: Subject<'a>,
        data: &impl Serialize,
    ) -> Result<NewEvent<'a>> {
        // Room for a typical object, so most need no reallocation.
        let mut json = Vec::with_capacity(512);
        serde_json::to_writer(&mut json, data).map_err(|e| Error::Other(format!("event data: {e}")))?;
        let data = String::from_utf8(json).map_err(|e| Error::Other(format!("event data: {e}")))?;
        Ok(NewEvent {
            user_id,
            kind,
            subject,
            data,
        })
    }
}

/// Appends the events in order inside the caller's transaction and returns
/// their frames (none unless `keep_frames`). Each user's ids are taken in one
/// step (a bulk change such as the start-up sweep emits hundreds of
/// thousands of events), still gap-free and in the order of `events`.
#[instrument(skip_all, fields(count = events.len()))]
pub fn append_all(
    conn: &Connection,
    events: Vec<NewEvent<'_>>,
    now: i64,
    keep_frames: bool,
) -> Result<Vec<EventFrame>> {
    // How many ids each user needs; once they are taken, the next one to give.
    let mut next_id: HashMap<&str, i64> = HashMap::new();
    for event in &events {
        *next_id.entry(event.user_id).or_default() += 1;
    }
    let mut take =
        conn.prepare_cached("UPDATE users SET event_seq = event_seq + ?2 WHERE id = ?1 RETURNING event_seq")?;
    for (user_id, next) in &mut next_id {
        let count = *next;
        let last: i64 = take.query_row(params![user_id, count], |r| r.get(0))?;
        *next = last - count + 1;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (user_id, id, type, subject_id, scope_id, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let ts = format_ms(now);
    let mut frames = Vec::with_capacity(if keep_frames { events.len() } else { 0 });
    // Consumed one by one, so each data text is freed once its frame holds it.
    for event in events {
        let next = next_id
            .get_mut(event.user_id)
            .ok_or_else(|| Error::Other("an event's user has no ids".into()))?;
        let id = *next;
        *next += 1;
        insert.execute(params![
            event.user_id,
            id,
            event.kind,
            event.subject.id,
            event.subject.scope,
            event.data,
            now
        ])?;
        if keep_frames {
            frames.push(EventFrame {
                user_id: event.user_id.to_owned(),
                id,
                text: envelope(id, event.kind.as_str(), &ts, &event.data),
            });
        }
    }
    Ok(frames)
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
            text: envelope(id, &kind, &format_ms(r.get(3)?), &data),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Rewrites the stored events of the scope `scope_id` (a conversation or a
/// document, and everything in it) to tombstones
/// `{"id": <object id>, "deleted": true}` keeping id, type and ts.
#[instrument(skip_all)]
pub fn tombstone(conn: &Connection, user_id: &str, scope_id: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE events SET data = json_object('id', subject_id, 'deleted', json('true'))
         WHERE user_id = ?1 AND scope_id = ?2",
        params![user_id, scope_id],
    )?)
}

/// After deleting an object: rewrites its stored events to tombstones and
/// emits `kind` (e.g. `conversation.deleted`) with `{"id"}`.
pub fn tombstone_and_emit(
    tx: &mut super::Tx<'_>,
    user_id: &str,
    kind: EventType,
    id: &str,
    now: i64,
) -> Result<()> {
    tombstone(tx, user_id, id)?;
    let subject = Subject { id, scope: None };
    tx.emit(user_id, kind, subject, &serde_json::json!({ "id": id }), now)
}

/// Deletes each user's oldest events: those before the user's first event
/// created between `before_ms` and a day after `now` (later means stamped
/// by a clock that was far ahead; such an event must not hold everything
/// after it for as long; the day of slack keeps events stamped just before
/// a clock was set back), keeping at least the newest `keep_last`. What
/// stays is always the end of the user's sequence without a hole, even when
/// timestamps are out of id order (a clock step), so a replay never skips
/// an event. Returns how many were deleted.
#[instrument(skip_all)]
pub fn prune(conn: &Connection, before_ms: i64, now: i64, keep_last: i64) -> Result<usize> {
    // Per user, the first id to keep. Its search walks the user's oldest
    // events in id order (primary key) and stops at the first recent one,
    // so it reads about as many rows as it deletes.
    let bounds: Vec<(String, i64)> = conn
        .prepare_cached(PRUNE_BOUNDS)?
        .query_map(
            rusqlite::named_params! {
                ":before": before_ms,
                ":latest": now.saturating_add(CLOCK_SLACK_MS),
                ":keep": keep_last,
            },
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut delete = conn.prepare_cached("DELETE FROM events WHERE user_id = ?1 AND id < ?2")?;
    let mut deleted = 0;
    for (user_id, first_kept) in bounds {
        deleted += delete.execute(params![user_id, first_kept])?;
    }
    Ok(deleted)
}

/// How far ahead of the sweep's clock an event's stamp may be and still
/// count as recent.
const CLOCK_SLACK_MS: i64 = 24 * 3600 * 1000;

/// For each user with more than `:keep` events: the first id `prune` keeps.
const PRUNE_BOUNDS: &str = "SELECT u.id, coalesce(
        (SELECT e.id FROM events AS e
         WHERE e.user_id = u.id AND e.id <= u.event_seq - :keep
           AND e.created_at BETWEEN :before AND :latest
         ORDER BY e.id LIMIT 1),
        u.event_seq - :keep + 1)
    FROM users AS u WHERE u.event_seq > :keep";

#[cfg(test)]
mod tests;
