//! A full disk, for real: the binary runs with its data dir on a small
//! tmpfs, mounted in a private mount namespace (`unshare`, util-linux) that
//! lives and dies with the process, so nothing is mounted on the host.
//! Uploads that do not fit are 507 with nothing stored; the server keeps
//! serving; deleting documents still works (the disk reserve), and once
//! space is freed the next upload goes through to `ready`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::process::Command;

use crate::cli::{BIN, Server, without_caller_settings};
use crate::doc_helpers::Api;
use crate::helpers::{TestApp, TestResponse};

/// Size of the tmpfs: room for the database, the reserve and a few uploads.
const DISK_KIB: u32 = 3 * 1024;
/// `--disk-reserve-mb`.
const RESERVE_MIB: u32 = 1;
/// Each upload: 400 KB of text, so that the disk fills within a few.
const UPLOAD_BYTES: usize = 400_000;

/// ragd serving a data dir on a fresh tmpfs of `DISK_KIB` under `dir`.
async fn on_a_small_disk(dir: &std::path::Path) -> Server {
    // `-r` maps the caller to root in a new user namespace, which may mount
    // a tmpfs in its own mount namespace (`-m`) with or without real root.
    let script = r#"mount -t tmpfs -o size="$1"k ragd-test "$0" &&
        exec "$2" --data-dir "$0/data" --listen 127.0.0.1:0 --disk-reserve-mb "$3" --sweep-interval 1h"#;
    let mut command = without_caller_settings(Command::new("unshare"));
    command
        .args(["-r", "-m", "sh", "-c", script])
        .arg(dir)
        .arg(DISK_KIB.to_string())
        .arg(BIN)
        .arg(RESERVE_MIB.to_string());
    Server::spawn(command).await
}

/// Small uploads that take the last free blocks.
const SMALL_BYTES: usize = 4_000;

/// Uploads `bytes`-byte text files until one is refused; returns that answer.
async fn fill(api: &Api, token: &str, accepted: &mut Vec<String>, bytes: usize) -> TestResponse {
    for _ in 0..DISK_KIB as usize * 1024 / bytes {
        let n = accepted.len();
        let text = format!("upload {n:03} ").repeat(bytes / 11);
        let response = api.upload(token, &format!("f{n}.txt"), text.as_bytes()).await;
        match response.status {
            StatusCode::CREATED => {
                accepted.push(response.body["id"].as_str().expect("an id").to_owned());
            }
            StatusCode::INSUFFICIENT_STORAGE => return response,
            other => panic!("upload {n}: {other} {}", response.text),
        }
    }
    panic!("{} uploads fitted on a {DISK_KIB} KiB disk", accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_with_nothing_stored_and_uploads_resume_once_space_is_freed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = on_a_small_disk(dir.path()).await;
    let api = Api::at(&server.address);
    let token = api.register("full@example.com").await;

    // Big uploads until one does not fit, then small ones for the last
    // free blocks (a refused upload frees what it had written).
    let mut accepted = Vec::new();
    let full = fill(&api, &token, &mut accepted, UPLOAD_BYTES).await;
    assert!(!accepted.is_empty(), "the first upload fits");
    fill(&api, &token, &mut accepted, SMALL_BYTES).await;
    assert_eq!(
        full.body["error"]["code"],
        json!("insufficient_storage"),
        "{}",
        full.text
    );
    assert!(full.header("retry-after").is_some(), "507 says when to retry");

    assert!(
        accepted.len() < 200,
        "{} uploads fitted: more than one page of the listing",
        accepted.len()
    );
    // Nothing of the refused upload was kept; the server keeps serving.
    let listed = api.get("/api/documents?limit=200", &token).await;
    let listed: Vec<&str> = listed.expect(StatusCode::OK)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("an id"))
        .collect();
    let expected: Vec<&str> = accepted.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, expected, "exactly the accepted uploads, newest first");
    assert_eq!(api.get("/healthz", &token).await.status, StatusCode::OK);

    // Deleting still works on the full disk: the first delete needs the
    // reserve (without it, it is 507). Freeing space lets the next upload
    // through, all the way to ready. (The periodic sweep, which would take
    // the reserve back, does not run meanwhile.)
    for id in &accepted {
        let deleted = api.delete(&format!("/api/documents/{id}"), &token).await;
        assert_eq!(
            deleted.status,
            StatusCode::NO_CONTENT,
            "delete {id}; log:\n{}",
            server.log()
        );
    }
    assert!(
        server.log().contains("released the disk reserve"),
        "the deletes needed the reserve; log:\n{}",
        server.log()
    );
    let text = "upload 999 ".repeat(UPLOAD_BYTES / 11);
    let response = api.upload(&token, "f999.txt", text.as_bytes()).await;
    assert_eq!(
        server.log().matches("disk reserve in place").count(),
        2,
        "the upload put the reserve back first; log:\n{}",
        server.log()
    );
    assert_eq!(
        response.status,
        StatusCode::CREATED,
        "an upload after freeing space"
    );
    let id = response.body["id"].as_str().expect("an id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let doc = api.document(&token, &id).await;
        if doc["status"] == json!("ready") {
            break;
        }
        assert_ne!(doc["status"], json!("failed"), "{doc}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload after freeing space is not ready within 60 s: {}; log:\n{}",
            doc["status"],
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.terminate().await.code(), Some(0));
}

/// No full disk needed: a reserve larger than any disk is never in place,
/// which is how a nearly full disk looks to ragd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_507_while_the_disk_reserve_cannot_be_in_place() {
    let app = TestApp::spawn_with(&["--disk-reserve-mb", "1000000000"]).await;
    let api = Api::of(&app);
    let token = api.register("reserve@example.com").await;

    let refused = api.upload(&token, "a.txt", b"some text").await;
    refused.expect_error(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage");
    assert!(refused.header("retry-after").is_some(), "507 says when to retry");
    let listed = api.get("/api/documents", &token).await;
    assert_eq!(
        listed.expect(StatusCode::OK)["items"],
        json!([]),
        "nothing stored"
    );
    // The rest of the server works as usual.
    let conversation = app.create_conversation(&token, Some("still here")).await;
    assert_eq!(conversation["title"], json!("still here"));
}
