//! Message helpers (API.md "Messages"): posting sync and async, listing, and
//! checking the message object.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse, assert_timestamp};

pub const ASYNC: (&str, &str) = ("prefer", "respond-async");

pub fn id_str(value: &Value) -> &str {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an object with a string id: {value}"))
}

pub fn messages_path(conversation: &Value) -> String {
    format!("/api/conversations/{}/messages", id_str(conversation))
}

pub fn cancel_path(message: &Value) -> String {
    format!("/api/messages/{}/cancel", id_str(message))
}

pub fn retry_path(message: &Value) -> String {
    format!("/api/messages/{}/retry", id_str(message))
}

/// `POST .../messages` with extra headers.
pub async fn post_message_with(
    app: &TestApp,
    token: &str,
    conversation: &Value,
    content: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    app.request_with_headers(
        Method::POST,
        &messages_path(conversation),
        Some(token),
        Some(&json!({"content": content})),
        headers,
    )
    .await
}

/// Sync `POST .../messages`, asserting 200; returns the final reply.
pub async fn ask(app: &TestApp, token: &str, conversation: &Value, content: &str) -> Value {
    let response = post_message_with(app, token, conversation, content, &[]).await;
    let reply = response.expect(StatusCode::OK).clone();
    assert_message(&reply);
    reply
}

/// Async `POST .../messages`, asserting 202; returns `(user, assistant)`.
pub async fn ask_async(app: &TestApp, token: &str, conversation: &Value, content: &str) -> (Value, Value) {
    let response = post_message_with(app, token, conversation, content, &[ASYNC]).await;
    let body = response.expect(StatusCode::ACCEPTED).clone();
    let object = body.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["assistant_message", "user_message"], "202 body: {body}");
    let user = body["user_message"].clone();
    let assistant = body["assistant_message"].clone();
    assert_message(&user);
    assert_message(&assistant);
    (user, assistant)
}

/// `GET .../messages<query>` asserting 200; returns the whole page.
pub async fn list(app: &TestApp, token: &str, conversation: &Value, query: &str) -> Value {
    let path = format!("{}{query}", messages_path(conversation));
    let page = app.get(&path, Some(token)).await.expect(StatusCode::OK).clone();
    for item in page["items"].as_array().expect("items is an array") {
        assert_message(item);
    }
    page
}

/// Every message of a conversation (default page), oldest first.
pub async fn all_messages(app: &TestApp, token: &str, conversation: &Value) -> Vec<Value> {
    list(app, token, conversation, "").await["items"]
        .as_array()
        .expect("items")
        .clone()
}

/// Asserts the message object of API.md (fields, types, invariants).
#[track_caller]
pub fn assert_message(value: &Value) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("a message is an object: {value}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "content",
            "conversation_id",
            "created_at",
            "error",
            "id",
            "role",
            "sources",
            "status",
            "updated_at"
        ],
        "message fields: {value}"
    );
    assert!(value["id"].as_str().is_some_and(|s| !s.is_empty()), "{value}");
    assert!(value["content"].is_string(), "content is a string: {value}");
    assert!(value["sources"].is_array(), "sources is an array: {value}");
    assert!(
        value["error"].is_null() || value["error"].is_string(),
        "error is null or a string: {value}"
    );
    let role = value["role"].as_str().unwrap_or_default();
    let status = value["status"].as_str().unwrap_or_default();
    assert!(role == "user" || role == "assistant", "role: {value}");
    assert!(
        ["pending", "streaming", "done", "error", "cancelled"].contains(&status),
        "status: {value}"
    );
    if role == "user" {
        assert_eq!(status, "done", "a user message is always done: {value}");
        assert_eq!(value["sources"], json!([]), "a user message has no sources");
    }
    assert_timestamp(&value["created_at"]);
    assert_timestamp(&value["updated_at"]);
}

/// Asserts a freshly created reply: assistant, pending, empty.
#[track_caller]
pub fn assert_pending_reply(value: &Value, conversation: &Value) {
    assert_eq!(value["role"], json!("assistant"), "{value}");
    assert_eq!(value["status"], json!("pending"), "{value}");
    assert_eq!(value["content"], json!(""), "{value}");
    assert_eq!(value["error"], Value::Null, "{value}");
    assert_eq!(value["sources"], json!([]), "{value}");
    assert_eq!(value["conversation_id"], conversation["id"], "{value}");
}

/// Asserts the user message of a turn.
#[track_caller]
pub fn assert_user_message(value: &Value, conversation: &Value, content: &str) {
    assert_eq!(value["role"], json!("user"), "{value}");
    assert_eq!(value["status"], json!("done"), "{value}");
    assert_eq!(value["content"], json!(content), "{value}");
    assert_eq!(value["error"], Value::Null, "{value}");
    assert_eq!(value["conversation_id"], conversation["id"], "{value}");
}

pub fn conversation_path(conversation: &Value) -> String {
    format!("/api/conversations/{}", id_str(conversation))
}

/// Renames a conversation (asserting 200): one `conversation.updated` event.
pub async fn rename(app: &TestApp, token: &str, conversation: &Value, title: &str) -> Value {
    let response = app
        .patch_json(
            &conversation_path(conversation),
            Some(token),
            &json!({"title": title}),
        )
        .await;
    response.expect(StatusCode::OK).clone()
}
