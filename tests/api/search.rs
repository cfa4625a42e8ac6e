//! API.md `GET /api/search`: plain-text queries (never query syntax),
//! validation of `q` and `limit`, ranking and snippets.

use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_passages_of_a_document_match_the_words_of_its_title() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("titles@example.com").await;
    // Longer than one chunk (1,000 characters by default); the title's
    // words appear nowhere in the body.
    let paragraph = "Drainage decides what grows on these fields. Farmers dig ditches \
                     along the slopes and rotate barley with grass every third year. ";
    let body = [paragraph.repeat(6), paragraph.repeat(6), paragraph.repeat(6)].join("\n\n");
    let titled = api
        .upload_ready(
            &token,
            "soils.md",
            format!("# Volcanic soils of Iceland\n\n{body}").as_bytes(),
        )
        .await;
    let other = api
        .upload_ready(&token, "other.txt", format!("Garden notes\n\n{body}").as_bytes())
        .await;

    let hits = api.hits_for(&token, "volcanic", id(&titled)).await;
    assert!(hits.len() >= 2, "every passage matches its title: {hits:?}");
    for hit in &hits {
        let snippet = hit["snippet"].as_str().unwrap_or_default();
        assert!(
            snippet.contains("Drainage") || snippet.contains("barley"),
            "the passages are body text, not a lone title: {hit}"
        );
        assert!(!snippet.contains("Volcanic"), "{hit}");
    }
    // The title lifts its document's passages above the same text under
    // another title.
    let hits = api.search(&token, "volcanic drainage").await;
    assert!(!hits.is_empty());
    assert_eq!(hits[0]["document_id"], titled["id"], "{hits:?}");
    assert!(
        api.hits_for(&token, "volcanic", id(&other)).await.is_empty(),
        "another document's passages do not match this title"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_documents_never_change_my_scores() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let mine = api.register("scores-mine@example.com").await;
    let theirs = api.register("scores-theirs@example.com").await;
    for (name, text) in [
        ("kestrel.txt", "The kestrel hovers over the meadow at dawn."),
        ("grasses.txt", "Field notes on meadow grasses and soil."),
        ("rain.txt", "Rainfall totals for the spring months."),
        ("fences.txt", "Repairs to the north fence and the gate."),
    ] {
        api.upload_ready(&mine, name, text.as_bytes()).await;
    }
    let scores = |hits: Vec<Value>| -> Vec<(String, f64)> {
        hits.iter()
            .map(|h| {
                (
                    h["chunk_id"].as_str().unwrap_or_default().to_owned(),
                    h["score"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    };
    let before = scores(api.search(&mine, "kestrel meadow").await);
    assert_eq!(before.len(), 2, "{before:?}");

    // BM25 weighs a word by how many chunks hold it: another user's
    // documents full of these words must not count.
    for n in 0..4 {
        let text = format!("Kestrel {n}: a kestrel over a meadow, then another kestrel.");
        api.upload_ready(&theirs, &format!("kestrels-{n}.txt"), text.as_bytes())
            .await;
    }
    assert_eq!(api.search(&theirs, "kestrel meadow").await.len(), 4);
    assert_eq!(scores(api.search(&mine, "kestrel meadow").await), before);

    // Nor do my own deleted documents.
    let extra = api
        .upload_ready(&mine, "extra.txt", b"A kestrel nest by the meadow wall.")
        .await;
    assert_ne!(scores(api.search(&mine, "kestrel meadow").await), before);
    api.delete(&format!("/api/documents/{}", id(&extra)), &mine)
        .await
        .expect(StatusCode::NO_CONTENT);
    // Never served once deleted; and the index drops it from the
    // statistics at its next commit, a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = scores(api.search(&mine, "kestrel meadow").await);
        assert!(now.len() == 2, "the deleted document is not served: {now:?}");
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scores never came back: {now:?} vs {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
