//! API.md "Conversations": CRUD, ordering, paging and per-user isolation.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_timestamp, next_millisecond};

const LIST: &str = "/api/conversations";

fn path_of(conversation: &Value) -> String {
    format!(
        "/api/conversations/{}",
        conversation["id"].as_str().expect("a conversation id")
    )
}

#[track_caller]
fn assert_conversation(value: &Value) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("a conversation is an object: {value}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "id", "title", "updated_at"],
        "conversation fields: {value}"
    );
    assert!(!value["id"].as_str().expect("id is a string").is_empty());
    assert_timestamp(&value["created_at"]);
    assert_timestamp(&value["updated_at"]);
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn user(app: &TestApp, email: &str) -> String {
    app.register(email, PASSWORD).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_and_default_title() {
    let app = TestApp::spawn().await;
    let token = user(&app, "ann@example.com").await;

    let created = app.post_json(LIST, Some(&token), &json!({})).await;
    let conversation = created.expect(StatusCode::CREATED).clone();
    assert_conversation(&conversation);
    assert_eq!(conversation["title"], json!("New chat"));
    assert_eq!(
        conversation["created_at"], conversation["updated_at"],
        "a new conversation was never updated"
    );

    let fetched = app.get(&path_of(&conversation), Some(&token)).await;
    assert_eq!(fetched.expect(StatusCode::OK), &conversation);

    let titled = app.create_conversation(&token, Some("  Trip plans \n")).await;
    assert_conversation(&titled);
    assert_eq!(titled["title"], json!("Trip plans"), "the title is trimmed");
    assert_ne!(titled["id"], conversation["id"]);
    assert_eq!(
        app.get(&path_of(&titled), Some(&token))
            .await
            .expect(StatusCode::OK),
        &titled
    );

    // Without a token: 401.
    app.post_json(LIST, None, &json!({}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get(&path_of(&titled), None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn title_is_1_to_200_characters_after_trimming() {
    let app = TestApp::spawn().await;
    let token = user(&app, "ben@example.com").await;

    let ascii_201 = "a".repeat(201);
    let accents_201 = "é".repeat(201);
    for title in ["", "   ", "\n\t ", ascii_201.as_str(), accents_201.as_str()] {
        let response = app.post_json(LIST, Some(&token), &json!({"title": title})).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "title of {} chars: {}",
            title.chars().count(),
            response.text
        );
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    // Wrong type: 400.
    app.post_json(LIST, Some(&token), &json!({"title": 42}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // Nothing was created by the rejected requests.
    assert_eq!(
        app.get(LIST, Some(&token)).await.expect(StatusCode::OK)["items"],
        json!([])
    );

    // 200 characters (not bytes) is fine, also with surrounding spaces.
    let ascii_200 = "b".repeat(200);
    let accents_200 = "é".repeat(200);
    assert_eq!(
        app.create_conversation(&token, Some(&ascii_200)).await["title"],
        json!(ascii_200)
    );
    assert_eq!(
        app.create_conversation(&token, Some(&accents_200)).await["title"],
        json!(accents_200)
    );
    let padded = format!("  {ascii_200}  ");
    assert_eq!(
        app.create_conversation(&token, Some(&padded)).await["title"],
        json!(ascii_200)
    );
    assert_eq!(
        app.create_conversation(&token, Some("x")).await["title"],
        json!("x")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_most_recently_updated_first_and_rename_moves_a_conversation_up() {
    let app = TestApp::spawn().await;
    let token = user(&app, "cleo@example.com").await;

    let empty = app.get(LIST, Some(&token)).await;
    assert_eq!(
        empty.expect(StatusCode::OK),
        &json!({"items": [], "next_before": null})
    );

    let a = app.create_conversation(&token, Some("a")).await;
    next_millisecond().await;
    let b = app.create_conversation(&token, Some("b")).await;
    next_millisecond().await;
    let c = app.create_conversation(&token, Some("c")).await;

    let list = app.get(LIST, Some(&token)).await.expect(StatusCode::OK).clone();
    assert_eq!(list["items"], json!([c, b, a]), "newest first");
    assert_eq!(list["next_before"], Value::Null);

    next_millisecond().await;
    let renamed = app
        .patch_json(&path_of(&a), Some(&token), &json!({"title": "  a, renamed  "}))
        .await;
    let renamed = renamed.expect(StatusCode::OK).clone();
    assert_conversation(&renamed);
    assert_eq!(renamed["id"], a["id"]);
    assert_eq!(renamed["title"], json!("a, renamed"));
    assert_eq!(
        renamed["created_at"], a["created_at"],
        "created_at does not change"
    );
    assert!(
        renamed["updated_at"].as_str() > a["updated_at"].as_str(),
        "updated_at moves on rename: {} -> {}",
        a["updated_at"],
        renamed["updated_at"]
    );
    assert!(renamed["updated_at"].as_str() > c["updated_at"].as_str());

    assert_eq!(
        app.get(&path_of(&a), Some(&token)).await.expect(StatusCode::OK),
        &renamed
    );
    let list = app.get(LIST, Some(&token)).await.expect(StatusCode::OK).clone();
    assert_eq!(
        list["items"],
        json!([renamed, c, b]),
        "the renamed conversation comes first"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_validates_the_title() {
    let app = TestApp::spawn().await;
    let token = user(&app, "dora@example.com").await;
    let conversation = app.create_conversation(&token, Some("keep me")).await;
    let path = path_of(&conversation);

    let too_long = "z".repeat(201);
    for body in [
        json!({"title": null}),
        json!({"title": ""}),
        json!({"title": "  \t "}),
        json!({"title": too_long}),
    ] {
        let response = app.patch_json(&path, Some(&token), &body).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "body {body}: {}",
            response.text
        );
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    app.patch_json(&path, Some(&token), &json!({}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.patch_json(&path, Some(&token), &json!({"title": 7}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    app.patch_json(&path, None, &json!({"title": "x"}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Nothing changed.
    assert_eq!(
        app.get(&path, Some(&token)).await.expect(StatusCode::OK),
        &conversation
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_204_then_404() {
    let app = TestApp::spawn().await;
    let token = user(&app, "eve@example.com").await;
    let gone = app.create_conversation(&token, Some("gone")).await;
    let kept = app.create_conversation(&token, Some("kept")).await;
    let path = path_of(&gone);

    let deleted = app.delete(&path, Some(&token)).await;
    deleted.expect(StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty(), "204 has no body: {:?}", deleted.text);

    app.get(&path, Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.delete(&path, Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.patch_json(&path, Some(&token), &json!({"title": "back"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    let list = app.get(LIST, Some(&token)).await.expect(StatusCode::OK).clone();
    assert_eq!(list["items"], json!([kept]));
    app.delete(&path_of(&kept), None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_every_conversation_once() {
    let app = TestApp::spawn().await;
    let token = user(&app, "finn@example.com").await;
    for i in 0..5 {
        app.create_conversation(&token, Some(&format!("chat {i}"))).await;
    }
    let all = app.get(LIST, Some(&token)).await.expect(StatusCode::OK).clone();
    let all_ids = ids(&all["items"]);
    assert_eq!(all_ids.len(), 5);
    assert_eq!(all["next_before"], Value::Null);

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..10 {
        let path = match &before {
            Some(cursor) => format!("{LIST}?limit=2&before={cursor}"),
            None => format!("{LIST}?limit=2"),
        };
        let page = app.get(&path, Some(&token)).await.expect(StatusCode::OK).clone();
        let page_ids = ids(&page["items"]);
        pages.push(page_ids.len());
        seen.extend(page_ids);
        match &page["next_before"] {
            Value::Null => break,
            Value::String(cursor) => before = Some(cursor.clone()),
            other => panic!("next_before is a string or null, got {other}"),
        }
    }
    assert_eq!(
        pages,
        [2, 2, 1],
        "pages of at most 2, ending with next_before null"
    );
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates across pages: {seen:?}");
    assert_eq!(seen, all_ids, "paging yields the same order as one big page");

    // A page that holds exactly what is left has nothing after it.
    let exact = app
        .get(&format!("{LIST}?limit=5"), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(ids(&exact["items"]), all_ids);
    assert_eq!(
        exact["next_before"],
        Value::Null,
        "nothing more after the last item"
    );
    let bounds = app
        .get(&format!("{LIST}?limit=1"), Some(&token))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(ids(&bounds["items"]).len(), 1);
    app.get(&format!("{LIST}?limit=200"), Some(&token))
        .await
        .expect(StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_list_parameters_are_400_or_422() {
    let app = TestApp::spawn().await;
    let token = user(&app, "gus@example.com").await;
    app.create_conversation(&token, None).await;

    for query in ["limit=0", "limit=201"] {
        let response = app.get(&format!("{LIST}?{query}"), Some(&token)).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            response.text
        );
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let cursor_of_junk = crate::helpers::b64url(b"hello");
    let bad_queries = [
        "limit=abc".to_owned(),
        "limit=1.5".to_owned(),
        "limit=99999999999999999999".to_owned(),
        "before=garbage!!".to_owned(),
        "before=%00%01".to_owned(),
        format!("before={cursor_of_junk}"),
    ];
    for query in &bad_queries {
        let response = app.get(&format!("{LIST}?{query}"), Some(&token)).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            response.text
        );
        response.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_conversation_is_404_and_invisible() {
    let app = TestApp::spawn().await;
    let alice = user(&app, "alice@example.com").await;
    let bob = user(&app, "bob@example.com").await;
    let secret = app.create_conversation(&alice, Some("alice only")).await;
    let path = path_of(&secret);

    app.get(&path, Some(&bob))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.patch_json(&path, Some(&bob), &json!({"title": "mine now"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.delete(&path, Some(&bob))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    let bobs = app.get(LIST, Some(&bob)).await.expect(StatusCode::OK).clone();
    assert_eq!(bobs["items"], json!([]), "bob sees none of alice's conversations");
    let bobs_own = app.create_conversation(&bob, Some("bob's")).await;
    let bobs = app.get(LIST, Some(&bob)).await.expect(StatusCode::OK).clone();
    assert_eq!(bobs["items"], json!([bobs_own]));

    // Alice's conversation is untouched, and she does not see bob's.
    assert_eq!(app.get(&path, Some(&alice)).await.expect(StatusCode::OK), &secret);
    let alices = app.get(LIST, Some(&alice)).await.expect(StatusCode::OK).clone();
    assert_eq!(alices["items"], json!([secret]));
    app.get(&path_of(&bobs_own), Some(&alice))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_unknown_ids_are_404() {
    let app = TestApp::spawn().await;
    let token = user(&app, "hal@example.com").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in ["not-a-uuid", "1", "%20", "x.y", unknown.as_str()] {
        let path = format!("{LIST}/{id}");
        let response = app.get(&path, Some(&token)).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "GET {path}: {}",
            response.text
        );
        response.expect_error(StatusCode::NOT_FOUND, "not_found");
        app.patch_json(&path, Some(&token), &json!({"title": "x"}))
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
        app.delete(&path, Some(&token))
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    app.stop().await;
}
