//! Hostile and broken files (shared/fixtures/README.md): each gets the
//! outcome API.md names, without retries where it can never succeed,
//! nothing escapes `<data-dir>/files/`, and the server keeps serving.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::doc_helpers::{Api, assert_files_are, fixture, id, streamed_form};
use crate::helpers::TestApp;

const MIB: usize = 1 << 20;

/// Asserts a document `failed` at once: one attempt, no retry, and a
/// `last_error` equal to the document's error; returns the error.
async fn failed_at_once(api: &Api, token: &str, doc: &Value) -> String {
    let failed = api.wait_for_status(token, id(doc), "failed").await;
    let error = failed["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a failed document says why: {failed}"))
        .to_owned();
    assert!(!error.trim().is_empty(), "{failed}");
    assert_eq!(failed["chunk_count"], json!(0), "{failed}");
    let job = api.only_job(token, id(doc)).await;
    assert_eq!(job["status"], json!("failed"), "{job}");
    assert_eq!(job["retry_count"], json!(0), "no retries: {job}");
    assert_eq!(
        job["attempts"].as_array().map(Vec::len),
        Some(1),
        "one attempt: {job}"
    );
    assert_eq!(job["last_error"], json!(error), "{job}");
    assert_eq!(job["attempts"][0]["error"], json!(error), "{job}");
    error
}

/// A retry would show within milliseconds, so "no retry" is observable.
const FAST_RETRY: [&str; 2] = ["--job-retry-base", "50ms"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_pdf_fails_at_once_saying_it_is_encrypted() {
    let app = TestApp::spawn_with(&FAST_RETRY).await;
    let api = Api::of(&app);
    let token = api.register("encrypted@example.com").await;
    let doc = api
        .upload_ok(&token, "encrypted.pdf", &fixture("encrypted.pdf"))
        .await;
    let error = failed_at_once(&api, &token, &doc).await;
    assert!(error.to_lowercase().contains("encrypted"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_pdf_fails_at_once_as_corrupt() {
    let app = TestApp::spawn_with(&FAST_RETRY).await;
    let api = Api::of(&app);
    let token = api.register("truncated@example.com").await;
    let doc = api
        .upload_ok(&token, "truncated.pdf", &fixture("truncated.pdf"))
        .await;
    let error = failed_at_once(&api, &token, &doc).await;
    assert!(error.starts_with("corrupt"), "a parser error is corrupt: {error}");
    app.get("/healthz", None).await.expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_without_text_fails_saying_so() {
    let app = TestApp::spawn_with(&FAST_RETRY).await;
    let api = Api::of(&app);
    let token = api.register("notext@example.com").await;
    let doc = api
        .upload_ok(&token, "no-text.pdf", &fixture("no-text.pdf"))
        .await;
    let error = failed_at_once(&api, &token, &doc).await;
    let lower = error.to_lowercase();
    assert!(
        lower.contains("no text") || lower.contains("no_text"),
        "the error says there is no text: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_that_is_not_a_word_document_fails_at_once_or_is_415() {
    let app = TestApp::spawn_with(&FAST_RETRY).await;
    let api = Api::of(&app);
    let token = api.register("notdocx@example.com").await;
    let response = api
        .upload(&token, "not-a-docx.docx", &fixture("not-a-docx.docx"))
        .await;
    if response.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        response.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        assert_files_are(app.data_dir(), &[]);
        return;
    }
    let doc = response.expect(StatusCode::CREATED).clone();
    let error = failed_at_once(&api, &token, &doc).await;
    assert!(error.starts_with("corrupt"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_bomb_docx_fails_within_limits_and_the_server_is_unharmed() {
    let app = TestApp::spawn_with(&["--job-retry-base", "50ms", "--parse-memory-mb", "512"]).await;
    let api = Api::of(&app);
    let token = api.register("bomb@example.com").await;
    let doc = api.upload_ok(&token, "bomb.docx", &fixture("bomb.docx")).await;
    let failed = api.wait_for_status(&token, id(&doc), "failed").await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{failed}");
    assert_eq!(failed["chunk_count"], json!(0));
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("failed"), "{job}");
    // The server still works: health, and a normal upload gets ready.
    app.get("/healthz", None).await.expect(StatusCode::OK);
    let ok = api.upload_ready(&token, "after.txt", b"after the bomb").await;
    assert_eq!(api.hits_for(&token, "bomb", id(&ok)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_51_mib_upload_is_413_and_nothing_stays_on_disk() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("huge@example.com").await;

    // Declared up front: refused from the Content-Length. The server
    // answers without draining the body, so a client still writing may see
    // the connection reset first (see `send_refused_early`): retried.
    let mut answer = None;
    for _ in 0..5 {
        let (body, length) = streamed_form("huge.txt", 51 * MIB, true);
        match api.upload_stream(&token, body, length).await {
            Ok(response) => {
                answer = Some(response);
                break;
            }
            Err(err) if err.is_request() => continue,
            Err(err) => panic!("unexpected client error: {err}"),
        }
    }
    let response = answer.expect("the client gets an answer to a 51 MiB upload with a length");
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_files_are(app.data_dir(), &[]);

    // Chunked: refused while streaming, the partial file removed.
    let (body, length) = streamed_form("huge.txt", 51 * MIB, false);
    let response = api
        .upload_stream(&token, body, length)
        .await
        .expect("the client gets an answer to a chunked 51 MiB upload");
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_files_are(app.data_dir(), &[]);

    let listed = api.get("/api/documents", &token).await;
    assert_eq!(listed.expect(StatusCode::OK)["items"], json!([]));
    app.get("/healthz", None).await.expect(StatusCode::OK);
    let ok = api
        .upload_ready(&token, "small.txt", b"a small file after a huge one")
        .await;
    assert_files_are(app.data_dir(), &[id(&ok)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poison_file_gets_its_outcome_and_the_server_keeps_serving() {
    let app = TestApp::spawn_with(&FAST_RETRY).await;
    let api = Api::of(&app);
    let token = api.register("poison@example.com").await;

    api.upload(&token, "empty.txt", &fixture("empty.txt"))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let mut stored = Vec::new();
    let mut failing = Vec::new();
    for (name, file) in [
        ("../../../../tmp/truncated.pdf", "truncated.pdf"),
        ("..\\..\\encrypted.pdf", "encrypted.pdf"),
        ("/etc/no-text.pdf", "no-text.pdf"),
        ("bomb.docx", "bomb.docx"),
    ] {
        let doc = api.upload_ok(&token, name, &fixture(file)).await;
        assert_eq!(doc["filename"], json!(file), "{name} loses its path");
        stored.push(id(&doc).to_owned());
        failing.push(doc);
    }
    let good = api.upload_ok(&token, "../notes.md", &fixture("notes.md")).await;
    stored.push(id(&good).to_owned());

    for doc in &failing {
        api.wait_for_status(&token, id(doc), "failed").await;
    }
    let ready = api.wait_for_status(&token, id(&good), "ready").await;
    assert!(ready["chunk_count"].as_u64().is_some_and(|n| n >= 1));
    assert!(!api.hits_for(&token, "stampede", id(&good)).await.is_empty());

    let refs: Vec<&str> = stored.iter().map(String::as_str).collect();
    assert_files_are(app.data_dir(), &refs);
    // What a path-following server would have written, relative to files/.
    for escaped in [
        "../../../../tmp/truncated.pdf",
        "../../encrypted.pdf",
        "../notes.md",
    ] {
        let path = app.data_dir().join("files").join(escaped);
        let written = std::fs::read(&path).ok();
        assert!(
            written.is_none_or(|bytes| bytes != fixture("truncated.pdf")
                && bytes != fixture("encrypted.pdf")
                && bytes != fixture("notes.md")),
            "an upload escaped files/ to {}",
            path.display()
        );
    }
    app.get("/healthz", None).await.expect(StatusCode::OK);
    app.get("/readyz", None).await.expect(StatusCode::OK);
    let after = api
        .upload_ready(&token, "after.txt", b"still serving after poison")
        .await;
    assert_eq!(api.hits_for(&token, "serving", id(&after)).await.len(), 1);
}
