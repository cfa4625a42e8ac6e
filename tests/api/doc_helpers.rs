//! Document helpers (API.md "Documents", "Parse jobs"): multipart uploads
//! built byte for byte as a browser sends them, the fixtures, bounded waits
//! for a document status over `/ws`, and checks of the document and job
//! objects. They talk to any server address, so the same helpers drive an
//! in-process `TestApp` and the real binary.
// Some helpers serve only the fault-injection tests (feature test-hooks).
#![cfg_attr(not(feature = "test-hooks"), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, TestResponse, assert_timestamp};
use crate::ws_helpers::{Cred, Ending, Ws, assert_event, connect_at};

/// Longest wait for a document to reach a status.
pub const WAIT_STATUS: Duration = Duration::from_secs(20);
/// The multipart boundary of every upload the tests build.
pub const BOUNDARY: &str = "ragd-test-boundary-4f0c9a1e7d2b";
const MIB: usize = 1 << 20;

/// A client for one server address. It keeps no idle connections, so a
/// server that stops never waits for this client.
#[derive(Clone)]
pub struct Api {
    pub address: String,
    pub client: reqwest::Client,
}

/// The bytes of `tests/fixtures/<name>` (copies of shared/fixtures).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read the fixture {}: {e}", path.display()))
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Lower-case hex SHA-256, as the document's `sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The start of a `multipart/form-data` body with one `file` part, as a
/// browser writes it: the filename raw (UTF-8), only `"` escaped.
pub fn multipart_head(filename: &str, part_type: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
         Content-Type: {part_type}\r\n\r\n",
        filename.replace('"', "%22")
    )
    .into_bytes()
}

/// The end of the body started by [`multipart_head`].
pub fn multipart_tail() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

/// A whole one-file form.
pub fn multipart(filename: &str, part_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = multipart_head(filename, part_type);
    body.extend_from_slice(bytes);
    body.extend_from_slice(&multipart_tail());
    body
}

/// A form whose file part is `size` bytes of text, streamed in 1 MiB
/// pieces that all share one buffer (never built in memory), with or
/// without a `Content-Length`.
pub fn streamed_form(filename: &str, size: usize, declare_length: bool) -> (reqwest::Body, Option<u64>) {
    let head = bytes_of(multipart_head(filename, "text/plain"));
    let tail = bytes_of(multipart_tail());
    let piece = bytes_of(vec![b'a'; MIB]);
    let total = head.len() + size + tail.len();
    let mut pieces = vec![head];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        pieces.push(piece.slice(..n));
        left -= n;
    }
    pieces.push(tail);
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let length = declare_length.then(|| u64::try_from(total).expect("fits in u64"));
    (reqwest::Body::wrap_stream(stream), length)
}

fn bytes_of(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

impl Api {
    /// The in-process server's address, with a fresh client.
    pub fn of(app: &TestApp) -> Api {
        Api::at(&app.address)
    }

    /// Any server address (`http://host:port`).
    pub fn at(address: &str) -> Api {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build an HTTP client");
        Api {
            address: address.to_owned(),
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        read(self.client.get(self.url(path)).bearer_auth(token)).await
    }

    /// The raw bytes of a GET (asserting 200), for binary downloads.
    pub async fn get_bytes(&self, path: &str, token: &str) -> Vec<u8> {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("reach the server");
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.bytes().await.expect("read the body").to_vec()
    }

    pub async fn post_empty(&self, path: &str, token: &str) -> TestResponse {
        read(self.client.post(self.url(path)).bearer_auth(token)).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        let mut builder = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        read(builder).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> TestResponse {
        read(self.client.delete(self.url(path)).bearer_auth(token)).await
    }

    /// Registers an account (asserting 201) and returns its token.
    pub async fn register(&self, email: &str) -> String {
        let response = self
            .post_json(
                "/api/auth/register",
                None,
                &json!({"email": email, "password": crate::helpers::PASSWORD}),
            )
            .await;
        let body = response.expect(StatusCode::CREATED);
        body["token"].as_str().expect("a token").to_owned()
    }

    /// `POST /api/documents` with one `file` part (part type
    /// `application/octet-stream`: the server must not trust it).
    pub async fn upload(&self, token: &str, filename: &str, bytes: &[u8]) -> TestResponse {
        self.upload_with(token, filename, "application/octet-stream", bytes, &[])
            .await
    }

    /// An upload with the part's content type and extra headers chosen.
    pub async fn upload_with(
        &self,
        token: &str,
        filename: &str,
        part_type: &str,
        bytes: &[u8],
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut builder = self
            .client
            .post(self.url("/api/documents"))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart(filename, part_type, bytes));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        read(builder).await
    }

    /// Uploads (asserting 201 and a `queued` document) and returns it.
    pub async fn upload_ok(&self, token: &str, filename: &str, bytes: &[u8]) -> Value {
        let response = self.upload(token, filename, bytes).await;
        let doc = response.expect(StatusCode::CREATED).clone();
        assert_document(&doc);
        assert_eq!(doc["status"], json!("queued"), "a new upload is queued: {doc}");
        assert_eq!(doc["size_bytes"], json!(bytes.len()), "{doc}");
        assert_eq!(doc["sha256"], json!(sha256_hex(bytes)), "{doc}");
        doc
    }

    /// Uploads and waits for `ready`; returns the ready document.
    pub async fn upload_ready(&self, token: &str, filename: &str, bytes: &[u8]) -> Value {
        let doc = self.upload_ok(token, filename, bytes).await;
        self.wait_for_status(token, id(&doc), "ready").await
    }

    /// A streamed upload; `Err` when the client could not complete the
    /// exchange (e.g. the server closed the connection without answering).
    pub async fn upload_stream(
        &self,
        token: &str,
        body: reqwest::Body,
        length: Option<u64>,
    ) -> Result<TestResponse, reqwest::Error> {
        let mut builder = self
            .client
            .post(self.url("/api/documents"))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body);
        if let Some(length) = length {
            builder = builder.header("content-length", length.to_string());
        }
        let response = builder.send().await?;
        Ok(into_test_response(response).await)
    }

    /// `GET /api/documents/{id}` asserting 200.
    pub async fn document(&self, token: &str, doc_id: &str) -> Value {
        let response = self.get(&format!("/api/documents/{doc_id}"), token).await;
        let doc = response.expect(StatusCode::OK).clone();
        assert_document(&doc);
        doc
    }

    /// `GET /api/documents/{id}/jobs` asserting 200; the jobs, newest first.
    pub async fn jobs(&self, token: &str, doc_id: &str) -> Vec<Value> {
        let response = self.get(&format!("/api/documents/{doc_id}/jobs"), token).await;
        let body = response.expect(StatusCode::OK);
        let items = body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("jobs come as {{\"items\":[...]}}: {body}"))
            .clone();
        for job in &items {
            assert_job(job);
            assert_eq!(job["document_id"], json!(doc_id), "{job}");
        }
        items
    }

    /// The only job of a document.
    pub async fn only_job(&self, token: &str, doc_id: &str) -> Value {
        let jobs = self.jobs(token, doc_id).await;
        assert_eq!(jobs.len(), 1, "one job: {}", Value::from(jobs.clone()));
        jobs[0].clone()
    }

    /// `GET /api/search?q=` (asserting 200); the items.
    pub async fn search(&self, token: &str, q: &str) -> Vec<Value> {
        self.search_query(token, &[("q", q)]).await
    }

    pub async fn search_query(&self, token: &str, query: &[(&str, &str)]) -> Vec<Value> {
        let response = self.search_raw(token, query).await;
        let body = response.expect(StatusCode::OK);
        let items = body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("search answers {{\"items\":[...]}}: {body}"))
            .clone();
        for item in &items {
            assert_hit(item);
        }
        items
    }

    pub async fn search_raw(&self, token: &str, query: &[(&str, &str)]) -> TestResponse {
        read(
            self.client
                .get(self.url("/api/search"))
                .query(query)
                .bearer_auth(token),
        )
        .await
    }

    /// The hits of `q` that belong to `doc_id`.
    pub async fn hits_for(&self, token: &str, q: &str, doc_id: &str) -> Vec<Value> {
        self.search_query(token, &[("q", q), ("limit", "50")])
            .await
            .into_iter()
            .filter(|h| h["document_id"] == json!(doc_id))
            .collect()
    }

    /// Waits (over `/ws`, at most [`WAIT_STATUS`]) until the document has
    /// `status`; returns it. Fails at once when it reaches the other end
    /// state (`ready` while waiting for `failed`, or the reverse).
    pub async fn wait_for_status(&self, token: &str, doc_id: &str, status: &str) -> Value {
        // The socket opens before the first look, so no change is missed.
        let mut ws = connect_at(&self.address, Cred::Bearer(token), "").await;
        let doc = self.document(token, doc_id).await;
        if self.reached(token, &doc, status).await {
            return doc;
        }
        let deadline = tokio::time::Instant::now() + WAIT_STATUS;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match ws.try_next_frame(left).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    let doc = self.document(token, doc_id).await;
                    let jobs = self.jobs(token, doc_id).await;
                    panic!(
                        "document {doc_id} did not become {status} within {WAIT_STATUS:?}; now: {doc}; \
                         jobs: {}",
                        Value::from(jobs)
                    );
                }
                Err(Ending::Close(code)) => panic!("the socket closed ({code:?}) while waiting"),
                Err(Ending::Dropped(why)) => panic!("the socket dropped while waiting: {why}"),
            };
            if frame["id"].is_null() {
                continue; // a control frame
            }
            assert_event(&frame);
            if frame["type"] == json!("document.status_updated") && frame["data"]["id"] == json!(doc_id) {
                let doc = frame["data"].clone();
                assert_document(&doc);
                if self.reached(token, &doc, status).await {
                    return doc;
                }
            }
            if frame["type"] == json!("document.deleted") && frame["data"]["id"] == json!(doc_id) {
                panic!("document {doc_id} was deleted while waiting for {status}");
            }
        }
    }

    /// Whether `doc` has `status`; panics when it is in the other end state.
    async fn reached(&self, token: &str, doc: &Value, status: &str) -> bool {
        let now = doc["status"].as_str().unwrap_or_default();
        if now == status {
            return true;
        }
        let terminal = ["ready", "failed"];
        if terminal.contains(&now) && terminal.contains(&status) {
            let jobs = self.jobs(token, id(doc)).await;
            panic!(
                "document {} ended {now}, expected {status}: {doc}; jobs: {}",
                id(doc),
                Value::from(jobs)
            );
        }
        false
    }
}

/// The `id` of an object.
#[track_caller]
pub fn id(value: &Value) -> &str {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an object with a string id: {value}"))
}

async fn read(builder: reqwest::RequestBuilder) -> TestResponse {
    let response = builder.send().await.expect("the request reaches the server");
    into_test_response(response).await
}

async fn into_test_response(response: reqwest::Response) -> TestResponse {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("read the response body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    TestResponse {
        status,
        headers,
        text,
        body,
    }
}

/// The names in `<data-dir>/files/`, sorted (none when it does not exist).
pub fn files_in(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("files")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Asserts `files/` holds exactly one file per listed document, named by
/// its id (no temp `.upload-*` file, nothing else).
#[track_caller]
pub fn assert_files_are(data_dir: &Path, doc_ids: &[&str]) {
    let mut expected: Vec<String> = doc_ids.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(
        files_in(data_dir),
        expected,
        "<data-dir>/files holds exactly the stored documents, named by id"
    );
}

/// Asserts the document object of API.md.
#[track_caller]
pub fn assert_document(doc: &Value) {
    let object = doc
        .as_object()
        .unwrap_or_else(|| panic!("a document is a JSON object: {doc}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "chunk_count",
            "content_type",
            "created_at",
            "error",
            "filename",
            "id",
            "sha256",
            "size_bytes",
            "status",
            "updated_at"
        ],
        "document fields: {doc}"
    );
    assert!(doc["id"].as_str().is_some_and(|s| !s.is_empty()), "{doc}");
    assert!(doc["filename"].is_string(), "{doc}");
    assert!(doc["content_type"].is_string(), "{doc}");
    assert!(doc["size_bytes"].is_u64(), "{doc}");
    assert!(
        doc["sha256"]
            .as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())),
        "sha256 is 64 hex digits: {doc}"
    );
    let status = doc["status"].as_str().unwrap_or_default();
    assert!(
        ["queued", "parsing", "ingesting", "ready", "failed"].contains(&status),
        "document status: {doc}"
    );
    assert!(doc["error"].is_null() || doc["error"].is_string(), "{doc}");
    assert!(doc["chunk_count"].is_u64(), "{doc}");
    assert_timestamp(&doc["created_at"]);
    assert_timestamp(&doc["updated_at"]);
}

/// Asserts the job object of API.md, attempts included.
#[track_caller]
pub fn assert_job(job: &Value) {
    let object = job
        .as_object()
        .unwrap_or_else(|| panic!("a job is a JSON object: {job}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "attempts",
            "created_at",
            "document_id",
            "id",
            "last_error",
            "max_retries",
            "retry_count",
            "run_after",
            "status",
            "updated_at"
        ],
        "job fields: {job}"
    );
    let status = job["status"].as_str().unwrap_or_default();
    assert!(
        ["queued", "running", "succeeded", "failed", "cancelled"].contains(&status),
        "job status: {job}"
    );
    assert!(job["retry_count"].is_u64(), "{job}");
    assert!(job["max_retries"].is_u64(), "{job}");
    assert!(
        job["last_error"].is_null() || job["last_error"].is_string(),
        "{job}"
    );
    assert_timestamp(&job["run_after"]);
    assert_timestamp(&job["created_at"]);
    assert_timestamp(&job["updated_at"]);
    let attempts = job["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("attempts is an array: {job}"));
    for (i, attempt) in attempts.iter().enumerate() {
        let object = attempt
            .as_object()
            .unwrap_or_else(|| panic!("an attempt is an object: {job}"));
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error", "finished_at", "n", "started_at"], "{job}");
        assert_eq!(
            attempt["n"],
            json!(i + 1),
            "attempts are numbered 1, 2, ...: {job}"
        );
        assert_timestamp(&attempt["started_at"]);
        if !attempt["finished_at"].is_null() {
            assert_timestamp(&attempt["finished_at"]);
        }
        assert!(
            attempt["error"].is_null() || attempt["error"].is_string(),
            "{job}"
        );
    }
}

/// Asserts a search item `{"document_id","filename","chunk_id","snippet","score"}`.
#[track_caller]
pub fn assert_hit(hit: &Value) {
    let object = hit
        .as_object()
        .unwrap_or_else(|| panic!("a search item is an object: {hit}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["chunk_id", "document_id", "filename", "score", "snippet"],
        "search item fields: {hit}"
    );
    assert!(hit["chunk_id"].is_string(), "chunk_id is a string: {hit}");
    assert!(hit["snippet"].is_string(), "{hit}");
    assert!(hit["score"].is_number(), "{hit}");
}

/// Whether any of `hits` shows `needle` (case-insensitively) in its snippet.
pub fn snippets_contain(hits: &[Value], needle: &str) -> bool {
    let needle = needle.to_lowercase();
    hits.iter().any(|h| {
        h["snippet"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains(&needle))
    })
}

/// A `.txt` upload whose parser child follows `directive`, then indexes `text`.
pub fn directed(directive: &str, text: &str) -> Vec<u8> {
    format!("RAGD-TEST:{directive}\n{text}").into_bytes()
}

/// Whether an event is about the document (its own events or its jobs').
pub fn about(event: &Value, doc_id: &str) -> bool {
    let data = &event["data"];
    match event["type"].as_str().unwrap_or_default() {
        "job.status_updated" => data["document_id"] == json!(doc_id),
        _ => data["id"] == json!(doc_id),
    }
}

/// Reads events (at most [`WAIT_STATUS`]) until `stop` holds for one about
/// the document; returns the document's events, that one included.
pub async fn events_until(
    ws: &mut Ws,
    doc_id: &str,
    what: &str,
    mut stop: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT_STATUS;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = match ws.try_next_frame(left).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!(
                "{what} did not happen within {WAIT_STATUS:?}; events about the document: {:?}",
                summary(&seen)
            ),
            Err(ending) => panic!("the socket ended while waiting for {what}: {ending:?}"),
        };
        if frame["id"].is_null() {
            continue;
        }
        assert_event(&frame);
        if !about(&frame, doc_id) {
            continue;
        }
        let done = stop(&frame);
        seen.push(frame);
        if done {
            return seen;
        }
    }
}

/// Until the document has `status`.
pub async fn until_document(ws: &mut Ws, doc_id: &str, status: &str) -> Vec<Value> {
    events_until(ws, doc_id, &format!("document {status}"), |e| {
        e["type"] == json!("document.status_updated") && e["data"]["status"] == json!(status)
    })
    .await
}

/// Until the document has `doc_status` and its job `job_status` (both
/// change in one transaction, in either order).
pub async fn until_settled(ws: &mut Ws, doc_id: &str, doc_status: &str, job_status: &str) -> Vec<Value> {
    let (mut doc_done, mut job_done) = (false, false);
    let what = format!("document {doc_status} and job {job_status}");
    events_until(ws, doc_id, &what, |e| {
        let status = &e["data"]["status"];
        if e["type"] == json!("document.status_updated") {
            doc_done = status == &json!(doc_status);
        } else if e["type"] == json!("job.status_updated") {
            job_done = status == &json!(job_status);
        }
        doc_done && job_done
    })
    .await
}

/// `type status` of each event, e.g. `document parsing`, `job running#1`
/// (job events with their number of attempts).
pub fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let data = &e["data"];
            match e["type"].as_str().unwrap_or_default() {
                "job.status_updated" => format!(
                    "job {}#{}",
                    data["status"].as_str().unwrap_or("?"),
                    data["attempts"].as_array().map_or(0, Vec::len)
                ),
                "document.status_updated" => {
                    format!("document {}", data["status"].as_str().unwrap_or("?"))
                }
                other => other.to_owned(),
            }
        })
        .collect()
}

pub fn statuses_of(events: &[Value], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == json!(kind))
        .map(|e| e["data"]["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The job status a document status follows from (API.md "Parse jobs").
fn job_status_behind(doc_status: &str) -> &'static str {
    match doc_status {
        "parsing" | "ingesting" => "running",
        "ready" => "succeeded",
        "failed" => "failed",
        "queued" => "queued",
        other => panic!("unknown document status {other}"),
    }
}

/// Events are numbered cause first: applied in id order, every
/// `document.status_updated` finds the document's job (as its latest
/// `job.status_updated` left it) already in the status that causes it,
/// never still `running` when the document is `ready`. Panics with the
/// sequence otherwise; returns how many document events it checked.
#[track_caller]
pub fn assert_cause_first(events: &[Value]) -> usize {
    let mut job_of: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut checked = 0;
    for (n, event) in events.iter().enumerate() {
        let data = &event["data"];
        match event["type"].as_str().unwrap_or_default() {
            "job.status_updated" => {
                let doc = data["document_id"].as_str().unwrap_or_default().to_owned();
                job_of.insert(doc, data["status"].as_str().unwrap_or_default().to_owned());
            }
            "document.status_updated" => {
                let doc = data["id"].as_str().unwrap_or_default();
                let status = data["status"].as_str().unwrap_or_default();
                let job = job_of.get(doc).map(String::as_str);
                assert_eq!(
                    job,
                    Some(job_status_behind(status)),
                    "event {n} makes the document {status} while its job is {job:?}: the job's \
                     event must come first: {:?}",
                    summary(events)
                );
                checked += 1;
            }
            _ => {}
        }
    }
    checked
}
