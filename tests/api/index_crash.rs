//! The two commits of an ingest: the chunks' (SQLite, staged, not live)
//! and the search index's; the document turns `ready` in a third write,
//! after both. The real binary is SIGKILLed at either gap
//! (`RAGD_TEST_INDEX`, feature `test-hooks`) and the next start must end
//! with the document `ready`, its chunks found once, and never a chunk
//! served that is not the document's live set. Needs `--features
//! test-hooks`.

use serde_json::{Value, json};

use crate::cli::Server;
use crate::doc_helpers::{Api, id};
use crate::helpers::TestApp;

const WORD: &str = "quokkafinch";
const TEXT: &[u8] = b"The quokkafinch nests in the dry scrub of the southern islands.\n";
const STALLED: &str = "test hook: the indexer stalls";

/// Which write the kill comes after.
#[derive(Clone, Copy)]
enum Gap {
    /// The chunks are staged; the index has not committed them.
    BeforeIndexCommit,
    /// The index holds them; the document is not `ready`.
    AfterIndexCommit,
}

impl Gap {
    fn env(self) -> (&'static str, &'static str) {
        let point = match self {
            Gap::BeforeIndexCommit => "stall-before-commit",
            Gap::AfterIndexCommit => "stall-after-commit",
        };
        ("RAGD_TEST_INDEX", point)
    }
}

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ragd-index-crash-")
        .tempdir()
        .expect("a temp data dir")
}

async fn stalled(server: &mut Server) {
    assert!(
        server.wait_for_log(STALLED).await,
        "the indexer did not reach the test hook; stderr:\n{}",
        server.log()
    );
}

/// The one hit of `WORD` in the document, asserting there is exactly one.
async fn only_hit(api: &Api, token: &str, doc: &Value) -> Value {
    let hits = api.hits_for(token, WORD, id(doc)).await;
    assert_eq!(hits.len(), 1, "the document's chunk is found once: {hits:?}");
    hits.into_iter().next().expect("one hit")
}

async fn a_new_upload_survives_a_kill(gap: Gap) {
    let dir = data_dir();
    let mut server = Server::start(dir.path(), &[gap.env()]).await;
    let api = Api::at(&server.address);
    let token = api.register("index-crash@example.com").await;
    let doc = api.upload_ok(&token, "quokka.txt", TEXT).await;
    stalled(&mut server).await;

    let now = api.document(&token, id(&doc)).await;
    assert_ne!(now["status"], json!("ready"), "not ready before the index: {now}");
    assert_eq!(
        api.hits_for(&token, WORD, id(&doc)).await,
        Vec::<Value>::new(),
        "staged chunks are not served, whether or not the index holds them"
    );
    server.kill().await;

    let app = TestApp::spawn_in(dir, Vec::new()).await;
    let api = Api::of(&app);
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    assert_eq!(ready["chunk_count"], json!(1), "{ready}");
    let hit = only_hit(&api, &token, &ready).await;
    assert!(hit["snippet"].as_str().is_some_and(|s| s.contains(WORD)), "{hit}");

    // The index and SQLite agree after another start as well.
    let app = app.restart().await;
    let again = only_hit(&Api::of(&app), &token, &ready).await;
    assert_eq!(again["chunk_id"], hit["chunk_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_the_chunks_commit_and_before_the_index_commits_loses_nothing() {
    a_new_upload_survives_a_kill(Gap::BeforeIndexCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_the_index_commits_and_before_ready_loses_nothing() {
    a_new_upload_survives_a_kill(Gap::AfterIndexCommit).await;
}

/// A reprocess killed at `gap`: the old chunk is served until the new set
/// is live, and never after.
async fn a_reprocess_survives_a_kill(gap: Gap) {
    let dir = data_dir();
    let mut server = Server::start(dir.path(), &[]).await;
    let api = Api::at(&server.address);
    let token = api.register("reprocess-crash@example.com").await;
    let doc = api.upload_ok(&token, "quokka.txt", TEXT).await;
    let doc = api.wait_for_status(&token, id(&doc), "ready").await;
    let old = only_hit(&api, &token, &doc).await;
    server.kill().await;

    let mut server = Server::start(dir.path(), &[gap.env()]).await;
    let api = Api::at(&server.address);
    let before = only_hit(&api, &token, &doc).await;
    assert_eq!(before["chunk_id"], old["chunk_id"], "the restart keeps the set");
    api.post_empty(&format!("/api/documents/{}/reprocess", id(&doc)), &token)
        .await
        .expect(reqwest::StatusCode::ACCEPTED);
    stalled(&mut server).await;

    let during = only_hit(&api, &token, &doc).await;
    assert_eq!(
        during["chunk_id"], old["chunk_id"],
        "the old chunk is served while the new set waits"
    );
    server.kill().await;

    let app = TestApp::spawn_in(dir, Vec::new()).await;
    let api = Api::of(&app);
    // Searched first, then looked at: a document not yet `ready` after the
    // search was not ready during it either.
    let served = only_hit(&api, &token, &doc).await;
    let status = api.document(&token, id(&doc)).await["status"].clone();
    if status != json!("ready") {
        assert_eq!(served["chunk_id"], old["chunk_id"], "until the reprocess is done");
    }
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    assert_eq!(ready["chunk_count"], json!(1), "{ready}");
    let new = only_hit(&api, &token, &ready).await;
    assert_ne!(
        new["chunk_id"], old["chunk_id"],
        "the new set replaced the old: {new}"
    );
    assert!(
        served["chunk_id"] == old["chunk_id"] || served["chunk_id"] == new["chunk_id"],
        "only the old or the new set is ever served: {served}"
    );

    let app = app.restart().await;
    let again = only_hit(&Api::of(&app), &token, &ready).await;
    assert_eq!(again["chunk_id"], new["chunk_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reprocess_killed_before_the_index_commits_serves_the_old_chunks_until_ready() {
    a_reprocess_survives_a_kill(Gap::BeforeIndexCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reprocess_killed_after_the_index_commits_serves_the_old_chunks_until_ready() {
    a_reprocess_survives_a_kill(Gap::AfterIndexCommit).await;
}
