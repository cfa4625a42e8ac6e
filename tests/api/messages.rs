//! API.md "Messages": the chat turn (sync and `Prefer: respond-async`), the
//! events it emits, errors, idempotency, cancel, retry, paging, validation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::answerers::TestAnswerer;
use crate::chat::{
    ASYNC, all_messages, ask, ask_async, assert_message, assert_pending_reply, assert_user_message,
    cancel_path, conversation_path, id_str, list, messages_path, post_message_with, retry_path,
};
use crate::helpers::{PASSWORD, TestApp, next_millisecond};
use crate::ws_helpers::{Ws, assert_consecutive, connect, id_of, types};

/// A user with a conversation and a socket opened after it; returns the
/// socket's head (the id before the next event).
async fn user_with_chat(app: &TestApp, email: &str) -> (String, Ws, Value, i64) {
    let (token, _) = app.register(email, PASSWORD).await;
    let conversation = app.create_conversation(&token, Some("Chat")).await;
    let ws = connect(app, &token).await;
    let head = ws.head();
    (token, ws, conversation, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_emits_three_events_in_order_and_answers_with_the_final_reply() {
    let app = TestApp::spawn().await;
    let (token, user) = app.register("seed@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token, Some("Seed")).await;
    let mut ws = connect(&app, &token).await;
    assert_eq!(ws.hello["user_id"], user["id"], "hello names the user");
    let base = ws.head();
    next_millisecond().await;

    let question = "What do my documents say about the budget?";
    let reply = ask(&app, &token, &conversation, question).await;

    let events = ws.next_events(3).await;
    assert_consecutive(&events, base + 1);
    assert_eq!(
        types(&events),
        ["message.created", "message.created", "message.status_updated"],
        "user message, pending reply, finished reply: {events:?}"
    );
    let user_message = &events[0]["data"];
    assert_message(user_message);
    assert_user_message(user_message, &conversation, question);
    let pending = &events[1]["data"];
    assert_message(pending);
    assert_pending_reply(pending, &conversation);
    let done = &events[2]["data"];
    assert_message(done);
    assert_eq!(done["id"], pending["id"], "the status update is about the reply");
    assert_eq!(done["status"], json!("done"), "{done}");
    assert_eq!(done["error"], Value::Null, "{done}");
    assert_eq!(
        done["sources"],
        json!([]),
        "no documents: the extractive answer cites nothing"
    );
    assert!(
        !done["content"].as_str().unwrap_or_default().trim().is_empty(),
        "with no documents the answer says nothing relevant was found: {done}"
    );
    assert_eq!(
        &reply, done,
        "the HTTP response equals the final message of the last event"
    );
    assert!(
        events[0]["ts"].as_str() <= events[2]["ts"].as_str(),
        "event timestamps follow the ids: {events:?}"
    );
    ws.expect_quiet().await;

    // A reload shows the same turn.
    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items, vec![user_message.clone(), reply.clone()]);

    // The new message moved the conversation's updated_at (without an event).
    let now = app
        .get(&conversation_path(&conversation), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert!(
        now["updated_at"].as_str() >= user_message["created_at"].as_str()
            && now["updated_at"] != conversation["updated_at"],
        "updated_at moves when a message is added: before {conversation}, after {now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_reply_is_pending_on_reload_until_the_answer_arrives() {
    let answerer = TestAnswerer::gated();
    let source = json!({
        "document_id": "doc-1",
        "filename": "report.txt",
        "chunk_id": "chunk-7",
        "snippet": "The report is in the blue folder.",
        "score": 0.75
    });
    answerer.set_sources(vec![ragd::rag::Source {
        document_id: "doc-1".into(),
        filename: "report.txt".into(),
        chunk_id: "chunk-7".into(),
        snippet: "The report is in the blue folder.".into(),
        score: 0.75,
    }]);
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "reload@example.com").await;

    let question = "Where is the report?";
    let (user_message, pending) = ask_async(&app, &token, &conversation, question).await;
    assert_user_message(&user_message, &conversation, question);
    assert_pending_reply(&pending, &conversation);

    let events = ws.next_events(2).await;
    assert_eq!(types(&events), ["message.created", "message.created"]);
    assert_eq!(events[0]["data"], user_message);
    assert_eq!(events[1]["data"], pending);
    answerer.wait_for_calls(1).await;

    // A client that reloads the page now shows the spinner.
    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], user_message);
    assert_eq!(items[1]["id"], pending["id"]);
    assert_eq!(items[1]["status"], json!("pending"), "{}", items[1]);
    assert_eq!(items[1]["content"], json!(""), "{}", items[1]);
    ws.expect_quiet().await;

    answerer.release(1);
    let finished = ws.next_event().await;
    assert_eq!(finished["type"], json!("message.status_updated"));
    assert_eq!(id_of(&finished), id_of(&events[1]) + 1);
    let done = &finished["data"];
    assert_eq!(done["id"], pending["id"]);
    assert_eq!(done["status"], json!("done"), "{done}");
    assert_eq!(done["content"], json!(TestAnswerer::content(1, question)));
    assert_eq!(
        done["sources"],
        json!([source]),
        "the answer's sources are stored"
    );
    assert_eq!(done["error"], Value::Null);

    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items, vec![user_message, done.clone()], "after the answer: done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_answerer_stores_the_error_and_the_event_says_so() {
    let answerer = TestAnswerer::failing("model exploded");
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, base) = user_with_chat(&app, "errors@example.com").await;

    let question = "Will this work?";
    let reply = ask(&app, &token, &conversation, question).await;
    assert_eq!(reply["role"], json!("assistant"));
    assert_eq!(reply["status"], json!("error"), "{reply}");
    assert_eq!(
        reply["error"],
        json!("model exploded"),
        "the reply carries the error text"
    );

    let events = ws.next_events(3).await;
    assert_consecutive(&events, base + 1);
    assert_eq!(
        types(&events),
        ["message.created", "message.created", "message.status_updated"]
    );
    assert_eq!(events[2]["data"]["status"], json!("error"), "{}", events[2]);
    assert_eq!(events[2]["data"]["error"], json!("model exploded"));
    assert_eq!(events[2]["data"], reply, "the event carries the stored reply");

    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[1], reply, "a reload shows the error");

    // Once the model works again, retry regenerates the same reply.
    answerer.fail_with(None);
    let retried = app
        .post_empty(&retry_path(&reply), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_message(&retried);
    assert_eq!(retried["id"], reply["id"]);
    assert_eq!(retried["status"], json!("done"), "{retried}");
    assert_eq!(retried["error"], Value::Null);
    assert_eq!(retried["content"], json!(TestAnswerer::content(2, question)));
    let events = ws.next_events(2).await;
    assert_consecutive(&events, base + 4);
    assert_eq!(events[0]["type"], json!("message.status_updated"));
    assert_eq!(events[0]["data"]["status"], json!("pending"));
    assert_eq!(events[0]["data"]["error"], Value::Null, "retry clears the error");
    assert_eq!(events[1]["data"], retried);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_post_with_the_same_idempotency_key_creates_nothing_new() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("idem@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token, None).await;
    let other = app.create_conversation(&token, Some("Other")).await;
    let mut ws = connect(&app, &token).await;
    let key = ("idempotency-key", "turn-0001");

    let first = post_message_with(&app, &token, &conversation, "hello", &[key]).await;
    let reply = first.expect(StatusCode::OK).clone();
    assert_message(&reply);
    let events = ws.next_events(3).await;
    assert_consecutive(&events, ws.head() + 1);

    let again = post_message_with(&app, &token, &conversation, "hello", &[key]).await;
    assert_eq!(
        again.expect(StatusCode::OK),
        &reply,
        "a repeat answers the same reply"
    );
    ws.expect_quiet().await;
    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items.len(), 2, "one user message and one reply: {items:?}");
    assert_eq!(items[1], reply);

    // The same key with another body, or on another path: 409.
    post_message_with(&app, &token, &conversation, "hello again", &[key])
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    post_message_with(&app, &token, &other, "hello", &[key])
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");

    // Keys outside 1..=128 characters: 400; 128 is fine.
    let long = "k".repeat(129);
    post_message_with(&app, &token, &conversation, "x", &[("idempotency-key", &long)])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    post_message_with(&app, &token, &conversation, "x", &[("idempotency-key", "")])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    ws.expect_quiet().await;
    assert_eq!(all_messages(&app, &token, &conversation).await.len(), 2);
    assert_eq!(all_messages(&app, &token, &other).await.len(), 0);

    let longest = "k".repeat(128);
    post_message_with(&app, &token, &conversation, "x", &[("idempotency-key", &longest)])
        .await
        .expect(StatusCode::OK);
    assert_eq!(ws.next_events(3).await.len(), 3);
    assert_eq!(all_messages(&app, &token, &conversation).await.len(), 4);

    // Keys belong to a user: another user's identical key is independent.
    let (token_b, _) = app.register("idem-b@example.com", PASSWORD).await;
    let chat_b = app.create_conversation(&token_b, None).await;
    let reply_b = post_message_with(&app, &token_b, &chat_b, "hello", &[key]).await;
    let reply_b = reply_b.expect(StatusCode::OK);
    assert_ne!(reply_b["id"], reply["id"]);
    assert_eq!(all_messages(&app, &token_b, &chat_b).await.len(), 2);
    ws.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_repeats_of_async_and_waiting_sync_requests() {
    let answerer = TestAnswerer::gated();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "idem-async@example.com").await;

    // Async: a repeat answers 202 with the current state of the same turn.
    let key = ("idempotency-key", "async-1");
    let first = post_message_with(&app, &token, &conversation, "q1", &[ASYNC, key]).await;
    let first = first.expect(StatusCode::ACCEPTED).clone();
    let events = ws.next_events(2).await;
    answerer.wait_for_calls(1).await;
    let again = post_message_with(&app, &token, &conversation, "q1", &[ASYNC, key]).await;
    assert_eq!(
        again.expect(StatusCode::ACCEPTED),
        &first,
        "same turn, still pending"
    );
    answerer.release(1);
    let finished = ws.next_event().await;
    assert_eq!(finished["type"], json!("message.status_updated"));
    assert_eq!(finished["data"]["id"], events[1]["data"]["id"]);
    let third = post_message_with(&app, &token, &conversation, "q1", &[ASYNC, key]).await;
    let third = third.expect(StatusCode::ACCEPTED);
    assert_eq!(third["user_message"], first["user_message"]);
    assert_eq!(
        third["assistant_message"], finished["data"],
        "the repeat shows the current state of the reply"
    );
    assert_eq!(answerer.calls(), 1, "a repeat never generates again");

    // Sync: a repeat while the original waits returns the same final reply.
    let key = ("idempotency-key", "sync-1");
    let path = messages_path(&conversation);
    let body = json!({"content": "q2"});
    let original = app.spawn_request(Method::POST, &path, Some(&token), Some(&body), &[key]);
    let created = ws.next_events(2).await;
    assert_eq!(types(&created), ["message.created", "message.created"]);
    answerer.wait_for_calls(2).await;
    let repeat = app.spawn_request(Method::POST, &path, Some(&token), Some(&body), &[key]);
    answerer.release(1);
    let original = original.await.expect("the request task");
    let repeat = repeat.await.expect("the request task");
    let reply = original.expect(StatusCode::OK).clone();
    assert_eq!(reply["status"], json!("done"), "{reply}");
    assert_eq!(
        repeat.expect(StatusCode::OK),
        &reply,
        "the repeat waits for the same reply"
    );
    let finished = ws.next_event().await;
    assert_eq!(finished["data"], reply);
    ws.expect_quiet().await;
    assert_eq!(answerer.calls(), 2);
    assert_eq!(all_messages(&app, &token, &conversation).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pending_reply_keeps_it_cancelled() {
    let answerer = TestAnswerer::gated();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "cancel@example.com").await;

    let (user_message, pending) = ask_async(&app, &token, &conversation, "slow one").await;
    ws.next_events(2).await;
    answerer.wait_for_calls(1).await;

    let cancelled = app
        .post_empty(&cancel_path(&pending), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_message(&cancelled);
    assert_eq!(cancelled["id"], pending["id"]);
    assert_eq!(cancelled["status"], json!("cancelled"), "{cancelled}");
    assert_eq!(
        cancelled["content"],
        json!(""),
        "the partial content (none) is kept"
    );
    let event = ws.next_event().await;
    assert_eq!(event["type"], json!("message.status_updated"));
    assert_eq!(event["data"], cancelled);

    // Only pending/streaming replies can be cancelled.
    app.post_empty(&cancel_path(&pending), Some(&token))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    app.post_empty(&cancel_path(&user_message), Some(&token))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");

    // A generation that could finish now never overwrites the cancelled reply.
    answerer.release(1);
    ws.expect_quiet().await;
    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items, vec![user_message, cancelled]);

    // A done reply cannot be cancelled.
    answerer.release(1);
    let done = ask(&app, &token, &conversation, "quick one").await;
    assert_eq!(done["status"], json!("done"), "{done}");
    app.post_empty(&cancel_path(&done), Some(&token))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");

    // Unknown or malformed ids: 404.
    let unknown = format!("/api/messages/{}/cancel", uuid::Uuid::now_v7());
    app.post_empty(&unknown, Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.post_empty("/api/messages/not-an-id/cancel", Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_whose_reply_is_cancelled_answers_cancelled() {
    let answerer = TestAnswerer::gated();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "cancel-sync@example.com").await;

    let waiting = app.spawn_request(
        Method::POST,
        &messages_path(&conversation),
        Some(&token),
        Some(&json!({"content": "take your time"})),
        &[],
    );
    let created = ws.next_events(2).await;
    let pending = created[1]["data"].clone();
    assert_pending_reply(&pending, &conversation);
    answerer.wait_for_calls(1).await;

    let cancelled = app
        .post_empty(&cancel_path(&pending), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(cancelled["status"], json!("cancelled"));
    let response = waiting.await.expect("the request task");
    assert_eq!(
        response.expect(StatusCode::OK),
        &cancelled,
        "the waiting request answers with the cancelled reply"
    );
    let event = ws.next_event().await;
    assert_eq!(event["data"], cancelled);
    answerer.release(1);
    ws.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_conversation_while_a_sync_request_waits_is_404() {
    let answerer = TestAnswerer::gated();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "delete-wait@example.com").await;

    let waiting = app.spawn_request(
        Method::POST,
        &messages_path(&conversation),
        Some(&token),
        Some(&json!({"content": "are you there?"})),
        &[],
    );
    ws.next_events(2).await;
    answerer.wait_for_calls(1).await;
    app.delete(&conversation_path(&conversation), Some(&token))
        .await
        .expect(StatusCode::NO_CONTENT);
    let response = waiting.await.expect("the request task");
    response.expect_error(StatusCode::NOT_FOUND, "not_found");
    app.get(&messages_path(&conversation), Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // The socket learns of the deletion; the generation was cancelled with
    // it: letting the answerer finish now stores and sends nothing more.
    loop {
        let event = ws.next_event().await;
        if event["type"] == json!("conversation.deleted") {
            assert_eq!(event["data"], json!({"id": conversation["id"]}));
            break;
        }
    }
    answerer.release(1);
    ws.expect_quiet().await;
    let list = app.get("/api/conversations", Some(&token)).await;
    assert_eq!(list.expect(StatusCode::OK)["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_request_still_gets_the_reply_stored() {
    let answerer = TestAnswerer::gated();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "gone@example.com").await;

    let question = "answer even if I leave";
    let waiting = app.spawn_request(
        Method::POST,
        &messages_path(&conversation),
        Some(&token),
        Some(&json!({"content": question})),
        &[],
    );
    let created = ws.next_events(2).await;
    let pending = created[1]["data"].clone();
    answerer.wait_for_calls(1).await;
    // The client goes away: its connection is dropped mid-request.
    waiting.abort();
    assert!(waiting.await.is_err(), "the request was aborted");

    answerer.release(1);
    let finished = ws.next_event().await;
    assert_eq!(finished["type"], json!("message.status_updated"));
    assert_eq!(finished["data"]["id"], pending["id"]);
    assert_eq!(finished["data"]["status"], json!("done"), "{finished}");
    assert_eq!(
        finished["data"]["content"],
        json!(TestAnswerer::content(1, question))
    );
    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items[1], finished["data"], "the reply is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_regenerates_a_done_reply() {
    let answerer = TestAnswerer::instant();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, base) = user_with_chat(&app, "retry@example.com").await;

    let question = "Tell me again";
    let reply = ask(&app, &token, &conversation, question).await;
    assert_eq!(reply["content"], json!(TestAnswerer::content(1, question)));
    let events = ws.next_events(3).await;
    let user_message = events[0]["data"].clone();

    let retried = app
        .post_empty(&retry_path(&reply), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_message(&retried);
    assert_eq!(retried["id"], reply["id"], "retry regenerates the same message");
    assert_eq!(retried["status"], json!("done"));
    assert_eq!(retried["content"], json!(TestAnswerer::content(2, question)));
    assert_eq!(retried["created_at"], reply["created_at"]);

    let events = ws.next_events(2).await;
    assert_consecutive(&events, base + 4);
    assert_eq!(
        types(&events),
        ["message.status_updated", "message.status_updated"]
    );
    let back = &events[0]["data"];
    assert_eq!(back["id"], reply["id"]);
    assert_eq!(back["status"], json!("pending"), "back to pending first: {back}");
    assert_eq!(back["content"], json!(""), "{back}");
    assert_eq!(back["error"], Value::Null);
    assert_eq!(back["sources"], json!([]));
    assert_eq!(events[1]["data"], retried);
    assert_eq!(
        all_messages(&app, &token, &conversation).await,
        vec![user_message.clone(), retried.clone()],
        "retry adds no message"
    );

    // Async retry: 202 {"assistant_message"} pending, the result on the socket.
    let response = app
        .request_with_headers(Method::POST, &retry_path(&reply), Some(&token), None, &[ASYNC])
        .await;
    let body = response.expect(StatusCode::ACCEPTED).clone();
    let keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["assistant_message"], "{body}");
    assert_eq!(body["assistant_message"]["id"], reply["id"]);
    assert_eq!(body["assistant_message"]["status"], json!("pending"), "{body}");
    let events = ws.next_events(2).await;
    assert_consecutive(&events, base + 6);
    assert_eq!(events[0]["data"]["status"], json!("pending"));
    assert_eq!(events[1]["data"]["status"], json!("done"));
    assert_eq!(
        events[1]["data"]["content"],
        json!(TestAnswerer::content(3, question))
    );

    // A user message cannot be retried.
    app.post_empty(&retry_path(&user_message), Some(&token))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    let unknown = format!("/api/messages/{}/retry", uuid::Uuid::now_v7());
    app.post_empty(&unknown, Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    ws.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_while_the_reply_is_running_is_409() {
    let answerer = TestAnswerer::gated();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "retry-409@example.com").await;

    let (_, pending) = ask_async(&app, &token, &conversation, "busy?").await;
    ws.next_events(2).await;
    answerer.wait_for_calls(1).await;
    app.post_empty(&retry_path(&pending), Some(&token))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    ws.expect_quiet().await;

    answerer.release(1);
    let done = ws.next_event().await;
    assert_eq!(done["data"]["status"], json!("done"));
    // Once it finished, retry works.
    answerer.release(1);
    let retried = app
        .post_empty(&retry_path(&pending), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(retried["status"], json!("done"));
    assert_eq!(answerer.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_page_back_with_before_and_forward_with_after() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("pages@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token, None).await;
    for n in 1..=5 {
        ask(&app, &token, &conversation, &format!("question {n}")).await;
    }
    let all = all_messages(&app, &token, &conversation).await;
    assert_eq!(all.len(), 10);
    for (i, pair) in all.chunks(2).enumerate() {
        assert_eq!(pair[0]["role"], json!("user"), "oldest first, user then reply");
        assert_eq!(pair[0]["content"], json!(format!("question {}", i + 1)));
        assert_eq!(pair[1]["role"], json!("assistant"));
    }
    let full = list(&app, &token, &conversation, "").await;
    assert_eq!(full["next_before"], Value::Null, "nothing older: {full}");
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| id_str(m).to_owned())
            .collect()
    };
    let all_ids: Vec<String> = all.iter().map(|m| id_str(m).to_owned()).collect();

    // The newest page first, oldest first within it, then back.
    let newest = list(&app, &token, &conversation, "?limit=4").await;
    assert_eq!(ids(&newest), all_ids[6..10], "the newest 4, oldest first");
    let before = newest["next_before"].as_str().expect("a next_before cursor");
    let middle = list(&app, &token, &conversation, &format!("?limit=4&before={before}")).await;
    assert_eq!(ids(&middle), all_ids[2..6]);
    let before = middle["next_before"].as_str().expect("a next_before cursor");
    let oldest = list(&app, &token, &conversation, &format!("?limit=4&before={before}")).await;
    assert_eq!(ids(&oldest), all_ids[0..2]);
    assert_eq!(oldest["next_before"], Value::Null, "nothing older: {oldest}");

    // Forward from a page with `after`.
    let after = middle["next_after"].as_str().expect("a next_after cursor");
    let forward = list(&app, &token, &conversation, &format!("?limit=4&after={after}")).await;
    assert_eq!(ids(&forward), all_ids[6..10], "the 4 after the middle page");
    let after = oldest["next_after"].as_str().expect("a next_after cursor");
    let forward = list(&app, &token, &conversation, &format!("?limit=3&after={after}")).await;
    assert_eq!(ids(&forward), all_ids[2..5]);

    // Catching up: nothing newer, then the new turn.
    let tail = newest["next_after"]
        .as_str()
        .expect("every page carries next_after")
        .to_owned();
    let nothing = list(&app, &token, &conversation, &format!("?after={tail}")).await;
    assert_eq!(nothing["items"], json!([]), "nothing newer yet");
    let reply = ask(&app, &token, &conversation, "question 6").await;
    let newer = list(&app, &token, &conversation, &format!("?after={tail}")).await;
    let newer_items = newer["items"].as_array().expect("items");
    assert_eq!(newer_items.len(), 2, "{newer}");
    assert_eq!(newer_items[0]["content"], json!("question 6"));
    assert_eq!(newer_items[1], reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_list_queries_are_400_or_422() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("list-errors@example.com", PASSWORD).await;
    let conversation = app.create_conversation(&token, None).await;
    ask(&app, &token, &conversation, "one").await;
    let page = list(&app, &token, &conversation, "?limit=1").await;
    let before = page["next_before"].as_str().expect("a cursor").to_owned();
    let after = page["next_after"].as_str().expect("a cursor").to_owned();
    let path = messages_path(&conversation);

    for (query, status, code) in [
        (
            format!("?before={before}&after={after}"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("?before=zzzz".to_owned(), StatusCode::BAD_REQUEST, "bad_request"),
        (
            "?after=not-a-cursor".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("?limit=abc".to_owned(), StatusCode::BAD_REQUEST, "bad_request"),
        (
            "?limit=0".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "?limit=201".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ] {
        let response = app.get(&format!("{path}{query}"), Some(&token)).await;
        assert_eq!(response.status, status, "{query}: {}", response.text);
        response.expect_error(status, code);
    }
    let max = list(&app, &token, &conversation, "?limit=200").await;
    assert_eq!(max["items"].as_array().map(Vec::len), Some(2));

    // Unknown or malformed conversation ids: 404.
    let unknown = format!("/api/conversations/{}/messages", uuid::Uuid::now_v7());
    app.get(&unknown, Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.post_json(&unknown, Some(&token), &json!({"content": "hi"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/api/conversations/nope/messages", Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.get(&path, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_content_is_validated_and_nothing_is_stored_on_error() {
    let app = TestApp::spawn().await;
    let (token, mut ws, conversation, _) = user_with_chat(&app, "content@example.com").await;
    let path = messages_path(&conversation);

    for (content, what) in [
        (String::new(), "empty"),
        ("  \n\t  ".to_owned(), "whitespace only"),
        ("a".repeat(32_769), "32769 characters"),
    ] {
        let response = app
            .post_json(&path, Some(&token), &json!({"content": content}))
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            response.text
        );
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    app.post_json(&path, Some(&token), &json!({}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.post_json(&path, Some(&token), &json!({"content": 5}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.send_raw(Method::POST, &path, Some(&token), Some("text/plain"), "hello")
        .await
        .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    ws.expect_quiet().await;
    assert_eq!(
        all_messages(&app, &token, &conversation).await,
        Vec::<Value>::new(),
        "a refused message stores nothing"
    );

    // 32768 characters (not bytes) is the limit.
    let longest = "é".repeat(32_768);
    ask(&app, &token, &conversation, &longest).await;
    let items = all_messages(&app, &token, &conversation).await;
    assert_eq!(items[0]["content"], json!(longest), "stored exactly");
    let events = ws.next_events(3).await;
    assert_eq!(events[0]["data"]["content"], json!(longest));
}
