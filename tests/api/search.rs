//! API.md `GET /api/search`: plain-text queries (never query syntax),
//! validation of `q` and `limit`, ranking and snippets.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::doc_helpers::{Api, id};
use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_syntax_is_just_text() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("hostile@example.com").await;
    let doc = api
        .upload_ready(
            &token,
            "syntax.txt",
            b"The parser near the river handles x and b values. Quotes \"and\" stars * too.",
        )
        .await;
    for q in [
        "\"",
        "-x",
        "a:b",
        "*",
        "NEAR(",
        "AND OR",
        "\"unbalanced",
        "x AND",
        "(b",
        "^river",
        "NOT",
    ] {
        let response = api.search_raw(&token, &[("q", q)]).await;
        assert_eq!(response.status, StatusCode::OK, "q={q:?}: {}", response.text);
        assert!(response.body["items"].is_array(), "q={q:?}: {}", response.text);
    }
    // The words inside the syntax still match as words.
    for q in ["-x", "a:b", "NEAR(", "^river"] {
        let hits = api.hits_for(&token, q, id(&doc)).await;
        assert!(!hits.is_empty(), "q={q:?} matches its words as text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_queries_and_bad_limits_are_refused() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("limits@example.com").await;
    api.upload_ready(&token, "a.txt", b"alpha beta gamma").await;

    for query in [vec![("q", "")], vec![("q", "   ")], vec![("q", "\t\n")], vec![]] {
        let response = api.search_raw(&token, &query).await;
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    for limit in ["0", "51", "-1"] {
        let response = api.search_raw(&token, &[("q", "alpha"), ("limit", limit)]).await;
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let response = api.search_raw(&token, &[("q", "alpha"), ("limit", "abc")]).await;
    response.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    for limit in ["1", "50"] {
        let hits = api
            .search_query(&token, &[("q", "alpha"), ("limit", limit)])
            .await;
        assert_eq!(hits.len(), 1, "limit={limit}");
    }
    // Only stop-words: nothing to look for, an empty list.
    let response = api.search_raw(&token, &[("q", "the and of to")]).await;
    assert_eq!(response.expect(StatusCode::OK)["items"], json!([]));
    // Without a token: 401.
    let response = app.get("/api/search?q=alpha", None).await;
    response.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn better_matches_rank_first_and_limit_bounds_the_list() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("rank@example.com").await;
    let weak = api
        .upload_ready(
            &token,
            "weak.txt",
            b"A note that mentions the heron once, among other birds.",
        )
        .await;
    let strong = api
        .upload_ready(
            &token,
            "strong.txt",
            b"Heron habitat: the grey heron nests near water; heron colonies are called heronries. \
              The heron hunts fish.",
        )
        .await;
    let hits = api.search(&token, "heron habitat").await;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0]["document_id"], strong["id"], "best first: {hits:?}");
    assert_eq!(hits[1]["document_id"], weak["id"]);
    let (first, second) = (
        hits[0]["score"].as_f64().unwrap_or_default(),
        hits[1]["score"].as_f64().unwrap_or_default(),
    );
    assert!(
        first > second,
        "a better match has a higher score: {first} vs {second}"
    );
    let one = api.search_query(&token, &[("q", "heron"), ("limit", "1")]).await;
    assert_eq!(one.len(), 1);
    let chunk_ids: Vec<&Value> = hits.iter().map(|h| &h["chunk_id"]).collect();
    assert_ne!(chunk_ids[0], chunk_ids[1]);
}
