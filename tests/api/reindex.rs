//! The search index is derived from the database: `ragd reindex` rebuilds
//! it (only while no server holds the data dir), and a server that finds
//! it missing or damaged at start rebuilds it before it listens. Either
//! way searches answer as before: the same chunks, the same scores, and
//! nothing of a deleted document.

use serde_json::Value;

use crate::cli::run;
use crate::doc_helpers::{Api, id};
use crate::helpers::TestApp;

const QUERY: &str = "lighthouse keeper storm";

/// Two users' documents, one of them deleted: what a rebuild must
/// reproduce. Returns the app, a token and the hits of [`QUERY`].
async fn corpus() -> (TestApp, String, Vec<Value>) {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("keeper@example.com").await;
    let other = api.register("other@example.com").await;
    let texts = [
        "The lighthouse keeper climbed the stairs before the storm.",
        "A storm broke the lamp; the keeper lit candles.",
        "Gulls circled the lighthouse all morning.",
    ];
    // Deleted first: the index commits that make the others ready apply
    // its delete, so the scores below already leave it out.
    let gone = api
        .upload_ready(
            &token,
            "gone.txt",
            b"The storm took the lighthouse keeper's boat.",
        )
        .await;
    api.delete(&format!("/api/documents/{}", id(&gone)), &token)
        .await
        .expect(reqwest::StatusCode::NO_CONTENT);
    for (n, text) in texts.iter().enumerate() {
        api.upload_ready(&token, &format!("log-{n}.txt"), text.as_bytes())
            .await;
    }
    api.upload_ready(&other, "theirs.txt", b"Another lighthouse keeper, another storm.")
        .await;
    let hits = search_all(&api, &token).await;
    assert_eq!(hits.len(), 3, "the three live documents match: {hits:?}");
    (app, token, hits)
}

async fn search_all(api: &Api, token: &str) -> Vec<Value> {
    api.search_query(token, &[("q", QUERY), ("limit", "50")]).await
}

/// The hits as (chunk, score) pairs, so that a rebuilt index must score
/// the same.
fn ranked(hits: &[Value]) -> Vec<(String, String)> {
    hits.iter()
        .map(|h| {
            (
                h["chunk_id"].to_string(),
                format!("{:.5}", h["score"].as_f64().unwrap_or(f64::NAN)),
            )
        })
        .collect()
}

#[tokio::test]
async fn reindex_rebuilds_the_index_with_the_same_results_and_refuses_a_running_server() {
    let (app, token, hits) = corpus().await;
    let dir = app.data_dir().display().to_string();

    let refused = run(&["reindex", "--data-dir", &dir], &[]).await;
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a running server holds the data dir"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("already using the data dir"), "{stderr}");

    let (data, args) = app.stop().await;
    let done = run(&["reindex", "--data-dir", &dir], &[]).await;
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "reindex succeeds: {stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Four live chunks: three of the caller's, one of the other user's.
    assert!(stdout.contains("holds 4 chunks"), "{stdout}");

    let app = TestApp::spawn_in(data, args).await;
    let again = search_all(&Api::of(&app), &token).await;
    assert_eq!(
        ranked(&again),
        ranked(&hits),
        "the same chunks with the same scores"
    );
}

#[tokio::test]
async fn reindex_of_a_dir_without_a_database_exits_2() {
    let empty = tempfile::tempdir().expect("a temp dir");
    let output = run(
        &["reindex", "--data-dir", &empty.path().display().to_string()],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no ragd database"), "{stderr}");
    assert!(
        std::fs::read_dir(empty.path())
            .expect("readable")
            .next()
            .is_none(),
        "nothing is created in the wrong dir"
    );
}

#[tokio::test]
async fn a_missing_or_damaged_index_is_rebuilt_at_start() {
    let (app, token, hits) = corpus().await;
    let (data, args) = app.stop().await;
    let index = data.path().join("index");
    std::fs::remove_dir_all(&index).expect("remove the index");
    let app = TestApp::spawn_in(data, args).await;
    let rebuilt = search_all(&Api::of(&app), &token).await;
    assert_eq!(ranked(&rebuilt), ranked(&hits), "rebuilt from the database");

    let (data, args) = app.stop().await;
    std::fs::write(index.join("meta.json"), b"{ not json").expect("damage the index");
    let app = TestApp::spawn_in(data, args).await;
    let rebuilt = search_all(&Api::of(&app), &token).await;
    assert_eq!(ranked(&rebuilt), ranked(&hits), "a damaged index is rebuilt too");
}
