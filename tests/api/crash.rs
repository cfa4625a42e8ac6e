//! API.md "Messages": a reply left pending by a process that died is never
//! left spinning: the next start marks it `error` / `"interrupted"` and
//! emits `message.status_updated`, which replay shows. Needs the real
//! binary built with `--features test-hooks` (`RAGD_TEST_ANSWERER=hang`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{ASYNC, all_messages, assert_message, assert_pending_reply, messages_path};
use crate::cli::Server;
use crate::doc_helpers::Api;
use crate::helpers::TestApp;
use crate::ws_helpers::{Cred, assert_consecutive, connect_at, connect_since, connect_with, types};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_pending_when_the_process_is_killed_becomes_interrupted() {
    let dir = tempfile::Builder::new()
        .prefix("ragd-crash-")
        .tempdir()
        .expect("a temp data dir");
    let mut server = Server::start(dir.path(), &[("RAGD_TEST_ANSWERER", "hang")]).await;
    let client = reqwest::Client::new();

    let token = Api::at(&server.address).register("crash@example.com").await;

    let response = client
        .post(server.url("/api/conversations"))
        .bearer_auth(&token)
        .json(&json!({"title": "Doomed"}))
        .send()
        .await
        .expect("reach the server");
    assert_eq!(response.status(), StatusCode::CREATED);
    let conversation: Value = response.json().await.expect("a JSON body");
    let mut ws = connect_at(&server.address, Cred::Bearer(&token), "").await;
    let epoch = ws.hello["epoch"].as_str().expect("an epoch").to_owned();
    let base = ws.head();

    let response = client
        .post(server.url(&messages_path(&conversation)))
        .bearer_auth(&token)
        .header(ASYNC.0, ASYNC.1)
        .json(&json!({"content": "will you finish?"}))
        .send()
        .await
        .expect("reach the server");
    assert_eq!(response.status(), StatusCode::ACCEPTED, "respond-async is 202");
    let accepted: Value = response.json().await.expect("a JSON body");
    let pending = accepted["assistant_message"].clone();
    assert_pending_reply(&pending, &conversation);
    let before = ws.next_events(2).await;
    assert_consecutive(&before, base + 1);
    assert_eq!(
        before[1]["data"], pending,
        "the reply is pending when the process dies"
    );

    server.kill().await;
    drop(ws);

    // The next start (in-process, the default answerer) sweeps it.
    let app = TestApp::spawn_in(dir, Vec::new()).await;
    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], before[0]["data"], "the user message is intact");
    let reply = &items[1];
    assert_message(reply);
    assert_eq!(reply["id"], pending["id"]);
    assert_eq!(reply["status"], json!("error"), "never left spinning: {reply}");
    assert_eq!(reply["error"], json!("interrupted"), "{reply}");
    assert_eq!(reply["content"], json!(""), "partial content (none) is kept");

    // A client that reconnects with what it saw before gets the update.
    let mut back = connect_with(
        &app,
        Cred::Bearer(&token),
        &format!("since={}&epoch={epoch}", base + 2),
    )
    .await;
    assert_eq!(back.hello["epoch"], json!(epoch), "a restart keeps the epoch");
    assert_eq!(back.head(), base + 3);
    let swept = back.next_event().await;
    assert_eq!(swept["id"], json!(base + 3));
    assert_eq!(swept["type"], json!("message.status_updated"));
    assert_eq!(&swept["data"], reply, "the event carries the interrupted reply");
    back.expect_quiet().await;

    let mut all = connect_since(&app, &token, 0).await;
    let events = all.next_events(usize::try_from(base + 3).expect("fits")).await;
    assert_consecutive(&events, 1);
    let tail = &events[events.len() - 3..];
    assert_eq!(
        types(tail),
        ["message.created", "message.created", "message.status_updated"]
    );
    assert_eq!(tail[..2], before[..]);
    assert_eq!(tail[2], swept);
    all.expect_quiet().await;

    // The sweep ran once: a second restart changes nothing.
    let app = app.restart().await;
    let again = all_messages(&app, &token, &conversation).await;
    assert_eq!(&again[1], reply);
    let mut ws = connect_since(&app, &token, base + 3).await;
    assert_eq!(ws.head(), base + 3);
    ws.expect_quiet().await;
}
