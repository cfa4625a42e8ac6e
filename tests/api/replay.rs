//! API.md "WebSocket /ws", replay: `since` gives exactly the missed events,
//! once each and in order (also those committed while the replay runs);
//! `resync_required` when they are gone, when `since` is ahead of the head,
//! or when the epoch differs; deleted conversations leave only tombstones.
//!
//! Events are produced with renames (one `conversation.updated` each) and
//! chat turns, and ids are counted from the `head` a socket reports, so
//! these tests do not depend on which other writes emit events.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{ask, conversation_path, rename};
use crate::helpers::{PASSWORD, TestApp};
use crate::ws_helpers::{
    Cred, WAIT, Ws, assert_consecutive, connect, connect_since, connect_with, id_of, try_connect_to, types,
};

/// A user with one conversation; returns the token, the conversation and
/// the user's head after it was created.
async fn user_with_conversation(app: &TestApp, email: &str) -> (String, Value, i64) {
    let (token, _) = app.register(email, PASSWORD).await;
    let conversation = app.create_conversation(&token, Some("Log")).await;
    let head = connect(app, &token).await.head();
    (token, conversation, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_since_replays_exactly_the_missed_events() {
    let app = TestApp::spawn().await;
    let (token, conversation, base) = user_with_conversation(&app, "replay@example.com").await;
    let mut watcher = connect(&app, &token).await;
    let mut ws = connect(&app, &token).await;

    rename(&app, &token, &conversation, "Before").await;
    let first = ws.next_event().await;
    assert_eq!(first["id"], json!(base + 1));
    ws.close().await;

    // Events while the client is away.
    rename(&app, &token, &conversation, "While away").await;
    ask(&app, &token, &conversation, "missed question").await;
    let live = watcher.next_events(5).await;
    assert_consecutive(&live, base + 1);
    assert_eq!(live[0], first);

    let mut back = connect_since(&app, &token, base + 1).await;
    assert_eq!(back.head(), base + 5);
    let replayed = back.next_events(4).await;
    assert_eq!(
        replayed,
        live[1..],
        "the replay equals what a connected socket saw"
    );
    assert_eq!(
        types(&replayed),
        [
            "conversation.updated",
            "message.created",
            "message.created",
            "message.status_updated"
        ]
    );
    back.expect_quiet().await;

    // Then live events, with no gap and no duplicate.
    rename(&app, &token, &conversation, "After").await;
    let next = back.next_event().await;
    assert_eq!(next["id"], json!(base + 6));
    assert_eq!(watcher.next_event().await, next);
    back.expect_quiet().await;

    // since = head replays nothing; since = 0 replays everything.
    let mut current = connect_since(&app, &token, base + 6).await;
    current.expect_quiet().await;
    let mut everything = connect_since(&app, &token, 0).await;
    let all = everything
        .next_events(usize::try_from(base + 6).expect("fits"))
        .await;
    assert_consecutive(&all, 1);
    let tail = usize::try_from(base).expect("fits");
    assert_eq!(all[tail..tail + 5], live[..]);
    assert_eq!(all[tail + 5], next);
    everything.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_ahead_of_the_head_asks_for_a_resync() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("ahead@example.com", PASSWORD).await;

    // No events yet: since=0 is fine, since=1 is ahead.
    let mut empty = connect_since(&app, &token, 0).await;
    assert_eq!(empty.head(), 0, "a new user has no events");
    empty.expect_quiet().await;
    let mut ahead = connect_since(&app, &token, 1).await;
    let resync = ahead.next_control("resync_required").await;
    assert_eq!(resync, json!({"oldest_id": null, "head": 0}));

    // The resynced socket then gets live events, from id 1.
    let conversation = app.create_conversation(&token, None).await;
    rename(&app, &token, &conversation, "one").await;
    let first = ahead.next_event().await;
    assert_eq!(first["id"], json!(1), "the first event of a user is 1");

    let head = connect(&app, &token).await.head();
    let mut ahead = connect_since(&app, &token, head + 5).await;
    let resync = ahead.next_control("resync_required").await;
    assert_eq!(resync, json!({"oldest_id": 1, "head": head}));
    ahead.expect_quiet().await;
    rename(&app, &token, &conversation, "two").await;
    assert_eq!(ahead.next_event().await["id"], json!(head + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_older_than_retention_asks_for_a_resync() {
    let app = TestApp::spawn_with(&[
        "--event-retention",
        "1s",
        "--event-retention-min",
        "2",
        "--sweep-interval",
        "100ms",
    ])
    .await;
    let (token, conversation, _) = user_with_conversation(&app, "retention@example.com").await;
    for n in 0..5 {
        rename(&app, &token, &conversation, &format!("title {n}")).await;
    }
    let head = connect(&app, &token).await.head();
    assert!(head >= 5);

    // Wait (bounded) until the sweep pruned all but the newest 2 events: a
    // replay from 0 then starts with resync_required instead of event 1.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let resync = loop {
        let mut ws = connect_since(&app, &token, 0).await;
        let frame = ws.next_frame_within(WAIT).await;
        // A sweep that prunes between the server's retention check and its
        // first replay page gives `oldest_id: null` ("pruned meanwhile,
        // refetch"): a race of this test's 100 ms sweep, so ask again.
        // Pruning goes by age, so on a slow machine a sweep may first prune
        // only the events already past the 1 s (oldest_id below head - 1);
        // the next sweeps prune the rest, down to the newest 2.
        if frame["type"] == json!("resync_required") {
            let oldest = &frame["data"]["oldest_id"];
            if *oldest == json!(head - 1) {
                break frame["data"].clone();
            }
            if let Some(oldest) = oldest.as_i64() {
                assert!(
                    (2..head - 1).contains(&oldest),
                    "a partly pruned log keeps a suffix of the events: {frame}"
                );
            }
        }
        if frame["type"] != json!("resync_required") {
            assert_eq!(
                frame["id"],
                json!(1),
                "before pruning the replay starts at 1: {frame}"
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events older than --event-retention 1s were not pruned within 10s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        resync,
        json!({"oldest_id": head - 1, "head": head}),
        "the newest --event-retention-min 2 events stay"
    );

    // A client that missed only retained events still gets a replay.
    let mut ws = connect_since(&app, &token, head - 2).await;
    let events = ws.next_events(2).await;
    assert_consecutive(&events, head - 1);
    ws.expect_quiet().await;

    // One that missed a pruned event gets resync_required first, then live.
    let mut ws = connect_since(&app, &token, head - 3).await;
    let resync = ws.next_control("resync_required").await;
    assert_eq!(resync, json!({"oldest_id": head - 1, "head": head}));
    ws.expect_quiet().await;
    rename(&app, &token, &conversation, "live").await;
    assert_eq!(ws.next_event().await["id"], json!(head + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_during_a_replay_are_neither_lost_nor_doubled() {
    let pause = Duration::from_millis(800);
    let hooks = ragd::Hooks {
        replay_pause: Some(pause),
        ..Default::default()
    };
    let app = TestApp::spawn_with_hooks(&[], hooks).await;
    let (token, conversation, _) = user_with_conversation(&app, "window@example.com").await;
    rename(&app, &token, &conversation, "two").await;
    let mut head = connect(&app, &token).await.head();

    for since in [0, head - 1] {
        // The server subscribes, then pauses before reading the stored
        // events: these writes (4 events) commit inside that window.
        let (stream, _) = try_connect_to(&app.address, Cred::Bearer(&token), &format!("since={since}"))
            .await
            .unwrap_or_else(|r| panic!("upgrade refused: {} {}", r.status, r.text));
        let started = tokio::time::Instant::now();
        rename(&app, &token, &conversation, &format!("during {since}")).await;
        ask(&app, &token, &conversation, "during the replay").await;
        let written = started.elapsed();
        head += 4;

        let mut ws = Ws::from_stream(stream).await;
        let events = ws.next_events(usize::try_from(head - since).expect("fits")).await;
        assert_consecutive(&events, since + 1);
        assert_eq!(
            types(&events[events.len() - 4..]),
            [
                "conversation.updated",
                "message.created",
                "message.created",
                "message.status_updated"
            ]
        );
        ws.expect_quiet().await;
        assert!(
            written < pause,
            "the writes took {written:?}, longer than the replay pause {pause:?}; \
             the test did not exercise the window"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_epoch_asks_for_a_resync() {
    let app = TestApp::spawn().await;
    let (token, conversation, _) = user_with_conversation(&app, "epoch@example.com").await;
    for n in 0..3 {
        rename(&app, &token, &conversation, &format!("title {n}")).await;
    }
    let ws = connect(&app, &token).await;
    let epoch = ws.hello["epoch"].as_str().expect("epoch").to_owned();
    let head = ws.head();

    // The same epoch: a normal replay.
    let since = head - 2;
    let mut same = connect_with(
        &app,
        Cred::Bearer(&token),
        &format!("since={since}&epoch={epoch}"),
    )
    .await;
    assert_eq!(same.hello["epoch"], json!(epoch), "the epoch is stable");
    let events = same.next_events(2).await;
    assert_consecutive(&events, since + 1);
    same.expect_quiet().await;

    // Another epoch (a restored or recreated database): resync_required.
    let mut other = connect_with(
        &app,
        Cred::Bearer(&token),
        &format!("since={since}&epoch={epoch}x"),
    )
    .await;
    let resync = other.next_control("resync_required").await;
    assert_eq!(resync, json!({"oldest_id": 1, "head": head}));
    other.expect_quiet().await;

    // `epoch` without `since` is ignored: live events only.
    let mut live = connect_with(&app, Cred::Bearer(&token), "epoch=whatever").await;
    live.expect_quiet().await;
    rename(&app, &token, &conversation, "live").await;
    assert_eq!(live.next_event().await["id"], json!(head + 1));
    assert_eq!(
        other.next_event().await["id"],
        json!(head + 1),
        "live after the resync"
    );
}

/// Reads events until one satisfies `last`.
async fn events_until(ws: &mut Ws, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = ws.next_event().await;
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_conversation_leaves_only_tombstones_in_the_log() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("privacy@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;
    assert_eq!(ws.head(), 0);

    let kept = app.create_conversation(&token, Some("Groceries")).await;
    let secret = app.create_conversation(&token, Some("Surprise party")).await;
    rename(&app, &token, &secret, "Surprise party for Zoe").await;
    ask(&app, &token, &secret, "my hidden plan involves balloons").await;
    ask(&app, &token, &kept, "milk and eggs").await;
    let kept_id = kept["id"].clone();
    let live = events_until(&mut ws, |e| {
        e["type"] == json!("message.status_updated") && e["data"]["conversation_id"] == kept_id
    })
    .await;
    assert_consecutive(&live, 1);
    let head = id_of(live.last().expect("events"));

    app.delete(&conversation_path(&secret), Some(&token))
        .await
        .expect(StatusCode::NO_CONTENT);
    let deleted = ws.next_event().await;
    assert_eq!(deleted["id"], json!(head + 1));
    assert_eq!(deleted["type"], json!("conversation.deleted"));
    assert_eq!(deleted["data"], json!({"id": secret["id"]}));
    ws.expect_quiet().await;

    let mut replay = connect_since(&app, &token, 0).await;
    let stored = replay.next_events(usize::try_from(head + 1).expect("fits")).await;
    replay.expect_quiet().await;
    assert_consecutive(&stored, 1);

    let secret_id = secret["id"].clone();
    let mut tombstones = 0;
    for (before, after) in live.iter().zip(&stored) {
        assert_eq!(after["id"], before["id"]);
        assert_eq!(after["type"], before["type"]);
        assert_eq!(after["ts"], before["ts"], "a tombstone keeps its ts");
        let data = &before["data"];
        if data["id"] == secret_id || data["conversation_id"] == secret_id {
            tombstones += 1;
            assert_eq!(
                after["data"],
                json!({"id": data["id"], "deleted": true}),
                "an event about the deleted conversation becomes a tombstone"
            );
        } else {
            assert_eq!(after, before, "other events are untouched");
        }
    }
    assert!(
        tombstones >= 4,
        "the rename and the three message events are tombstones"
    );
    let last = stored.last().expect("events");
    assert_eq!(last["id"], deleted["id"]);
    assert_eq!(last["type"], json!("conversation.deleted"));
    assert_eq!(last["data"]["id"], secret_id);
    let last_data = last["data"].as_object().expect("an object");
    assert!(
        last_data.len() == 1 || (last_data.len() == 2 && last["data"]["deleted"] == json!(true)),
        "conversation.deleted carries only the id: {last}"
    );

    let text = serde_json::to_string(&stored).expect("serialize");
    for needle in ["Surprise", "Zoe", "balloons", "hidden plan"] {
        assert!(
            !text.contains(needle),
            "deleted text {needle:?} must not live on in the log: {text}"
        );
    }
    assert!(
        text.contains("milk and eggs"),
        "the other conversation's events keep their text"
    );
}
