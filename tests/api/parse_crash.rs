//! The real binary and its `ragd parse` children: a server SIGKILLed while a
//! job runs is rescued at the next start (attempt closed "interrupted",
//! requeued with `retry_count + 1`, then succeeds, chunks indexed once),
//! no parser child outlives the killed server, and a second server on the
//! same data dir is refused by the lock. Needs `--features test-hooks`.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::{Server, ragd};
use crate::doc_helpers::{Api, assert_cause_first, directed, id, statuses_of, summary, until_document};
use crate::ws_helpers::{Cred, assert_consecutive, connect_at, id_of};

/// Longest wait for a process to appear or go away.
const PROCESS_WAIT: Duration = Duration::from_secs(10);

/// Pids of the `ragd parse` processes whose parent is `parent`.
fn parse_children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&pid| stat_of(pid).is_some_and(|(_, ppid)| ppid == parent) && is_parser(pid))
        .collect()
}

/// `(state, ppid)` from `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether the process runs `<ragd> parse ...`.
fn is_parser(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.len() >= 2 && args[0].ends_with(b"ragd") && args[1] == b"parse"
}

/// Whether the parser process `pid` still runs (a zombie does not).
fn parser_alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != 'Z') && is_parser(pid)
}

/// Waits for the server's parser child to appear; returns its pid.
async fn wait_for_parser_of(server: &Server) -> u32 {
    let pid = server.child.id().expect("the server runs");
    let deadline = tokio::time::Instant::now() + PROCESS_WAIT;
    loop {
        if let Some(&child) = parse_children_of(pid).first() {
            return child;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `ragd parse` child of the server within {PROCESS_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to `wait` for the process to go; whether it went.
async fn gone_within(pid: u32, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while parser_alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

const ENV: [(&str, &str); 2] = [("RAGD_WORKERS", "1"), ("RAGD_JOB_RETRY_BASE", "50ms")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_when_the_server_is_killed_is_rescued_and_indexed_once() {
    let dir = tempfile::Builder::new()
        .prefix("ragd-parse-crash-")
        .tempdir()
        .expect("a temp data dir");
    let mut server = Server::start(dir.path(), &ENV).await;
    let api = Api::at(&server.address);
    let token = api.register("killed@example.com").await;
    let mut ws = connect_at(&server.address, Cred::Bearer(&token), "").await;
    let text = "The narwhal has a long spiral tusk. Narwhals live in Arctic waters.";
    let doc = api
        .upload_ok(&token, "narwhal.txt", &directed("sleep:3000", text))
        .await;
    // The job's `running` comes first, then the document's `parsing`.
    let before = until_document(&mut ws, id(&doc), "parsing").await;
    let last_seen = id_of(before.last().expect("an event"));
    let parser = wait_for_parser_of(&server).await;
    drop(ws);

    server.kill().await;
    assert!(
        gone_within(parser, PROCESS_WAIT).await,
        "the `ragd parse` child {parser} of the killed server still runs after {PROCESS_WAIT:?}"
    );

    // The next start, on the same data dir: the real binary again.
    let server = Server::start(dir.path(), &ENV).await;
    let api = Api::at(&server.address);
    let mut replay = connect_at(
        &server.address,
        Cred::Bearer(&token),
        &format!("since={last_seen}"),
    )
    .await;
    let after = until_document(&mut replay, id(&doc), "ready").await;
    assert_consecutive(&after, last_seen + 1);
    assert_eq!(
        statuses_of(&after, "document.status_updated"),
        ["queued", "parsing", "ingesting", "ready"],
        "never left parsing: requeued at start-up, then parsed again: {:?}",
        summary(&after)
    );
    assert_eq!(
        assert_cause_first(&after),
        4,
        "the rescue's events, cause first: {:?}",
        summary(&after)
    );
    let rescued = after
        .iter()
        .find(|e| e["type"] == json!("job.status_updated"))
        .map(|e| e["data"].clone())
        .expect("a job event");
    assert_eq!(rescued["status"], json!("queued"), "{rescued}");
    assert_eq!(
        rescued["retry_count"],
        json!(1),
        "the interruption cost a retry: {rescued}"
    );
    assert_eq!(rescued["attempts"][0]["error"], json!("interrupted"), "{rescued}");
    assert!(!rescued["attempts"][0]["finished_at"].is_null(), "{rescued}");

    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    assert_eq!(job["retry_count"], json!(1), "{job}");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{job}");
    assert_eq!(attempts[0]["error"], json!("interrupted"));
    assert_eq!(attempts[1]["error"], Value::Null);

    let ready = api.document(&token, id(&doc)).await;
    let hits = api.hits_for(&token, "narwhal", id(&doc)).await;
    assert_eq!(
        Some(hits.len() as u64),
        ready["chunk_count"].as_u64(),
        "chunks are indexed once: {hits:?}"
    );
    assert_eq!(hits.len(), 1, "{hits:?}");
    let listed = api.get("/api/documents", &token).await;
    for item in listed.expect(StatusCode::OK)["items"].as_array().expect("items") {
        assert_ne!(item["status"], json!("parsing"), "{item}");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parser_child_outlives_a_killed_server_even_mid_file() {
    let dir = tempfile::Builder::new()
        .prefix("ragd-orphan-")
        .tempdir()
        .expect("a temp data dir");
    let env = [("RAGD_WORKERS", "1"), ("RAGD_JOB_TIMEOUT", "10m")];
    let mut server = Server::start(dir.path(), &env).await;
    let api = Api::at(&server.address);
    let token = api.register("orphan@example.com").await;
    let doc = api
        .upload_ok(&token, "spin.txt", &directed("loop", "never parsed"))
        .await;
    api.wait_for_status(&token, id(&doc), "parsing").await;
    let parser = wait_for_parser_of(&server).await;

    server.kill().await;
    // Generous: the child notices within 200 ms, but a loaded machine may
    // schedule its watcher thread late.
    let gone = gone_within(parser, Duration::from_secs(15)).await;
    if !gone {
        // Do not leave it spinning for the rest of the suite.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &parser.to_string()])
            .status();
    }
    assert!(
        gone,
        "the `ragd parse` child {parser} busy with a file kept running 15 s after its server was \
         SIGKILLed (ARCHITECTURE: no child outlives a killed server)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_data_dir_names_the_lock_and_the_first_keeps_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &ENV).await;
    let api = Api::at(&server.address);
    let token = api.register("lock@example.com").await;

    let data_dir = dir.path().display().to_string();
    let mut second = ragd();
    second
        .args(["serve", "--data-dir", &data_dir, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(30), second.output())
        .await
        .expect("the second server exits")
        .expect("run ragd serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the second server must fail: {stderr}");
    assert!(stderr.contains("ragd.lock"), "the error names the lock: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The first one still serves, documents included.
    let health = api
        .client
        .get(api.url("/healthz"))
        .send()
        .await
        .expect("reach it");
    assert_eq!(health.status(), StatusCode::OK);
    let doc = api
        .upload_ready(&token, "still.txt", b"the first server still parses")
        .await;
    assert_eq!(api.hits_for(&token, "parses", id(&doc)).await.len(), 1);
    drop(server);
}
