//! The transactional outbox: every observable change appends its event in
//! the same transaction, with the next id of the user's gap-free sequence.

use std::collections::HashMap;
use std::fmt::Write;

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

/// `ts` is the event's `created_at` as `format_ms` writes it.
fn envelope(id: i64, kind: &str, ts: &str, data: &str) -> String {
    // Sized up front: a bulk change builds hundreds of thousands of frames.
    let mut text = String::with_capacity(data.len() + kind.len() + ts.len() + 64);
    // `kind` is one of our static ASCII type names; `ts` is ASCII too.
    let _ = write!(text, r#"{{"id":{id},"type":"{kind}","ts":"{ts}","data":{data}}}"#);
    text
}

/// What an event is about: the object, and the conversation it lives in
/// (so deleting the conversation can rewrite its events).
pub struct Subject<'a> {
    pub id: &'a str,
    pub conversation_id: Option<&'a str>,
}

/// An event about to be appended: its data serialized, its id not yet taken.
pub struct NewEvent<'a> {
    pub user_id: &'a str,
    pub kind: &'static str,
    pub subject: Subject<'a>,
    /// The `data` JSON text.
    pub data: String,
}

impl<'a> NewEvent<'a> {
    pub fn new(
        user_id: &'a str,
        kind: &'static str,
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
/// their frames (none unless `frames`). Each user's ids are taken in one
/// step (a bulk change such as the start-up sweep emits hundreds of
/// thousands of events), still gap-free and in the order of `events`.
#[instrument(skip_all, fields(count = events.len()))]
pub fn append_all(
    conn: &Connection,
    events: Vec<NewEvent<'_>>,
    now: i64,
    frames: bool,
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
        "INSERT INTO events (user_id, id, type, subject_id, conversation_id, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let ts = format_ms(now);
    let want_frames = frames;
    let mut frames = Vec::with_capacity(if want_frames { events.len() } else { 0 });
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
            event.subject.conversation_id,
            event.data,
            now
        ])?;
        if want_frames {
            frames.push(EventFrame {
                user_id: event.user_id.to_owned(),
                id,
                text: envelope(id, event.kind, &ts, &event.data),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::new_id;
    use crate::db::testing::{insert_user, migrated};

    #[test]
    fn bulk_appends_keep_each_users_ids_gap_free_and_in_order() {
        let (_dir, conn) = migrated();
        let users = [new_id(), new_id()];
        for u in &users {
            insert_user(&conn, u);
        }
        let subject = |id| Subject {
            id,
            conversation_id: None,
        };
        let first = NewEvent::new(&users[1], "a", subject("s0"), &0).expect("event");
        append_all(&conn, vec![first], 1, true).expect("append one");
        let events = (1..=5)
            .map(|n| NewEvent::new(&users[n % 2], "b", subject("s"), &n).expect("event"))
            .collect();
        let frames = append_all(&conn, events, 2, true).expect("append_all");
        let seen: Vec<(&str, i64)> = frames.iter().map(|f| (f.user_id.as_str(), f.id)).collect();
        let (u0, u1) = (users[0].as_str(), users[1].as_str());
        assert_eq!(seen, [(u1, 2), (u0, 1), (u1, 3), (u0, 2), (u1, 4)]);
        assert_eq!(
            frames[1].text,
            r#"{"id":1,"type":"b","ts":"1970-01-01T00:00:00.002Z","data":2}"#
        );
        assert_eq!(head(&conn, u1).expect("head"), 4);
        let stored = range(&conn, u1, 0, 4, 10).expect("range");
        let stored: Vec<&str> = stored.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(stored[1..], [&frames[0].text, &frames[2].text, &frames[4].text]);
    }
}
