//! The outbox over a real database file: bulk appends keep each user's ids
//! gap-free and in order, pruning keeps the end of every sequence.

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
    let subject = |id| Subject { id, scope: None };
    let first = NewEvent::new(&users[1], EventType::ConversationCreated, subject("s0"), &0).expect("event");
    append_all(&conn, vec![first], 1, true).expect("append one");
    let events = (1..=5)
        .map(|n| {
            NewEvent::new(&users[n % 2], EventType::ConversationUpdated, subject("s"), &n).expect("event")
        })
        .collect();
    let frames = append_all(&conn, events, 2, true).expect("append_all");
    let seen: Vec<(&str, i64)> = frames.iter().map(|f| (f.user_id.as_str(), f.id)).collect();
    let (u0, u1) = (users[0].as_str(), users[1].as_str());
    assert_eq!(seen, [(u1, 2), (u0, 1), (u1, 3), (u0, 2), (u1, 4)]);
    assert_eq!(
        frames[1].text,
        r#"{"id":1,"type":"conversation.updated","ts":"1970-01-01T00:00:00.002Z","data":2}"#
    );
    assert_eq!(head(&conn, u1).expect("head"), 4);
    let stored = range(&conn, u1, 0, 4, 10).expect("range");
    let stored: Vec<&str> = stored.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(stored[1..], [&frames[0].text, &frames[2].text, &frames[4].text]);
}

/// Appends one event per timestamp for `user_id` (ids 1, 2, ...).
fn append_at(conn: &Connection, user_id: &str, timestamps: &[i64]) {
    for &ts in timestamps {
        let event = NewEvent::new(
            user_id,
            EventType::ConversationCreated,
            Subject { id: "s", scope: None },
            &ts,
        )
        .expect("event");
        append_all(conn, vec![event], ts, false).expect("append");
    }
}

fn kept_ids(conn: &Connection, user_id: &str) -> Vec<i64> {
    range(conn, user_id, 0, i64::MAX, 100)
        .expect("range")
        .iter()
        .map(|f| f.id)
        .collect()
}

#[test]
fn pruning_keeps_an_unbroken_end_of_each_users_sequence() {
    let (_dir, conn) = migrated();
    let (a, b) = (new_id(), new_id());
    insert_user(&conn, &a);
    insert_user(&conn, &b);
    // Event 4 is stamped before event 3 (a clock step back): deleting
    // it by age alone would leave a hole that a replay from 2 skips.
    append_at(&conn, &a, &[10, 20, 50, 40, 60, 70]);
    append_at(&conn, &b, &[10, 20, 30]);

    let deleted = prune(&conn, 45, 100, 1).expect("prune");

    assert_eq!(kept_ids(&conn, &a), [3, 4, 5, 6]);
    // Everything of b is old: only its newest `keep_last` stays.
    assert_eq!(kept_ids(&conn, &b), [3]);
    assert_eq!(deleted, 4);
    assert_eq!(prune(&conn, 45, 100, 1).expect("again"), 0);
    assert_eq!(prune(&conn, 1_000, 1_000, 2).expect("later"), 2);
    assert_eq!(kept_ids(&conn, &a), [5, 6]);
    assert_eq!(oldest(&conn, &a).expect("oldest"), Some(5));
}

#[test]
fn an_event_stamped_by_a_clock_ahead_does_not_hold_back_pruning() {
    let (_dir, conn) = migrated();
    let a = new_id();
    insert_user(&conn, &a);
    // Event 2 came from a clock two days ahead, later set right.
    append_at(&conn, &a, &[10, 2 * 86_400_000, 20, 30, 500]);

    assert_eq!(prune(&conn, 100, 1_000, 0).expect("prune"), 4);
    assert_eq!(kept_ids(&conn, &a), [5]);
}

#[test]
fn pruning_finds_each_users_old_events_through_the_primary_key() {
    let (_dir, conn) = migrated();
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_BOUNDS}"))
        .expect("explain")
        .query_map(
            rusqlite::named_params! {":before": 0, ":latest": 0, ":keep": 0},
            |r| r.get::<_, String>(3),
        )
        .expect("plan")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert!(
        plan.iter()
            .any(|step| step.contains("SEARCH e USING PRIMARY KEY (user_id=? AND id<?)")),
        "{plan:?}"
    );
}
