//! API.md "Documents": upload (limits, checks and their order, filenames,
//! idempotency), list, get, download, jobs, reprocess, delete, and one
//! user's documents staying invisible to another.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::ask;
use crate::doc_helpers::{
    Api, assert_document, assert_files_are, assert_job, fixture, id, sha256_hex, streamed_form,
};
use crate::helpers::{PASSWORD, TestApp, assert_timestamp};
use crate::ws_helpers::{assert_consecutive, connect, connect_since, types};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_201_queued_with_a_type_the_server_decides() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("upload@example.com").await;
    let bytes = fixture("notes.md");

    // The part says PDF: the server decides from the extension and bytes.
    let response = api
        .upload_with(&token, "notes.md", "application/pdf", &bytes, &[])
        .await;
    let doc = response.expect(StatusCode::CREATED).clone();
    assert_document(&doc);
    assert_eq!(doc["filename"], json!("notes.md"));
    assert_eq!(doc["content_type"], json!("text/markdown"), "{doc}");
    assert_eq!(doc["status"], json!("queued"), "{doc}");
    assert_eq!(doc["error"], Value::Null);
    assert_eq!(doc["chunk_count"], json!(0));
    assert_eq!(doc["size_bytes"], json!(bytes.len()));
    assert_eq!(doc["sha256"], json!(sha256_hex(&bytes)));

    // Fully on disk, named by the document id only.
    assert_files_are(app.data_dir(), &[id(&doc)]);
    let stored = std::fs::read(app.data_dir().join("files").join(id(&doc))).expect("the stored file");
    assert_eq!(stored, bytes, "the stored file holds the uploaded bytes");

    let fetched = api.document(&token, id(&doc)).await;
    for key in [
        "id",
        "filename",
        "content_type",
        "size_bytes",
        "sha256",
        "created_at",
    ] {
        assert_eq!(fetched[key], doc[key], "GET shows the same {key}");
    }
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    assert!(ready["chunk_count"].as_u64().is_some_and(|n| n >= 1), "{ready}");
    assert_eq!(ready["error"], Value::Null, "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_gets_its_content_type_from_the_server() {
    // No worker: only the upload is under test.
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("types@example.com").await;
    let cases: [(&str, &[u8], &str); 9] = [
        ("a.txt", b"plain words", "text/plain"),
        ("b.md", b"# Title\n\nwords", "text/markdown"),
        ("c.html", b"<p>words</p>", "text/html"),
        ("d.htm", b"<p>words</p>", "text/html"),
        ("e.pdf", &fixture("report.pdf"), "application/pdf"),
        (
            "f.docx",
            &fixture("guide.docx"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("g.csv", b"a,b\n1,2\n", "text/csv"),
        ("h.json", br#"{"a": "words"}"#, "application/json"),
        ("UPPER.PDF", &fixture("report.pdf"), "application/pdf"),
    ];
    for (name, bytes, content_type) in cases {
        let response = api.upload_with(&token, name, "image/png", bytes, &[]).await;
        let doc = response.expect(StatusCode::CREATED);
        assert_eq!(doc["content_type"], json!(content_type), "{name}: {doc}");
        assert_eq!(doc["filename"], json!(name), "{doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_above_the_limit_are_413_and_leave_nothing_on_disk() {
    let app = TestApp::spawn_with(&["--max-upload-mb", "1"]).await;
    let api = Api::of(&app);
    let token = api.register("limit@example.com").await;

    // One byte over, sent in one piece with its length.
    let response = api.upload(&token, "big.txt", &vec![b'a'; MIB + 1]).await;
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_files_are(app.data_dir(), &[]);

    // Streamed without a length: the server finds out while writing.
    let (body, length) = streamed_form("streamed.txt", 3 * MIB, false);
    let response = api
        .upload_stream(&token, body, length)
        .await
        .expect("the client gets an answer to a streamed oversized upload");
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_files_are(app.data_dir(), &[]);

    // Size is checked before type: an oversized unknown type is 413.
    let response = api.upload(&token, "big.exe", &vec![b'a'; MIB + 1]).await;
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_files_are(app.data_dir(), &[]);

    let listed = api.get("/api/documents", &token).await;
    assert_eq!(
        listed.expect(StatusCode::OK)["items"],
        json!([]),
        "nothing was stored"
    );

    // Exactly at the limit is fine, and the server is unharmed.
    let doc = api.upload_ok(&token, "exact.txt", &vec![b'a'; MIB]).await;
    assert_files_are(app.data_dir(), &[id(&doc)]);
    app.get("/healthz", None).await.expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_422_before_its_type_is_checked() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("empty@example.com").await;
    let empty = fixture("empty.txt");
    assert!(empty.is_empty(), "the fixture is 0 bytes");
    for name in ["empty.txt", "empty.pdf", "empty.exe"] {
        let response = api.upload(&token, name, &empty).await;
        response.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    assert_files_are(app.data_dir(), &[]);
    let listed = api.get("/api/documents", &token).await;
    assert_eq!(listed.expect(StatusCode::OK)["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_bytes_that_do_not_match_are_415() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("types415@example.com").await;
    let cases: [(&str, &[u8]); 6] = [
        ("setup.exe", b"MZ not a document"),
        ("README", b"no extension at all"),
        ("archive.tar.gz", b"not really"),
        ("fake.pdf", b"hello, I am not a PDF"),
        ("fake.docx", b"hello, I am not a ZIP"),
        ("report.pdf.txt.pdf", b"PK\x03\x04 a zip named pdf"),
    ];
    for (name, bytes) in cases {
        let response = api.upload(&token, name, bytes).await;
        assert_eq!(
            response.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{name}: {}",
            response.text
        );
        response.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    // Not a multipart body at all.
    let response = app
        .send_raw(
            reqwest::Method::POST,
            "/api/documents",
            Some(&token),
            Some("application/json"),
            r#"{"file":"x"}"#,
        )
        .await;
    response.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_files_are(app.data_dir(), &[]);
    let listed = api.get("/api/documents", &token).await;
    assert_eq!(listed.expect(StatusCode::OK)["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filenames_keep_only_their_last_component_and_never_become_paths() {
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("names@example.com").await;
    let cases = [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("..\\..\\x.txt", "x.txt"),
        ("/var/tmp/abs.md", "abs.md"),
        ("C:\\Users\\me\\notes.txt", "notes.txt"),
        ("dir/sub\\mixed.csv", "mixed.csv"),
        ("tab\there.txt", "tabhere.txt"),
        // Raw control bytes in the part header itself.
        ("re\u{1}port.txt", "report.txt"),
        ("bell\u{7}\u{1b}[31m.md", "bell[31m.md"),
        ("del\u{7f}ete.txt", "delete.txt"),
    ];
    let mut ids = Vec::new();
    for (raw, clean) in cases {
        // Control bytes in the file itself are its own: kept.
        let bytes = format!("contents\u{1} of\u{7f} {clean}").into_bytes();
        let doc = api.upload_ok(&token, raw, &bytes).await;
        assert_eq!(doc["filename"], json!(clean), "{raw:?}: {doc}");
        let file = api
            .get(&format!("/api/documents/{}/file", id(&doc)), &token)
            .await;
        assert_eq!(file.status, StatusCode::OK);
        assert_eq!(file.text.as_bytes(), bytes, "{raw:?} downloads its own bytes");
        ids.push(id(&doc).to_owned());
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_files_are(app.data_dir(), &refs);
    let files = app.data_dir().join("files");
    for escaped in ["../../etc/passwd.txt", "../x.txt", "../../x.txt", "../passwd.txt"] {
        assert!(
            !files.join(escaped).exists(),
            "{escaped} (relative to files/) must not exist"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(app.data_dir())
        .expect("read the data dir")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt") || n.ends_with(".md") || n.ends_with(".csv"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        Vec::<String>::new(),
        "no upload lands in the data dir itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_break_in_a_part_header_is_400_naming_the_headers_and_stores_nothing() {
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("line-break@example.com").await;
    let response = api.upload(&token, "two\nlines.txt", b"some text").await;
    response.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let message = response.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("headers") && message.contains("line break"),
        "the message names the part's headers and the likely cause: {message}"
    );
    assert_files_are(app.data_dir(), &[]);
    // The server keeps serving, and the same file with a clean name is fine.
    api.upload_ok(&token, "two lines.txt", b"some text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_upload_repeat_gives_the_same_document_and_one_job() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("idem@example.com").await;
    let bytes = fixture("inventory.csv");
    let key = ("idempotency-key", "upload-1");

    let first = api
        .upload_with(&token, "inventory.csv", "text/csv", &bytes, &[key])
        .await;
    let doc = first.expect(StatusCode::CREATED).clone();
    let again = api
        .upload_with(&token, "inventory.csv", "text/csv", &bytes, &[key])
        .await;
    let repeat = again.expect(StatusCode::CREATED).clone();
    assert_document(&repeat);
    assert_eq!(
        repeat["id"], doc["id"],
        "the repeat answers with the same document"
    );

    // The same key for another file or another name is a conflict.
    let other_bytes = api
        .upload_with(&token, "inventory.csv", "text/csv", b"x,y\n1,2\n", &[key])
        .await;
    other_bytes.expect_error(StatusCode::CONFLICT, "conflict");
    let other_name = api
        .upload_with(&token, "renamed.csv", "text/csv", &bytes, &[key])
        .await;
    other_name.expect_error(StatusCode::CONFLICT, "conflict");
    let long_key = "k".repeat(129);
    let bad_key = api
        .upload_with(
            &token,
            "inventory.csv",
            "text/csv",
            &bytes,
            &[("idempotency-key", &long_key)],
        )
        .await;
    bad_key.expect_error(StatusCode::BAD_REQUEST, "bad_request");

    api.wait_for_status(&token, id(&doc), "ready").await;
    let listed = api.get("/api/documents", &token).await;
    let items = listed.expect(StatusCode::OK)["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "one document: {items}");
    let jobs = api.jobs(&token, id(&doc)).await;
    assert_eq!(jobs.len(), 1, "one parse job: {}", Value::from(jobs.clone()));
    assert_files_are(app.data_dir(), &[id(&doc)]);

    // Without a key, the same bytes are simply a second document.
    let second = api.upload_ok(&token, "inventory.csv", &bytes).await;
    assert_ne!(second["id"], doc["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_listed_newest_first_with_a_cursor() {
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("list@example.com").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let doc = api
            .upload_ok(&token, &format!("n{n}.txt"), format!("note {n}").as_bytes())
            .await;
        ids.push(id(&doc).to_owned());
        crate::helpers::next_millisecond().await;
    }
    let page = api
        .get("/api/documents", &token)
        .await
        .expect(StatusCode::OK)
        .clone();
    let all: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| {
            assert_document(d);
            id(d)
        })
        .collect();
    assert_eq!(all, [&ids[2], &ids[1], &ids[0]], "newest first");
    assert_eq!(page["next_before"], Value::Null, "{page}");

    let first = api
        .get("/api/documents?limit=2", &token)
        .await
        .expect(StatusCode::OK)
        .clone();
    let first_ids: Vec<&str> = first["items"].as_array().expect("items").iter().map(id).collect();
    assert_eq!(first_ids, [&ids[2], &ids[1]]);
    let cursor = first["next_before"].as_str().expect("a cursor to the next page");
    let second = api
        .get(&format!("/api/documents?limit=2&before={cursor}"), &token)
        .await
        .expect(StatusCode::OK)
        .clone();
    let second_ids: Vec<&str> = second["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id)
        .collect();
    assert_eq!(second_ids, [&ids[0]]);
    assert_eq!(second["next_before"], Value::Null);

    for (query, status) in [
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=201", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=abc", StatusCode::BAD_REQUEST),
        ("before=not-a-cursor", StatusCode::BAD_REQUEST),
    ] {
        let response = api.get(&format!("/api/documents?{query}"), &token).await;
        assert_eq!(response.status, status, "{query}: {}", response.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_the_original_bytes_as_an_attachment() {
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("download@example.com").await;
    let pdf = fixture("report.pdf");
    let doc = api.upload_ok(&token, "Zürich report.pdf", &pdf).await;
    assert_eq!(doc["filename"], json!("Zürich report.pdf"));

    let response = app
        .client
        .get(app.url(&format!("/api/documents/{}/file", id(&doc))))
        .bearer_auth(&token)
        .send()
        .await
        .expect("reach the server");
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/pdf");
    let disposition = header("content-disposition");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''Z%C3%BCrich%20report.pdf"),
        "the exact name in filename* (RFC 6266/5987): {disposition}"
    );
    let body = response.bytes().await.expect("the body");
    assert_eq!(body.as_ref(), pdf.as_slice(), "the original bytes");

    let text = api.upload_ok(&token, "plain notes.txt", b"just text").await;
    let response = api
        .get(&format!("/api/documents/{}/file", id(&text)), &token)
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.text, "just text");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let disposition = response.header("content-disposition").unwrap_or_default();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename=\"plain notes.txt\""),
        "{disposition}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_newest_first_with_their_attempts() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("jobs@example.com").await;
    let doc = api.upload_ready(&token, "notes.md", &fixture("notes.md")).await;
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    assert_eq!(job["retry_count"], json!(0));
    assert_eq!(job["max_retries"], json!(3), "the default --job-max-retries");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{job}");
    assert_eq!(attempts[0]["n"], json!(1));
    assert!(!attempts[0]["finished_at"].is_null(), "a finished attempt: {job}");
    assert_eq!(attempts[0]["error"], Value::Null, "{job}");

    let response = api
        .post_empty(&format!("/api/documents/{}/reprocess", id(&doc)), &token)
        .await;
    let queued = response.expect(StatusCode::ACCEPTED).clone();
    assert_job(&queued);
    assert_eq!(queued["status"], json!("queued"), "{queued}");
    assert_eq!(queued["document_id"], doc["id"]);
    assert_eq!(queued["retry_count"], json!(0));
    assert_ne!(queued["id"], job["id"], "a new job");
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    assert_eq!(
        ready["chunk_count"], doc["chunk_count"],
        "the same text, the same chunks"
    );

    let jobs = api.jobs(&token, id(&doc)).await;
    let listed: Vec<&str> = jobs.iter().map(id).collect();
    assert_eq!(listed, [id(&queued), id(&job)], "newest first");
    assert_eq!(jobs[0]["status"], json!("succeeded"));
    assert_eq!(jobs[1]["status"], json!("succeeded"));
    assert_timestamp(&jobs[0]["attempts"][0]["finished_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_is_409_while_a_job_is_queued() {
    // No worker: the job stays queued.
    let app = TestApp::spawn_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let token = api.register("busy@example.com").await;
    let doc = api.upload_ok(&token, "n.txt", b"waiting in line").await;
    let path = format!("/api/documents/{}/reprocess", id(&doc));
    api.post_empty(&path, &token)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(api.jobs(&token, id(&doc)).await.len(), 1, "no second job");

    // With a worker it finishes; a reprocess is then accepted, and while
    // that new job waits (no worker again), another one is 409.
    let app = app.restart_with(&["--workers", "1"]).await;
    let api = Api::of(&app);
    api.wait_for_status(&token, id(&doc), "ready").await;
    let app = app.restart_with(&["--workers", "0"]).await;
    let api = Api::of(&app);
    let job = api
        .post_empty(&path, &token)
        .await
        .expect(StatusCode::ACCEPTED)
        .clone();
    assert_eq!(job["status"], json!("queued"), "{job}");
    api.post_empty(&path, &token)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(api.jobs(&token, id(&doc)).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reprocess_replaces_the_chunk_set_without_duplicates() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("swap@example.com").await;
    let doc = api.upload_ready(&token, "notes.md", &fixture("notes.md")).await;
    let before = api.hits_for(&token, "stampede", id(&doc)).await;
    assert!(!before.is_empty(), "the ready document is searchable");

    api.post_empty(&format!("/api/documents/{}/reprocess", id(&doc)), &token)
        .await
        .expect(StatusCode::ACCEPTED);
    // Searchable all along: right after the reprocess is queued...
    let during = api.hits_for(&token, "stampede", id(&doc)).await;
    assert_eq!(during.len(), before.len(), "the old chunks stay searchable");
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    // ...and after: one chunk set, not two.
    let after = api.hits_for(&token, "stampede", id(&doc)).await;
    assert_eq!(after.len(), before.len(), "no chunk is indexed twice: {after:?}");
    assert_eq!(ready["chunk_count"], doc["chunk_count"]);
    let mut chunk_ids: Vec<&str> = after.iter().filter_map(|h| h["chunk_id"].as_str()).collect();
    chunk_ids.sort_unstable();
    chunk_ids.dedup();
    assert_eq!(chunk_ids.len(), after.len(), "each chunk once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_document_removes_it_from_everywhere() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("delete@example.com").await;
    let keep = api.upload_ready(&token, "keep.txt", b"the kettle stays").await;
    let doc = api.upload_ready(&token, "notes.md", &fixture("notes.md")).await;
    assert!(!api.hits_for(&token, "stampede", id(&doc)).await.is_empty());
    assert_files_are(app.data_dir(), &[id(&keep), id(&doc)]);

    let mut ws = connect(&app, &token).await;
    let head = ws.head();
    let path = format!("/api/documents/{}", id(&doc));
    let response = api.delete(&path, &token).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    assert_eq!(response.text, "", "204 has no body");

    let event = ws.next_event().await;
    assert_eq!(event["id"], json!(head + 1));
    assert_eq!(event["type"], json!("document.deleted"));
    assert_eq!(event["data"], json!({"id": doc["id"]}));
    ws.expect_quiet().await;

    for sub in ["", "/file", "/jobs"] {
        api.get(&format!("{path}{sub}"), &token)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    api.post_empty(&format!("{path}/reprocess"), &token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    api.delete(&path, &token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let listed = api
        .get("/api/documents", &token)
        .await
        .expect(StatusCode::OK)
        .clone();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id)
        .collect();
    assert_eq!(ids, [id(&keep)]);
    assert!(
        api.search(&token, "stampede guard").await.is_empty(),
        "its chunks left the index"
    );
    assert_eq!(api.hits_for(&token, "kettle", id(&keep)).await.len(), 1);
    assert_files_are(app.data_dir(), &[id(&keep)]);

    // The stored events about it (and its job) became tombstones.
    let mut replay = connect_since(&app, &token, 0).await;
    let events = replay.next_events(usize::try_from(head + 1).expect("fits")).await;
    assert_consecutive(&events, 1);
    let job_id = {
        let keep_jobs = api.jobs(&token, id(&keep)).await;
        assert_eq!(keep_jobs.len(), 1);
        keep_jobs[0]["id"].clone()
    };
    let mut tombstones = 0;
    for event in &events[..events.len() - 1] {
        let data = &event["data"];
        let about_keep =
            data["id"] == keep["id"] || data["document_id"] == keep["id"] || data["id"] == job_id;
        if about_keep {
            assert_ne!(
                data["deleted"],
                json!(true),
                "the kept document's events stay: {event}"
            );
            continue;
        }
        assert_eq!(data["deleted"], json!(true), "a tombstone: {event}");
        let keys: Vec<&String> = data.as_object().expect("data").keys().collect();
        assert_eq!(keys.len(), 2, "a tombstone is {{id, deleted}}: {event}");
        assert!(
            !event.to_string().contains("notes.md"),
            "no trace of the deleted document: {event}"
        );
        tombstones += 1;
    }
    assert!(
        tombstones >= 7,
        "created, job queued, progress and ready: {tombstones}"
    );
    assert_eq!(
        types(&events[events.len() - 1..]),
        ["document.deleted"],
        "the deletion itself is the last event"
    );
    replay.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_never_reach_my_documents() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let alice = api.register("alice@example.com").await;
    let (bob, _) = app.register("bob@example.com", PASSWORD).await;
    let doc = api.upload_ready(&alice, "notes.md", &fixture("notes.md")).await;
    let path = format!("/api/documents/{}", id(&doc));

    for sub in ["", "/file", "/jobs"] {
        api.get(&format!("{path}{sub}"), &bob)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    api.post_empty(&format!("{path}/reprocess"), &bob)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    api.delete(&path, &bob)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let listed = api.get("/api/documents", &bob).await;
    assert_eq!(listed.expect(StatusCode::OK)["items"], json!([]));
    assert_eq!(api.search(&bob, "stampede guard").await, Vec::<Value>::new());

    // Bob's chat cites nothing of Alice's.
    let conversation = app.create_conversation(&bob, None).await;
    let reply = ask(&app, &bob, &conversation, "What does the stampede guard do?").await;
    assert_eq!(reply["sources"], json!([]), "{reply}");
    assert!(
        !reply["content"].as_str().unwrap_or_default().contains("staggers"),
        "{reply}"
    );

    // Alice's document is untouched, and still hers.
    let still = api.document(&alice, id(&doc)).await;
    assert_eq!(still["status"], json!("ready"));
    assert_eq!(
        api.jobs(&alice, id(&doc)).await.len(),
        1,
        "Bob's reprocess made no job"
    );
    assert!(!api.hits_for(&alice, "stampede", id(&doc)).await.is_empty());
    api.get("/api/documents/not-an-id", &alice)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}
