//! API.md "WebSocket /ws": credentials, refusals before the upgrade, hello,
//! conversation events, isolation, ping/pong, heartbeats, limits and the
//! close codes (1009, 1012, 4001, 4003), and a reader that stalls.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{
    all_messages, ask, cancel_path, conversation_path, messages_path, post_message_with, rename, retry_path,
};
use crate::helpers::{PASSWORD, TestApp, jwt_claims, now_secs};
use crate::ws_helpers::{
    Cred, Ending, WAIT, Ws, assert_consecutive, assert_event, connect, connect_since, connect_with, id_of,
    ticket, try_connect, types,
};

/// Asserts that the upgrade is refused with 401 `unauthorized`.
async fn assert_refused_401(app: &TestApp, cred: Cred<'_>, query: &str, what: &str) {
    match try_connect(app, cred, query).await {
        Ok(_) => panic!("{what}: the upgrade must be refused with 401, but it succeeded"),
        Err(rejected) => {
            assert_eq!(
                rejected.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                rejected.text
            );
            rejected.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_kind_opens_a_socket_with_hello() {
    let app = TestApp::spawn().await;
    let (token, user) = app.register("creds@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token, None).await;

    let mut sockets = Vec::new();
    let bearer = connect_with(&app, Cred::Bearer(&token), "").await;
    assert_eq!(bearer.protocol, None, "no subprotocol was asked for");
    sockets.push(bearer);
    let protocol = connect_with(&app, Cred::Protocol(&token), "").await;
    assert_eq!(
        protocol.protocol.as_deref(),
        Some("bearer"),
        "the server selects the subprotocol `bearer`"
    );
    sockets.push(protocol);
    sockets.push(connect_with(&app, Cred::Query(&token), "").await);
    let ticket = ticket(&app, &token).await;
    sockets.push(connect_with(&app, Cred::Ticket(&ticket), "").await);

    let epoch = sockets[0].hello["epoch"].clone();
    let head = sockets[0].head();
    for ws in &sockets {
        assert_eq!(ws.hello["user_id"], user["id"]);
        assert_eq!(ws.head(), head, "the same head on every socket");
        assert_eq!(
            ws.hello["heartbeat_ms"],
            json!(25_000),
            "the default heartbeat is 25s"
        );
        assert_eq!(ws.hello["epoch"], epoch, "one database, one epoch");
    }

    // Every socket of the user gets every live event, without replay.
    let renamed = rename(&app, &token, &conversation, "Fan-out").await;
    for ws in &mut sockets {
        let event = ws.next_event().await;
        assert_eq!(event["id"], json!(head + 1));
        assert_eq!(event["type"], json!("conversation.updated"));
        assert_eq!(event["data"], renamed);
        ws.expect_quiet().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_works_once_and_not_after_its_ttl() {
    let app = TestApp::spawn_with(&["--ws-ticket-ttl", "1s"]).await;
    let (token, user) = app.register("ticket@example.com", PASSWORD).await;

    app.post_empty("/api/ws-ticket", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let response = app.post_empty("/api/ws-ticket", Some(&token)).await;
    let body = response.expect(StatusCode::CREATED).clone();
    let first = body["ticket"].as_str().expect("a ticket").to_owned();
    assert!(
        body["expires_at"].as_str() > Some(""),
        "expires_at is set: {body}"
    );
    let ws = connect_with(&app, Cred::Ticket(&first), "").await;
    assert_eq!(ws.hello["user_id"], user["id"]);
    assert_refused_401(&app, Cred::Ticket(&first), "", "a used ticket").await;
    assert_refused_401(&app, Cred::Ticket("not-a-ticket"), "", "an unknown ticket").await;

    let late = ticket(&app, &token).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_refused_401(&app, Cred::Ticket(&late), "", "a ticket past its TTL").await;
    let fresh = ticket(&app, &token).await;
    connect_with(&app, Cred::Ticket(&fresh), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_bad_since_are_refused_before_the_upgrade() {
    let app = TestApp::spawn().await;
    let (token, user) = app.register("bad-ws@example.com", PASSWORD).await;

    assert_refused_401(&app, Cred::None, "", "no credentials").await;
    assert_refused_401(&app, Cred::Bearer("garbage"), "", "a malformed bearer token").await;
    assert_refused_401(&app, Cred::Query("garbage"), "", "a malformed ?token=").await;
    assert_refused_401(&app, Cred::Protocol("garbage"), "", "a malformed protocol token").await;

    let mut claims = jwt_claims(&token);
    let now = now_secs();
    claims["iat"] = json!(now - 7_200);
    claims["exp"] = json!(now - 60);
    let expired = app.sign(&claims);
    assert_refused_401(&app, Cred::Bearer(&expired), "", "an expired bearer token").await;
    assert_refused_401(&app, Cred::Query(&expired), "", "an expired ?token=").await;
    assert_refused_401(&app, Cred::Protocol(&expired), "", "an expired protocol token").await;

    for since in ["-1", "abc", "1.5", "18446744073709551616", ""] {
        match try_connect(&app, Cred::Bearer(&token), &format!("since={since}")).await {
            Ok(_) => panic!("since={since:?} must be refused with 400 before the upgrade"),
            Err(rejected) => {
                assert_eq!(
                    rejected.status,
                    StatusCode::BAD_REQUEST,
                    "since={since:?}: {}",
                    rejected.text
                );
                rejected.expect_error(StatusCode::BAD_REQUEST, "bad_request");
            }
        }
    }
    // The valid token still works.
    let ws = connect(&app, &token).await;
    assert_eq!(ws.hello["user_id"], user["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seventeenth_socket_of_a_user_is_429() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("many@example.com", PASSWORD).await;
    let (other, _) = app.register("other-many@example.com", PASSWORD).await;

    let mut sockets = Vec::new();
    for _ in 0..16 {
        sockets.push(connect(&app, &token).await);
    }
    let rejected = match try_connect(&app, Cred::Bearer(&token), "").await {
        Ok(_) => panic!("the 17th socket must be refused with 429"),
        Err(rejected) => rejected,
    };
    rejected.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after = rejected
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("429 carries Retry-After: {:?}", rejected.headers));
    assert!(
        retry_after.parse::<u64>().is_ok(),
        "Retry-After is in seconds: {retry_after:?}"
    );
    // The limit is per user.
    connect(&app, &other).await;

    // Closing one frees its slot.
    sockets.pop().expect("a socket").close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_connect(&app, Cred::Bearer(&token), "").await {
            Ok(ws) => {
                sockets.push(ws);
                break;
            }
            Err(rejected) if rejected.status == StatusCode::TOO_MANY_REQUESTS => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a closed socket frees its slot within {WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(rejected) => panic!("unexpected refusal: {} {}", rejected.status, rejected.text),
        }
    }
    // All 16 are alive.
    for ws in &mut sockets {
        ws.ping_pong().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_events_for_create_rename_and_delete() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("conv-events@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;

    let conversation = app.create_conversation(&token, Some("Draft")).await;
    let renamed = app
        .patch_json(
            &conversation_path(&conversation),
            Some(&token),
            &json!({"title": "Final"}),
        )
        .await
        .expect(StatusCode::OK)
        .clone();
    let events = ws.next_events(2).await;
    assert_consecutive(&events, 1);
    assert_eq!(types(&events), ["conversation.created", "conversation.updated"]);
    assert_eq!(events[0]["data"], conversation);
    assert_eq!(events[1]["data"], renamed);

    // A new message moves updated_at without a conversation event.
    ask(&app, &token, &conversation, "hi").await;
    let events = ws.next_events(3).await;
    assert_consecutive(&events, 3);
    assert_eq!(
        types(&events),
        ["message.created", "message.created", "message.status_updated"]
    );

    // A failed rename emits nothing.
    app.patch_json(
        &conversation_path(&conversation),
        Some(&token),
        &json!({"title": "  "}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    ws.expect_quiet().await;

    app.delete(&conversation_path(&conversation), Some(&token))
        .await
        .expect(StatusCode::NO_CONTENT);
    let deleted = ws.next_event().await;
    assert_eq!(deleted["id"], json!(6));
    assert_eq!(deleted["type"], json!("conversation.deleted"));
    assert_eq!(deleted["data"], json!({"id": conversation["id"]}));
    ws.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_never_sees_another_users_events_or_messages() {
    let app = TestApp::spawn().await;
    let (token_a, _) = app.register("alice@example.com", PASSWORD).await;
    let (token_b, user_b) = app.register("bob@example.com", PASSWORD).await;
    let chat_b = app.create_conversation(&token_b, Some("B's chat")).await;
    let chat_a = app.create_conversation(&token_a, Some("A's secrets")).await;
    let mut ws_a = connect(&app, &token_a).await;
    let mut ws_b = connect(&app, &token_b).await;
    let head_b = ws_b.head();

    let reply_a = ask(&app, &token_a, &chat_a, "alice's question").await;
    rename(&app, &token_a, &chat_a, "A renamed").await;
    let seen_a = ws_a.next_events(4).await;
    assert_eq!(
        types(&seen_a),
        [
            "message.created",
            "message.created",
            "message.status_updated",
            "conversation.updated"
        ]
    );
    let user_message_a = all_messages(&app, &token_a, &chat_a).await[0].clone();

    // B's next event is B's own, with B's next id: none of A's came first.
    let renamed_b = rename(&app, &token_b, &chat_b, "B renamed").await;
    let first_b = ws_b.next_event().await;
    assert_eq!(first_b["id"], json!(head_b + 1), "ids are per user");
    assert_eq!(
        first_b["data"], renamed_b,
        "B's socket got B's event, nothing of A"
    );
    ws_b.expect_quiet().await;
    ws_a.expect_quiet().await;

    // B cannot see or touch A's conversation or messages: 404.
    for path in [conversation_path(&chat_a), messages_path(&chat_a)] {
        app.get(&path, Some(&token_b))
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    app.post_json(&messages_path(&chat_a), Some(&token_b), &json!({"content": "hi"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    for path in [
        cancel_path(&reply_a),
        retry_path(&reply_a),
        retry_path(&user_message_a),
    ] {
        app.post_empty(&path, Some(&token_b))
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    app.delete(&conversation_path(&chat_a), Some(&token_b))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // Replay is per user as well.
    let mut replay_b = connect_since(&app, &token_b, head_b).await;
    assert_eq!(replay_b.hello["user_id"], user_b["id"]);
    assert_eq!(replay_b.head(), head_b + 1);
    let only = replay_b.next_event().await;
    assert_eq!(only, first_b);
    replay_b.expect_quiet().await;
    ws_a.expect_quiet().await;
    ws_b.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_exactly_pong_and_other_inbound_frames_are_ignored() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("ping@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;

    ws.ping_pong().await;
    ws.send_text(r#"{"type":"something-else"}"#).await;
    ws.send_text("not json at all").await;
    ws.send_binary(vec![1, 2, 3]).await;
    ws.send_text(&"x".repeat(4096)).await;
    ws.ping_pong().await;
    ws.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_frame_above_4_kib_closes_the_socket_with_1009() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("big@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;
    let mut other = connect(&app, &token).await;

    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4_200));
    assert!(big.len() > 4096);
    ws.send_text(&big).await;
    assert_eq!(ws.expect_close().await, Ending::Close(Some(1009)));
    // Only that socket is closed.
    other.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_carry_the_head_and_come_with_websocket_pings() {
    let app = TestApp::spawn_with(&["--heartbeat", "200ms"]).await;
    let (token, _) = app.register("beat@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token, None).await;
    let mut ws = connect(&app, &token).await;
    assert_eq!(ws.hello["heartbeat_ms"], json!(200));
    let head = ws.head();

    let beat = ws.next_control("heartbeat").await;
    assert_eq!(beat, json!({"head": head}));

    rename(&app, &token, &conversation, "Beat").await;
    let event = ws.next_event().await;
    assert_eq!(event["id"], json!(head + 1));
    let beat = ws.next_control("heartbeat").await;
    assert_eq!(
        beat,
        json!({"head": head + 1}),
        "the heartbeat names the new head"
    );

    // A client that reads (and so answers pings) stays connected across
    // many intervals, and gets a WebSocket ping with the heartbeats.
    for _ in 0..5 {
        let beat = ws.next_control("heartbeat").await;
        assert_eq!(beat, json!({"head": head + 1}));
    }
    assert!(ws.pings >= 1, "heartbeats come with WebSocket pings");
    ws.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_closes_sockets_with_1012() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("stop@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;
    let closed = tokio::spawn(async move { ws.expect_close_within(Duration::from_secs(15)).await });
    app.stop().await;
    let ending = closed.await.expect("the reader task");
    assert_eq!(ending, Ending::Close(Some(1012)), "service restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_closes_the_socket_with_4001() {
    let app = TestApp::spawn_with(&["--token-ttl", "2s"]).await;
    let (token, _) = app.register("expiry@example.com", PASSWORD).await;
    let exp_ms = jwt_claims(&token)["exp"].as_i64().expect("exp") * 1000;
    let mut bearer = connect(&app, &token).await;
    let minted = ticket(&app, &token).await;
    let mut with_ticket = connect_with(&app, Cred::Ticket(&minted), "").await;

    for ws in [&mut bearer, &mut with_ticket] {
        assert_eq!(
            ws.expect_close_within(Duration::from_secs(6)).await,
            Ending::Close(Some(4001)),
            "the socket closes with 4001 when its token expires"
        );
        let now_ms = unix_ms();
        assert!(
            now_ms >= exp_ms - 100,
            "closed at expiry, not before: now {now_ms}, exp {exp_ms}"
        );
    }

    // The client that was told its token expired cannot reopen with it.
    let now_ms = unix_ms();
    match try_connect(&app, Cred::Bearer(&token), "").await {
        Err(rejected) => rejected.expect_error(StatusCode::UNAUTHORIZED, "unauthorized"),
        Ok(mut ws) => {
            let then = ws.expect_close_within(Duration::from_secs(3)).await;
            panic!(
                "at {now_ms} ms, after exp ({exp_ms} ms) and after its socket was closed with \
                 4001, the expired token still opened a socket (hello {}, then {then:?}); \
                 an expired token must get 401 before the upgrade",
                ws.hello
            );
        }
    }
    app.get("/api/auth/me", Some(&token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(now.as_millis()).expect("fits")
}

async fn change_password(app: &TestApp, token: &str) {
    app.post_json(
        "/api/auth/password",
        Some(token),
        &json!({"current_password": PASSWORD, "new_password": "another long passphrase"}),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_closes_the_users_sockets_with_4003() {
    let app = TestApp::spawn().await;
    let email = "pw-ws@example.com";
    let (token, _) = app.register(email, PASSWORD).await;
    let (other, _) = app.register("bystander@example.com", PASSWORD).await;
    let mut bearer = connect(&app, &token).await;
    let minted = ticket(&app, &token).await;
    let mut with_ticket = connect_with(&app, Cred::Ticket(&minted), "").await;
    let mut bystander = connect(&app, &other).await;

    change_password(&app, &token).await;
    assert_eq!(bearer.expect_close().await, Ending::Close(Some(4003)));
    assert_eq!(with_ticket.expect_close().await, Ending::Close(Some(4003)));
    bystander.ping_pong().await;

    // The old token is revoked for HTTP and for new sockets.
    app.get("/api/auth/me", Some(&token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_refused_401(&app, Cred::Bearer(&token), "", "a token older than the password").await;
    app.post_empty("/api/ws-ticket", Some(&token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let fresh = app.login_token(email, "another long passphrase").await;
    let mut ws = connect(&app, &fresh).await;
    ws.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_account_deletion_close_sockets_with_4003() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("logout-ws@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;
    app.post_empty("/api/auth/logout", Some(&token))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(ws.expect_close().await, Ending::Close(Some(4003)), "logout");

    let (token, _) = app.register("gone-ws@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;
    app.delete_json("/api/auth/me", Some(&token), &json!({"password": PASSWORD}))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        ws.expect_close().await,
        Ending::Close(Some(4003)),
        "account deletion"
    );
    assert_refused_401(&app, Cred::Bearer(&token), "", "the token of a deleted user").await;

    // Its events went with it: the same email starts a new, empty log.
    let (token, _) = app.register("gone-ws@example.com", PASSWORD).await;
    let ws = connect(&app, &token).await;
    assert_eq!(ws.head(), 0, "a new account has no events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_for_two_heartbeats_is_closed() {
    let app = TestApp::spawn_with(&["--heartbeat", "200ms"]).await;
    let (token, _) = app.register("silent@example.com", PASSWORD).await;
    let mut silent = connect(&app, &token).await;
    let mut alive = connect(&app, &token).await;

    // `silent` reads nothing (so it answers no ping) for five intervals;
    // `alive` keeps reading and answering.
    let watch = tokio::time::Instant::now() + Duration::from_millis(1_000);
    while tokio::time::Instant::now() < watch {
        match alive.try_next_frame(Duration::from_millis(100)).await {
            Ok(_) => {}
            Err(ending) => panic!("a client that answers pings must stay open: {ending:?}"),
        }
    }
    match silent.expect_close_within(Duration::from_secs(2)).await {
        Ending::Close(Some(_)) => {}
        other => panic!("the silent socket is closed with a close frame, got {other:?}"),
    }
    alive.ping_pong().await;
}

/// Reads events in a task until `count` have arrived.
fn collect(mut ws: Ws, count: usize) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            events.push(ws.next_event_within(Duration::from_secs(20)).await);
        }
        ws.expect_quiet().await;
        events
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_nobody_back_and_loses_nothing() {
    const POSTS: usize = 250;
    const EVERY: usize = 10;
    let app = TestApp::spawn_with(&["--sync", "normal", "--ws-write-timeout", "60s"]).await;
    let (token_a, _) = app.register("stalled@example.com", PASSWORD).await;
    let (token_b, _) = app.register("reader@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token_a, None).await;
    let chat_b = app.create_conversation(&token_b, None).await;

    // A's first socket is never read while the events flow.
    let mut stalled = connect(&app, &token_a).await;
    let base_a = stalled.head();
    let a_events = 3 * POSTS;
    let b_events = POSTS / EVERY;
    let reader_a = connect(&app, &token_a).await;
    let reader_b = connect(&app, &token_b).await;
    let base_b = reader_b.head();
    let a_reader = collect(reader_a, a_events);
    let b_reader = collect(reader_b, b_events);

    // Big messages, so the stalled socket's buffers fill up.
    let padding = "x".repeat(32_000);
    for n in 0..POSTS {
        let content = format!("{n} {padding}");
        let response = post_message_with(&app, &token_a, &conversation, &content, &[]).await;
        response.expect(StatusCode::OK);
        if n % EVERY == 0 {
            rename(&app, &token_b, &chat_b, &format!("b {n}")).await;
        }
    }

    // Another user, and another socket of the same user, got every event.
    let b_seen = b_reader.await.expect("B's reader");
    assert_consecutive(&b_seen, base_b + 1);
    assert!(b_seen.iter().all(|e| e["type"] == json!("conversation.updated")));
    let a_seen = a_reader.await.expect("A's reader");
    assert_consecutive(&a_seen, base_a + 1);

    // Within the bounds (750 events is below --ws-max-lag 5000, and no
    // write waits 60s), the stalled socket is not closed: once it reads, it
    // gets every event in order, with no gap and no duplicate, although it
    // fell far behind the in-memory buffer.
    let head = base_a + i64::try_from(a_events).expect("fits");
    let half = a_events / 2;
    let mut seen: Vec<Value> = Vec::with_capacity(a_events);
    while seen.len() < half {
        match stalled.try_next_frame(Duration::from_secs(20)).await {
            Ok(Some(frame)) if frame["type"] == json!("heartbeat") => {}
            Ok(Some(frame)) => {
                assert_event(&frame);
                seen.push(frame);
            }
            Ok(None) => panic!(
                "the stalled socket got nothing for 20s after {} events",
                seen.len()
            ),
            Err(ending) => panic!(
                "the stalled socket was closed within the bounds ({ending:?}) after {} events",
                seen.len()
            ),
        }
    }
    assert_consecutive(&seen, base_a + 1);

    // A client that gives up and reconnects with since loses nothing either.
    drop(stalled);
    let last = id_of(seen.last().expect("events"));
    let mut again = connect_since(&app, &token_a, last).await;
    assert_eq!(again.head(), head);
    seen.extend(again.next_events(a_events - half).await);
    again.expect_quiet().await;
    assert_consecutive(&seen, base_a + 1);
    assert_eq!(
        seen, a_seen,
        "the stalled client got exactly what the reading socket got"
    );
}
