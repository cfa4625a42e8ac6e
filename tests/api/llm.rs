//! The `openai` answer provider (`--llm-provider openai`) against a small
//! OpenAI-compatible server started inside the tests: a real HTTP/1.1
//! server on a real socket that serves `/v1/models` and
//! `/v1/chat/completions` from a script (server-sent event chunks with
//! delays, status codes and bodies, a server that never answers, a stream
//! cut before `[DONE]`, garbage) and records every request it receives.
//!
//! What is asserted is what a user of ragd sees: `message.delta` frames and
//! events on `/ws`, the messages over HTTP, the reply's status and error
//! text, the server's logs; and what the model server sees: the prompt, the
//! flags' fields, the API key, and the connection being dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::chat::{
    ASYNC, all_messages, ask, ask_async, assert_message, cancel_path, messages_path, retry_path,
};
use crate::cli::Server;
use crate::doc_helpers::Api;
use crate::helpers::{PASSWORD, TestApp};
use crate::ws_helpers::{
    Ws, assert_consecutive, assert_control, assert_event, connect, connect_since, types,
};

/// Longest wait for a reply to reach a final status.
const WAIT_FINAL: Duration = Duration::from_secs(15);
/// The model name the tests configure.
const MODEL: &str = "test-model";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// The fake OpenAI-compatible server
// ---------------------------------------------------------------------------

/// How the fake answers a request.
#[derive(Clone, Debug)]
enum Script {
    /// 200 `text/event-stream` (chunked), then these steps; a script that
    /// ends without `Finish`, `Cut` or `Stall` ends the body cleanly.
    Stream(Vec<Step>),
    /// This status with this JSON body.
    Status(u16, String),
    /// Reads the request and never answers (not even headers).
    Hang,
}

#[derive(Clone, Debug)]
enum Step {
    /// One piece of the body, written and flushed as it is.
    Send(Vec<u8>),
    Wait(Duration),
    /// The end of the chunked body (a clean end, `[DONE]` or not).
    Finish,
    /// Closes the connection in the middle of the body.
    Cut,
    /// Sends nothing more and keeps the connection open.
    Stall,
}

/// A request the fake received.
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// When ragd closed the connection (EOF or reset seen by the fake).
    closed: watch::Sender<Option<Instant>>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the request body is JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Waits until ragd has closed the connection; `None` after `within`.
    async fn wait_closed(&self, within: Duration) -> Option<Instant> {
        let mut closed = self.closed.subscribe();
        match tokio::time::timeout(within, closed.wait_for(Option::is_some)).await {
            Ok(Ok(at)) => *at,
            _ => None,
        }
    }
}

struct Shared {
    chat: Mutex<Script>,
    models: Mutex<Script>,
    requests: Mutex<Vec<Arc<Received>>>,
    arrived: watch::Sender<usize>,
}

/// An OpenAI-compatible server on `127.0.0.1:<ephemeral>`.
struct FakeLlm {
    /// `http://127.0.0.1:<port>/v1`
    base_url: String,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeLlm {
    async fn start(chat: Script) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake model server");
        let port = listener.local_addr().expect("local address").port();
        let models =
            json!({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]});
        let shared = Arc::new(Shared {
            chat: Mutex::new(chat),
            models: Mutex::new(Script::Status(200, models.to_string())),
            requests: Mutex::new(Vec::new()),
            arrived: watch::channel(0).0,
        });
        let state = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(connection(Arc::clone(&state), stream));
                    }
                    Err(_) => tokio::time::sleep(ms(10)).await,
                }
            }
        });
        FakeLlm {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            shared,
            accept,
        }
    }

    fn set_models(&self, script: Script) {
        *self.shared.models.lock().unwrap() = script;
    }

    /// Every request received so far, oldest first.
    fn requests(&self) -> Vec<Arc<Received>> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The `POST /v1/chat/completions` requests so far.
    fn chat_requests(&self) -> Vec<Arc<Received>> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .collect()
    }

    /// Waits (bounded) until a request matching `filter` has arrived.
    async fn wait_for(&self, what: &str, filter: impl Fn(&Received) -> bool) -> Arc<Received> {
        let mut arrived = self.shared.arrived.subscribe();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = self.requests().into_iter().find(|r| filter(r)) {
                return found;
            }
            let seen: Vec<String> = self
                .requests()
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            match tokio::time::timeout_at(deadline, arrived.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("the model server did not receive {what} within 10s; it received {seen:?}"),
            }
        }
    }

    /// The only chat request (asserting there was exactly one).
    fn only_chat_request(&self) -> Arc<Received> {
        let chats = self.chat_requests();
        assert_eq!(
            chats.len(),
            1,
            "one POST /v1/chat/completions expected, got {}",
            chats.len()
        );
        Arc::clone(&chats[0])
    }
}

async fn connection(shared: Arc<Shared>, stream: tokio::net::TcpStream) {
    let (mut reader, mut writer) = stream.into_split();
    let Some((method, path, headers, body)) = read_request(&mut reader).await else {
        return;
    };
    let received = Arc::new(Received {
        method,
        path,
        headers,
        body,
        closed: watch::channel(None).0,
    });
    shared.requests.lock().unwrap().push(Arc::clone(&received));
    shared.arrived.send_modify(|n| *n += 1);
    // The request has been read in full: anything more from ragd's side
    // is its close (EOF) or a reset.
    let watcher = Arc::clone(&received);
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        watcher.closed.send_replace(Some(Instant::now()));
    });
    let script = match (received.method.as_str(), received.path.as_str()) {
        ("GET", "/v1/models") => shared.models.lock().unwrap().clone(),
        ("POST", "/v1/chat/completions") => shared.chat.lock().unwrap().clone(),
        _ => Script::Status(404, json!({"error": {"message": "no such route"}}).to_string()),
    };
    respond(&mut writer, script, &received).await;
}

async fn read_request(
    reader: &mut OwnedReadHalf,
) -> Option<(String, String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = reader.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = reader.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some((method, path, headers, body))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn respond(writer: &mut OwnedWriteHalf, script: Script, received: &Received) {
    match script {
        Script::Hang => {
            received.wait_closed(Duration::from_secs(60)).await;
        }
        Script::Status(code, body) => {
            let head = format!(
                "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                reason(code),
                body.len()
            );
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(body.as_bytes()).await;
            let _ = writer.shutdown().await;
        }
        Script::Stream(steps) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
                        cache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            if writer.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for step in steps {
                match step {
                    Step::Send(bytes) => {
                        let mut chunk = format!("{:x}\r\n", bytes.len()).into_bytes();
                        chunk.extend_from_slice(&bytes);
                        chunk.extend_from_slice(b"\r\n");
                        if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                            return;
                        }
                    }
                    Step::Wait(delay) => tokio::time::sleep(delay).await,
                    Step::Finish => break,
                    Step::Cut => return,
                    Step::Stall => {
                        received.wait_closed(Duration::from_secs(60)).await;
                        return;
                    }
                }
            }
            let _ = writer.write_all(b"0\r\n\r\n").await;
            let _ = writer.shutdown().await;
        }
    }
}

// Pieces of an OpenAI stream.

fn data(value: &Value) -> Step {
    Step::Send(format!("data: {value}\n\n").into_bytes())
}

fn chunk_json(delta: &Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

fn token(text: &str) -> Step {
    data(&chunk_json(&json!({"content": text}), None))
}

fn role_chunk() -> Step {
    data(&chunk_json(&json!({"role": "assistant", "content": ""}), None))
}

fn finish_chunk() -> Step {
    data(&chunk_json(&json!({}), Some("stop")))
}

fn usage_chunk() -> Step {
    data(&json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
    }))
}

fn done_marker() -> Step {
    Step::Send(b"data: [DONE]\n\n".to_vec())
}

/// A well-formed stream: a role chunk, then each token after `every`,
/// then the finish chunk, the usage chunk and `[DONE]`.
fn stream_of(tokens: &[&str], every: Duration) -> Script {
    Script::Stream(stream_steps(tokens, every, true))
}

fn stream_steps(tokens: &[&str], every: Duration, complete: bool) -> Vec<Step> {
    let mut steps = vec![role_chunk()];
    for text in tokens {
        steps.push(Step::Wait(every));
        steps.push(token(text));
    }
    if complete {
        steps.extend([finish_chunk(), usage_chunk(), done_marker(), Step::Finish]);
    }
    steps
}

fn error_body(message: &str) -> String {
    json!({"error": {"message": message, "type": "server_error", "code": null}}).to_string()
}

// ---------------------------------------------------------------------------
// ragd side
// ---------------------------------------------------------------------------

/// A ragd whose answers come from `fake`, with extra flags.
async fn spawn_app(fake: &FakeLlm, extra: &[&str]) -> TestApp {
    spawn_app_at(&fake.base_url, extra).await
}

async fn spawn_app_at(base_url: &str, extra: &[&str]) -> TestApp {
    let mut args = vec![
        "--llm-provider",
        "openai",
        "--llm-base-url",
        base_url,
        "--llm-model",
        MODEL,
    ];
    args.extend_from_slice(extra);
    TestApp::spawn_with(&args).await
}

async fn user_with_conversation(app: &TestApp, email: &str) -> (String, Value) {
    let (token, _) = app.register(email, PASSWORD).await;
    let conversation = app.create_conversation(&token, Some("LLM")).await;
    (token, conversation)
}

/// Sync ask, failing the test if it takes longer than `WAIT_FINAL`.
async fn ask_bounded(app: &TestApp, token: &str, conversation: &Value, question: &str) -> Value {
    tokio::time::timeout(WAIT_FINAL, ask(app, token, conversation, question))
        .await
        .unwrap_or_else(|_| panic!("the reply to {question:?} did not finish within {WAIT_FINAL:?}"))
}

/// A frame and when the client received it.
struct Seen {
    at: Instant,
    frame: Value,
}

fn is_final(frame: &Value) -> bool {
    frame["type"] == json!("message.status_updated")
        && frame["data"]["role"] == json!("assistant")
        && ["done", "error", "cancelled"].contains(&frame["data"]["status"].as_str().unwrap_or_default())
}

/// One line per frame, for failure messages.
fn describe(frames: &[Seen]) -> Vec<String> {
    frames
        .iter()
        .map(|s| {
            let f = &s.frame;
            match f["type"].as_str().unwrap_or_default() {
                "message.delta" => format!(
                    "delta seq={} offset={} {:?}",
                    f["data"]["seq"], f["data"]["offset"], f["data"]["delta"]
                ),
                "message.status_updated" | "message.created" => format!(
                    "{} {} {}",
                    f["type"].as_str().unwrap_or_default(),
                    f["data"]["role"].as_str().unwrap_or_default(),
                    f["data"]["status"].as_str().unwrap_or_default()
                ),
                other => other.to_owned(),
            }
        })
        .collect()
}

/// Reads every frame but heartbeats until an assistant reply reaches a
/// final status (that frame included), failing after `WAIT_FINAL`.
async fn frames_until_final(ws: &mut Ws) -> Vec<Seen> {
    let deadline = Instant::now() + WAIT_FINAL;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match ws.try_next_frame(left).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!(
                "no reply reached a final status within {WAIT_FINAL:?}; frames: {:?}",
                describe(&seen)
            ),
            Err(ending) => panic!(
                "the socket ended while waiting for the reply: {ending:?}; frames: {:?}",
                describe(&seen)
            ),
        };
        if frame["type"] == json!("heartbeat") {
            continue;
        }
        let last = is_final(&frame);
        seen.push(Seen {
            at: Instant::now(),
            frame,
        });
        if last {
            return seen;
        }
    }
}

/// Checks the `message.delta` frames of `reply_id` among `frames`: exact
/// shape, `seq` 0, 1, 2, ..., `offset` = characters before the delta;
/// returns their concatenation.
#[track_caller]
fn check_deltas(frames: &[Seen], reply_id: &Value) -> String {
    let mut text = String::new();
    let mut seq = 0u64;
    for seen in frames {
        let frame = &seen.frame;
        if frame["type"] != json!("message.delta") {
            continue;
        }
        assert_control(frame);
        let data = &frame["data"];
        let mut keys: Vec<&str> = data
            .as_object()
            .unwrap_or_else(|| panic!("delta data is an object: {frame}"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["delta", "message_id", "offset", "seq"],
            "message.delta data: {frame}"
        );
        assert_eq!(
            &data["message_id"], reply_id,
            "a delta of another message: {frame}"
        );
        assert_eq!(
            data["seq"],
            json!(seq),
            "seq counts 0, 1, 2, ... without gaps: {:?}",
            describe(frames)
        );
        assert_eq!(
            data["offset"],
            json!(text.chars().count()),
            "offset is the length in characters of the content before the delta \
             ({} bytes, {} characters so far): {:?}",
            text.len(),
            text.chars().count(),
            describe(frames)
        );
        let delta = data["delta"]
            .as_str()
            .unwrap_or_else(|| panic!("delta is a string: {frame}"));
        assert!(!delta.is_empty(), "no empty delta frames: {frame}");
        text.push_str(delta);
        seq += 1;
    }
    text
}

fn deltas_of(frames: &[Seen]) -> Vec<&Seen> {
    frames
        .iter()
        .filter(|s| s.frame["type"] == json!("message.delta"))
        .collect()
}

fn status_events(frames: &[Seen], reply_id: &Value) -> Vec<String> {
    frames
        .iter()
        .filter(|s| s.frame["type"] == json!("message.status_updated") && &s.frame["data"]["id"] == reply_id)
        .map(|s| s.frame["data"]["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn position(frames: &[Seen], what: impl Fn(&Value) -> bool) -> Option<usize> {
    frames.iter().position(|s| what(&s.frame))
}

/// The reply (the assistant message) among a conversation's messages.
async fn reply_now(app: &TestApp, token: &str, conversation: &Value, reply_id: &Value) -> Value {
    all_messages(app, token, conversation)
        .await
        .into_iter()
        .find(|m| &m["id"] == reply_id)
        .unwrap_or_else(|| panic!("the reply {reply_id} is listed"))
}

fn error_text(reply: &Value) -> String {
    reply["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error reply carries an error text: {reply}"))
        .to_owned()
}

#[track_caller]
fn assert_error_reply(reply: &Value) -> String {
    assert_message(reply);
    assert_eq!(reply["role"], json!("assistant"), "{reply}");
    assert_eq!(
        reply["status"],
        json!("error"),
        "the reply ends as error: {reply}"
    );
    assert_eq!(
        reply["sources"],
        json!([]),
        "a failed reply cites nothing: {reply}"
    );
    let error = error_text(reply);
    assert!(!error.trim().is_empty(), "the error text is not empty: {reply}");
    assert_ne!(error, "interrupted", "a failure is not an interruption: {reply}");
    error
}

fn system_prompt(body: &Value) -> String {
    let messages = body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("the request has messages: {body}"));
    assert_eq!(
        messages[0]["role"],
        json!("system"),
        "the first message is the system prompt: {body}"
    );
    messages[0]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("the system prompt is text: {body}"))
        .to_owned()
}

/// The text of passage `[n] (filename)` in the system prompt.
fn passage(prompt: &str, n: usize, filename: &str) -> Option<String> {
    let header = format!("[{n}] ({filename})\n");
    let start = prompt.find(&header)? + header.len();
    let rest = &prompt[start..];
    let end = rest.find("\n\n[").unwrap_or(rest.len());
    Some(rest[..end].trim().to_owned())
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_as_ordered_deltas_then_done_with_its_sources() {
    let tokens = [
        "The aurora ",
        "was green ",
        "over Tromsø ",
        "at midnight [1]",
        ", then violet ",
        "before dawn [2].",
    ];
    let fake = FakeLlm::start(stream_of(&tokens, ms(80))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "stream@example.com").await;
    let docs = [
        (
            "aurora.txt",
            "The aurora observatory in Tromsø recorded green curtains at midnight.",
        ),
        (
            "aurora-log.txt",
            "Aurora log, second night: the aurora turned violet before dawn.",
        ),
    ];
    let api = Api::of(&app);
    for (name, text) in docs {
        api.upload_ready(&token, name, text.as_bytes()).await;
    }

    let mut ws = connect(&app, &token).await;
    let base = ws.head();
    let question = "What colour was the aurora?";
    let started = Instant::now();
    let request = app.spawn_request(
        Method::POST,
        &messages_path(&conversation),
        Some(&token),
        Some(&json!({"content": question})),
        &[],
    );
    let frames = frames_until_final(&mut ws).await;
    let response = tokio::time::timeout(WAIT_FINAL, request)
        .await
        .expect("the sync POST answers")
        .expect("the request task");
    let reply = response.expect(StatusCode::OK).clone();
    assert_message(&reply);

    let done = &frames.last().expect("a final frame").frame;
    assert_eq!(done["data"]["status"], json!("done"), "{:?}", describe(&frames));
    assert_eq!(
        reply, done["data"],
        "the HTTP response equals the final message of the last event"
    );
    let reply_id = reply["id"].clone();
    let expected: String = tokens.concat();
    assert_eq!(
        reply["content"],
        json!(expected),
        "the reply is exactly what the model streamed"
    );
    assert_eq!(reply["error"], Value::Null, "{reply}");

    // Events: the turn, then pending -> streaming -> done.
    let events: Vec<Value> = frames
        .iter()
        .filter(|s| !s.frame["id"].is_null())
        .map(|s| s.frame.clone())
        .collect();
    for event in &events {
        assert_event(event);
    }
    assert_consecutive(&events, base + 1);
    assert_eq!(
        types(&events),
        [
            "message.created",
            "message.created",
            "message.status_updated",
            "message.status_updated"
        ],
        "{:?}",
        describe(&frames)
    );
    assert_eq!(events[1]["data"]["id"], reply_id);
    assert_eq!(events[1]["data"]["status"], json!("pending"));
    assert_eq!(
        status_events(&frames, &reply_id),
        ["streaming", "done"],
        "the reply goes pending -> streaming -> done: {:?}",
        describe(&frames)
    );

    // Deltas: ordered, consistent, between `streaming` and `done`.
    let streamed = check_deltas(&frames, &reply_id);
    assert_eq!(
        streamed, expected,
        "the deltas concatenate exactly to the final content"
    );
    let deltas = deltas_of(&frames);
    assert!(
        deltas.len() >= 2,
        "tokens 80 ms apart stream as several frames, not one at the end: {:?}",
        describe(&frames)
    );
    let streaming_at = position(&frames, |f| {
        f["type"] == json!("message.status_updated") && f["data"]["status"] == json!("streaming")
    })
    .expect("a streaming event");
    let first_delta = position(&frames, |f| f["type"] == json!("message.delta")).expect("a delta");
    assert!(
        streaming_at < first_delta,
        "the reply is marked streaming before its first delta: {:?}",
        describe(&frames)
    );
    let last = frames.len() - 1;
    assert!(
        frames[..last]
            .iter()
            .rposition(|s| s.frame["type"] == json!("message.delta"))
            .is_some_and(|i| i < last)
            && frames[last].frame["type"] == json!("message.status_updated"),
        "every delta comes before the final event: {:?}",
        describe(&frames)
    );
    let lead = frames[last].at - deltas[0].at;
    assert!(
        lead >= ms(200),
        "the first delta arrives while the model is still streaming (only {lead:?} before done; \
         the stream took about {:?})",
        frames[last].at - started
    );

    // Sources: the passages of the prompt, in order.
    let sources = reply["sources"].as_array().expect("sources");
    assert!(!sources.is_empty(), "retrieval found the documents: {reply}");
    let prompt = system_prompt(&fake.only_chat_request().json());
    for (i, source) in sources.iter().enumerate() {
        let filename = source["filename"].as_str().expect("a filename");
        let text = passage(&prompt, i + 1, filename).unwrap_or_else(|| {
            panic!(
                "sources[{i}] ({filename}) is passage [{}] of the prompt; prompt:\n{prompt}",
                i + 1
            )
        });
        let (_, uploaded) = docs
            .iter()
            .find(|(name, _)| *name == filename)
            .unwrap_or_else(|| panic!("a source names an uploaded file: {source}"));
        assert_eq!(text, *uploaded, "passage [{}] is the text of {filename}", i + 1);
        let snippet = source["snippet"].as_str().expect("a snippet").replace('…', "");
        assert!(
            text.contains(snippet.trim()),
            "sources[{i}].snippet comes from passage [{}]: {snippet:?} vs {text:?}",
            i + 1
        );
    }
    assert!(
        !prompt.contains(&format!("[{}] (", sources.len() + 1)),
        "the prompt numbers exactly the passages that become sources; prompt:\n{prompt}"
    );

    // A reload shows the same reply; deltas are not stored events.
    assert_eq!(reply_now(&app, &token, &conversation, &reply_id).await, reply);
    ws.expect_quiet().await;
    let mut replay = connect_since(&app, &token, base).await;
    let replayed = replay.next_events(4).await;
    assert_eq!(replayed, events, "a replay has the events and no delta frames");
    replay.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_tokens_are_coalesced_into_a_few_frames() {
    let words: Vec<String> = (0..60).map(|i| format!("w{i} ")).collect();
    let tokens: Vec<&str> = words.iter().map(String::as_str).collect();
    let fake = FakeLlm::start(stream_of(&tokens, ms(5))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "coalesce@example.com").await;
    let mut ws = connect(&app, &token).await;

    let started = Instant::now();
    let reply = ask_bounded(&app, &token, &conversation, "Count to sixty").await;
    let elapsed = started.elapsed();
    let frames = frames_until_final(&mut ws).await;
    assert_eq!(reply["status"], json!("done"), "{reply}");
    let streamed = check_deltas(&frames, &reply["id"]);
    assert_eq!(streamed, tokens.concat(), "deltas concatenate to the content");
    assert_eq!(reply["content"], json!(tokens.concat()));
    let count = deltas_of(&frames).len();
    let bound = usize::try_from(elapsed.as_millis() / 50).unwrap_or(usize::MAX) + 3;
    assert!(
        count <= bound && count < tokens.len() / 2,
        "60 tokens 5 ms apart go out as at most ~20 frames a second: {count} frames in {elapsed:?} \
         (at most {bound})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mid_stream_shows_the_partial_reply_as_streaming() {
    let tokens = [
        "One ", "two ", "three ", "four ", "five ", "six ", "seven ", "eight ", "nine ", "ten.",
    ];
    let fake = FakeLlm::start(stream_of(&tokens, ms(300))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "reload@example.com").await;
    let expected = tokens.concat();

    let (_, pending) = ask_async(&app, &token, &conversation, "Count to ten slowly").await;
    let reply_id = pending["id"].clone();
    // The partial text is saved about once a second: poll (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let partial = loop {
        let reply = reply_now(&app, &token, &conversation, &reply_id).await;
        let content = reply["content"].as_str().unwrap_or_default().to_owned();
        if reply["status"] == json!("streaming") && !content.is_empty() {
            assert_eq!(reply["error"], Value::Null, "{reply}");
            break content;
        }
        assert!(
            ["pending", "streaming"].contains(&reply["status"].as_str().unwrap_or_default()),
            "the reply is still being generated while the model streams (10 tokens, 300 ms \
             apart): {reply}"
        );
        assert!(
            Instant::now() < deadline,
            "a reload never showed the reply streaming with partial text within 10s: {reply}"
        );
        tokio::time::sleep(ms(100)).await;
    };
    assert!(
        expected.starts_with(&partial) && partial.len() < expected.len(),
        "the partial content is a proper prefix of the answer: {partial:?} vs {expected:?}"
    );

    // It then finishes with the whole text.
    let deadline = Instant::now() + WAIT_FINAL;
    let reply = loop {
        let reply = reply_now(&app, &token, &conversation, &reply_id).await;
        if reply["status"] != json!("streaming") && reply["status"] != json!("pending") {
            break reply;
        }
        let content = reply["content"].as_str().unwrap_or_default();
        assert!(
            expected.starts_with(content) && content.starts_with(&partial),
            "saved content only grows, as a prefix of the answer: {content:?}"
        );
        assert!(Instant::now() < deadline, "the reply did not finish: {reply}");
        tokio::time::sleep(ms(100)).await;
    };
    assert_eq!(reply["status"], json!("done"), "{reply}");
    assert_eq!(reply["content"], json!(expected), "{reply}");
}

/// What a client holding `content` (in characters) makes of a delta at
/// `offset`: the text it appends (nothing when the delta is already in
/// `content`), or `None` when the delta starts past its end (a gap).
fn splice(content: &str, offset: usize, delta: &str) -> Option<String> {
    let have = content.chars().count();
    if offset > have {
        return None;
    }
    Some(delta.chars().skip(have - offset).collect())
}

/// Follows a reply on the socket until it is final, reloading it over
/// HTTP after each of its first deltas: a reload must show at least
/// everything the socket has shown, and the deltas after it splice onto
/// its text to give `expected`. Returns the final event's message.
async fn reload_between_deltas(
    app: &TestApp,
    token: &str,
    conversation: &Value,
    ws: &mut Ws,
    reply_id: &Value,
    expected: &str,
) -> Value {
    let mut received = String::new();
    let mut reloads = 0;
    let deadline = Instant::now() + WAIT_FINAL;
    let done = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match ws.try_next_frame(left).await {
            Ok(Some(frame)) => frame,
            other => panic!("the reply did not finish on the socket: {other:?}"),
        };
        if is_final(&frame) && &frame["data"]["id"] == reply_id {
            break frame;
        }
        if frame["type"] != json!("message.delta") {
            continue;
        }
        let data = &frame["data"];
        let offset = usize::try_from(data["offset"].as_u64().expect("offset")).expect("offset fits");
        let delta = data["delta"].as_str().expect("delta text");
        let tail = splice(&received, offset, delta)
            .unwrap_or_else(|| panic!("a delta at {offset} past the {received:?} known: {frame}"));
        received.push_str(&tail);
        if reloads >= 4 {
            continue;
        }
        let reply = reply_now(app, token, conversation, reply_id).await;
        reloads += 1;
        if reply["status"] != json!("streaming") {
            // The model streams for 3 s; only the end can overtake a reload.
            assert_eq!(reply["status"], json!("done"), "{reply}");
            continue;
        }
        let shown = reply["content"].as_str().expect("content").to_owned();
        assert!(
            shown.starts_with(&received),
            "a GET after the delta that brought the text to {received:?} shows {shown:?}: it \
             must hold every delta sent before it"
        );
        assert!(
            expected.starts_with(&shown),
            "the GET shows a prefix of the answer: {shown:?}"
        );
        // The client now holds the GET's text; later deltas splice onto it.
        received = shown;
    };
    assert!(reloads >= 2, "at least two reloads happened mid-stream");
    assert_eq!(
        received, expected,
        "GET text plus the deltas after it is the answer"
    );
    assert_eq!(done["data"]["content"], json!(expected), "{done}");
    done["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_between_two_deltas_returns_the_text_of_the_deltas_sent_before_it() {
    let tokens = [
        "Alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta.",
    ];
    let fake = FakeLlm::start(stream_of(&tokens, ms(400))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "between@example.com").await;
    let expected = tokens.concat();
    let mut ws = connect(&app, &token).await;
    let (_, pending) = ask_async(&app, &token, &conversation, "Recite the Greek letters").await;
    let reply_id = pending["id"].clone();
    let first = reload_between_deltas(&app, &token, &conversation, &mut ws, &reply_id, &expected).await;
    assert_eq!(first["status"], json!("done"), "{first}");

    // A retry streams the reply again from nothing: reloads show the new
    // generation's text, never the finished one's.
    let retried = app
        .request_with_headers(Method::POST, &retry_path(&pending), Some(&token), None, &[ASYNC])
        .await;
    let again = retried.expect(StatusCode::ACCEPTED)["assistant_message"].clone();
    assert_eq!(again["status"], json!("pending"), "{again}");
    assert_eq!(again["content"], json!(""), "{again}");
    let second = reload_between_deltas(&app, &token, &conversation, &mut ws, &reply_id, &expected).await;
    assert_eq!(second["status"], json!("done"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_stream_keeps_the_partial_text_and_drops_the_upstream_request() {
    let words: Vec<String> = (1..=20).map(|i| format!("word{i} ")).collect();
    let tokens: Vec<&str> = words.iter().map(String::as_str).collect();
    let fake = FakeLlm::start(stream_of(&tokens, ms(200))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "cancel@example.com").await;
    let expected = tokens.concat();
    let mut ws = connect(&app, &token).await;

    let (_, pending) = ask_async(&app, &token, &conversation, "Say twenty words").await;
    let reply_id = pending["id"].clone();
    // Wait for the stream to be under way: two deltas.
    let mut frames: Vec<Seen> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while deltas_of(&frames).len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.try_next_frame(left).await {
            Ok(Some(frame)) => {
                assert!(
                    !is_final(&frame),
                    "the reply ended before it was cancelled: {frame}"
                );
                if frame["type"] != json!("heartbeat") {
                    frames.push(Seen {
                        at: Instant::now(),
                        frame,
                    });
                }
            }
            Ok(None) => panic!("no deltas within 10s: {:?}", describe(&frames)),
            Err(ending) => panic!("the socket ended: {ending:?}"),
        }
    }
    let upstream = fake.only_chat_request();
    assert!(
        upstream.closed.borrow().is_none(),
        "the upstream request is open while streaming"
    );

    let cancelled_at = Instant::now();
    let response = app.post_empty(&cancel_path(&pending), Some(&token)).await;
    let cancelled = response.expect(StatusCode::OK).clone();
    assert_message(&cancelled);
    assert_eq!(cancelled["status"], json!("cancelled"), "{cancelled}");
    let partial = cancelled["content"].as_str().unwrap_or_default().to_owned();
    assert!(
        !partial.is_empty() && expected.starts_with(&partial) && partial.len() < expected.len(),
        "the cancelled reply keeps the partial text, a prefix of the answer: {partial:?}"
    );

    // The model server sees its connection closed promptly.
    let closed = upstream.wait_closed(Duration::from_secs(3)).await;
    let closed = closed
        .unwrap_or_else(|| panic!("ragd did not close the upstream connection within 3s of the cancel"));
    assert!(
        closed.saturating_duration_since(cancelled_at) < Duration::from_secs(3),
        "the upstream request stopped promptly"
    );

    // The socket: the remaining deltas, then `cancelled`; deltas match it.
    frames.extend(frames_until_final(&mut ws).await);
    let last = &frames.last().expect("a final frame").frame;
    assert_eq!(
        last["data"]["status"],
        json!("cancelled"),
        "{:?}",
        describe(&frames)
    );
    assert_eq!(last["data"], cancelled, "the event carries the cancelled reply");
    assert_eq!(
        check_deltas(&frames, &reply_id),
        partial,
        "the deltas concatenate to the cancelled content"
    );
    assert_eq!(status_events(&frames, &reply_id), ["streaming", "cancelled"]);

    // Nothing later overwrites it.
    let quiet_until = Instant::now() + ms(1500);
    loop {
        let left = quiet_until.saturating_duration_since(Instant::now());
        match ws.try_next_frame(left).await {
            Ok(None) => break,
            Ok(Some(frame)) => assert!(
                frame["type"] == json!("heartbeat"),
                "nothing about the reply after its cancel: {frame}"
            ),
            Err(ending) => panic!("the socket ended: {ending:?}"),
        }
    }
    let now = reply_now(&app, &token, &conversation, &reply_id).await;
    assert_eq!(now, cancelled, "the reply stays cancelled with its partial text");
}

// ---------------------------------------------------------------------------
// Upstream errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_500_ends_the_reply_as_error_with_the_status_and_its_message() {
    let fake = FakeLlm::start(Script::Status(500, error_body("model exploded"))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "e500@example.com").await;
    let mut ws = connect(&app, &token).await;

    let reply = ask_bounded(&app, &token, &conversation, "Will it blend?").await;
    let error = assert_error_reply(&reply);
    assert!(
        error.contains("500") && error.contains("model exploded"),
        "the error names the status and the model server's message: {error:?}"
    );
    assert_eq!(reply["content"], json!(""), "nothing was streamed: {reply}");
    let frames = frames_until_final(&mut ws).await;
    assert_eq!(
        status_events(&frames, &reply["id"]),
        ["error"],
        "{:?}",
        describe(&frames)
    );
    assert!(
        deltas_of(&frames).is_empty(),
        "no deltas: {:?}",
        describe(&frames)
    );
    assert_eq!(reply_now(&app, &token, &conversation, &reply["id"]).await, reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_401_says_to_check_the_api_key_which_is_sent_as_bearer_and_never_shown() {
    let key = "sk-test-4f9c2b7e1d0a-SECRET";
    let fake = FakeLlm::start(Script::Status(401, error_body("Incorrect API key provided"))).await;
    let app = spawn_app(&fake, &["--llm-api-key", key]).await;
    let (token, conversation) = user_with_conversation(&app, "e401@example.com").await;

    let reply = ask_bounded(&app, &token, &conversation, "Hello?").await;
    let error = assert_error_reply(&reply);
    assert!(error.contains("401"), "the error names the status: {error:?}");
    let lower = error.to_lowercase();
    assert!(
        lower.contains("api key") || lower.contains("api-key"),
        "the error says to check the API key: {error:?}"
    );
    assert!(!reply.to_string().contains(key), "the key never shows: {reply}");

    let chat = fake.only_chat_request();
    assert_eq!(
        chat.header("authorization"),
        Some(format!("Bearer {key}").as_str()),
        "the key reaches the model server as a Bearer token"
    );
    let models = fake.wait_for("GET /v1/models", |r| r.path == "/v1/models").await;
    assert_eq!(
        models.header("authorization"),
        Some(format!("Bearer {key}").as_str()),
        "the start-up check sends the key too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_that_echoes_the_api_key_does_not_leak_it_to_users() {
    // A proxy in front of the model may quote the key it refused; every
    // user of this ragd would then read the operator's key.
    let key = "sk-test-echoed-77aa31c9";
    let fake = FakeLlm::start(Script::Status(
        401,
        error_body(&format!("Incorrect API key provided: {key}")),
    ))
    .await;
    let app = spawn_app(&fake, &["--llm-api-key", key]).await;
    let (token, conversation) = user_with_conversation(&app, "echo@example.com").await;

    let reply = ask_bounded(&app, &token, &conversation, "Hello?").await;
    let error = assert_error_reply(&reply);
    assert!(error.contains("401"), "{error:?}");
    assert!(
        !reply.to_string().contains(key),
        "the API key never appears in what users see: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_404_names_the_missing_model() {
    let fake = FakeLlm::start(Script::Status(
        404,
        error_body("model \"test-model\" not found, try pulling it first"),
    ))
    .await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "e404@example.com").await;

    let reply = ask_bounded(&app, &token, &conversation, "Anyone there?").await;
    let error = assert_error_reply(&reply);
    assert!(
        error.contains("404") && error.contains("not found, try pulling it first"),
        "the error names the status and the model server's message: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_event_inside_the_stream_ends_the_reply_as_error() {
    let mut steps = stream_steps(&["Let me ", "think"], ms(30), false);
    steps.push(data(
        &json!({"error": {"message": "model not loaded", "type": "server_error"}}),
    ));
    let fake = FakeLlm::start(Script::Stream(steps)).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "errevent@example.com").await;

    let reply = ask_bounded(&app, &token, &conversation, "Think!").await;
    let error = assert_error_reply(&reply);
    assert!(error.contains("model not loaded"), "{error:?}");
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_server_that_never_answers_times_out() {
    let fake = FakeLlm::start(Script::Hang).await;
    let app = spawn_app(&fake, &["--llm-timeout", "1s"]).await;
    let (token, conversation) = user_with_conversation(&app, "hang@example.com").await;

    let started = Instant::now();
    let reply = ask_bounded(&app, &token, &conversation, "Are you there?").await;
    let elapsed = started.elapsed();
    let error = assert_error_reply(&reply);
    let lower = error.to_lowercase();
    assert!(
        lower.contains("1s")
            && (lower.contains("within") || lower.contains("timed out") || lower.contains("timeout")),
        "the error says the model server did not answer in time (1s): {error:?}"
    );
    assert!(
        elapsed >= ms(900) && elapsed < Duration::from_secs(8),
        "the reply fails after about the timeout (1s), took {elapsed:?}"
    );
    let upstream = fake.only_chat_request();
    assert!(
        upstream.wait_closed(Duration::from_secs(3)).await.is_some(),
        "ragd gives up the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_mid_way_times_out() {
    let mut steps = stream_steps(&["Half ", "an "], ms(50), false);
    steps.push(Step::Stall);
    let fake = FakeLlm::start(Script::Stream(steps)).await;
    let app = spawn_app(&fake, &["--llm-timeout", "1s"]).await;
    let (token, conversation) = user_with_conversation(&app, "stall@example.com").await;

    let started = Instant::now();
    let reply = ask_bounded(&app, &token, &conversation, "Finish the sentence").await;
    let elapsed = started.elapsed();
    let error = assert_error_reply(&reply);
    assert!(
        error.contains("1s"),
        "the error names the time the model server went silent (1s): {error:?}"
    );
    assert!(
        elapsed >= ms(900) && elapsed < Duration::from_secs(8),
        "it fails after about the timeout, took {elapsed:?}"
    );
    assert!(
        fake.only_chat_request()
            .wait_closed(Duration::from_secs(3))
            .await
            .is_some(),
        "ragd gives up the stalled connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_that_keeps_sending_is_not_cut_off() {
    let tokens = [
        "Slow ", "and ", "steady ", "wins ", "the ", "race ", "every ", "time.",
    ];
    let fake = FakeLlm::start(stream_of(&tokens, ms(400))).await;
    let app = spawn_app(&fake, &["--llm-timeout", "1s"]).await;
    let (token, conversation) = user_with_conversation(&app, "slow@example.com").await;

    let started = Instant::now();
    let reply = ask_bounded(&app, &token, &conversation, "Tell me a proverb").await;
    assert_eq!(
        reply["status"],
        json!("done"),
        "a model that keeps sending (every 400 ms for {:?}, timeout 1s) is never cut off: {reply}",
        started.elapsed()
    );
    assert_eq!(reply["content"], json!(tokens.concat()));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the stream took its time"
    );
}

// ---------------------------------------------------------------------------
// Broken streams
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_before_done_is_an_error() {
    let mut steps = stream_steps(&["It ", "was "], ms(50), false);
    steps.push(Step::Cut);
    let fake = FakeLlm::start(Script::Stream(steps)).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "cut@example.com").await;

    let reply = ask_bounded(&app, &token, &conversation, "What was it?").await;
    let error = assert_error_reply(&reply);
    assert!(
        error.to_lowercase().contains("model server"),
        "the error says the model server's stream broke: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_cleanly_without_done_is_an_error() {
    let mut steps = stream_steps(&["It ", "was "], ms(50), false);
    steps.push(Step::Finish);
    let fake = FakeLlm::start(Script::Stream(steps)).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "eof@example.com").await;

    let reply = ask_bounded(&app, &token, &conversation, "What was it?").await;
    let error = assert_error_reply(&reply);
    assert!(
        error.to_lowercase().contains("model server"),
        "the error says the model server ended the stream early: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_fails_mid_stream_keeps_the_text_it_streamed() {
    // Deltas concatenate to the reply's final content, also when it fails:
    // a client that showed the streamed words must not see them replaced.
    let mut steps = stream_steps(&["Three ", "streamed ", "words "], ms(100), false);
    steps.push(Step::Cut);
    let fake = FakeLlm::start(Script::Stream(steps)).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "keep@example.com").await;
    let mut ws = connect(&app, &token).await;

    let reply = ask_bounded(&app, &token, &conversation, "Three words please").await;
    assert_error_reply(&reply);
    let frames = frames_until_final(&mut ws).await;
    let streamed = check_deltas(&frames, &reply["id"]);
    assert_eq!(
        streamed,
        "Three streamed words ",
        "the user saw the words stream: {:?}",
        describe(&frames)
    );
    assert_eq!(
        reply["content"],
        json!(streamed),
        "the error reply keeps exactly the text its deltas showed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_stream_is_a_malformed_stream_error() {
    let mut steps = stream_steps(&["Fine "], ms(20), false);
    steps.push(Step::Send(b"data: this is not json at all\n\n".to_vec()));
    steps.extend([token("so far"), done_marker(), Step::Finish]);
    let fake = FakeLlm::start(Script::Stream(steps)).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "garbage@example.com").await;

    let reply = ask_bounded(&app, &token, &conversation, "Say something").await;
    let error = assert_error_reply(&reply);
    assert!(
        error.to_lowercase().contains("malformed"),
        "the error says the stream was malformed: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_usage_role_chunks_and_split_events_are_handled() {
    // "Zürich " split inside the "ü", across two TCP writes.
    let zurich = format!("data: {}\n\n", chunk_json(&json!({"content": "Zürich "}), None));
    let split = zurich.find('ü').expect("a ü") + 1;
    let (head, tail) = zurich.as_bytes().split_at(split);
    let steps = vec![
        Step::Send(b": keep-alive\n\n".to_vec()),
        role_chunk(),
        Step::Send(b": ping\r\n\r\n".to_vec()),
        Step::Wait(ms(80)),
        Step::Send(head.to_vec()),
        Step::Wait(ms(30)),
        Step::Send(tail.to_vec()),
        Step::Wait(ms(80)),
        // One event in two `data:` lines (joined with a newline).
        Step::Send(
            b"data: {\"choices\":[{\"index\":0,\n\
              data: \"delta\":{\"content\":\"na\xc3\xafve \"}}]}\n\n"
                .to_vec(),
        ),
        Step::Wait(ms(80)),
        Step::Send(
            format!(
                "id: 7\ndata: {}\r\n\r\n",
                chunk_json(&json!({"content": "日本 🚀 "}), None)
            )
            .into_bytes(),
        ),
        Step::Wait(ms(80)),
        token("[1]"),
        finish_chunk(),
        usage_chunk(),
        Step::Send(b": keep-alive\n\n".to_vec()),
        done_marker(),
        Step::Finish,
    ];
    let fake = FakeLlm::start(Script::Stream(steps)).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "extras@example.com").await;
    let mut ws = connect(&app, &token).await;

    let reply = ask_bounded(&app, &token, &conversation, "Where?").await;
    let expected = "Zürich naïve 日本 🚀 [1]";
    assert_eq!(reply["status"], json!("done"), "{reply}");
    assert_eq!(reply["content"], json!(expected), "{reply}");
    let frames = frames_until_final(&mut ws).await;
    assert_eq!(
        check_deltas(&frames, &reply["id"]),
        expected,
        "{:?}",
        describe(&frames)
    );
    let after_non_ascii = deltas_of(&frames).iter().any(|s| {
        let offset = s.frame["data"]["offset"].as_u64().unwrap_or(0);
        let offset = usize::try_from(offset).unwrap_or(0);
        let before: String = expected.chars().take(offset).collect();
        before.len() != before.chars().count()
    });
    assert!(
        after_non_ascii,
        "some delta starts after a non-ASCII character, so offsets were checked in characters: {:?}",
        describe(&frames)
    );
}

// ---------------------------------------------------------------------------
// Unreachable model server
// ---------------------------------------------------------------------------

/// A local URL nothing listens on.
async fn closed_base_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_says_the_model_server_cannot_be_reached_and_ragd_keeps_serving() {
    let base_url = closed_base_url().await;
    let app = spawn_app_at(&base_url, &["--llm-timeout", "5s"]).await;
    let (token, conversation) = user_with_conversation(&app, "refused@example.com").await;

    let started = Instant::now();
    let reply = ask_bounded(&app, &token, &conversation, "Hello?").await;
    let error = assert_error_reply(&reply);
    assert!(
        error.to_lowercase().contains("cannot reach the model server"),
        "the error says the model server cannot be reached: {error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a refused connection fails at once, not after the timeout: {:?}",
        started.elapsed()
    );
    app.get("/healthz", None).await.expect(StatusCode::OK);
    let again = ask_bounded(&app, &token, &conversation, "Still there?").await;
    assert_eq!(again["status"], json!("error"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_with_an_unreachable_model_server_still_serves() {
    let base_url = closed_base_url().await;
    let app = spawn_app_at(&base_url, &[]).await;
    app.get("/healthz", None).await.expect(StatusCode::OK);
    let (token, _) = app.register("startup@example.com", PASSWORD).await;
    app.get("/api/conversations", Some(&token))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_warns_at_start_up_when_the_model_server_is_unreachable() {
    let base_url = closed_base_url().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        dir.path(),
        &[
            ("RAGD_LLM_PROVIDER", "openai"),
            ("RAGD_LLM_BASE_URL", &base_url),
            ("RAGD_LLM_MODEL", MODEL),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if log
            .lines()
            .any(|l| l.contains("WARN") && l.to_lowercase().contains("model server"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no warning about the unreachable model server within 10s; stderr:\n{log}"
        );
        tokio::time::sleep(ms(50)).await;
    }
    let health = reqwest::get(server.url("/healthz")).await.expect("GET /healthz");
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_appears_in_the_logs() {
    let key = "sk-test-logs-5e8d0c42b1";
    let fake = FakeLlm::start(Script::Status(401, error_body("Incorrect API key provided"))).await;
    fake.set_models(Script::Status(401, error_body("Incorrect API key provided")));
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        dir.path(),
        &[
            ("RAGD_LLM_PROVIDER", "openai"),
            ("RAGD_LLM_BASE_URL", &fake.base_url),
            ("RAGD_LLM_MODEL", MODEL),
            ("RAGD_LLM_API_KEY", key),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(WAIT_FINAL)
        .build()
        .expect("client");
    let token = Api::at(&server.address).register("logs@example.com").await;
    let conversation: Value = client
        .post(server.url("/api/conversations"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("create a conversation")
        .json()
        .await
        .expect("JSON");
    let reply: Value = client
        .post(server.url(&messages_path(&conversation)))
        .bearer_auth(&token)
        .json(&json!({"content": "Hello?"}))
        .send()
        .await
        .expect("ask")
        .json()
        .await
        .expect("JSON");
    let error = assert_error_reply(&reply);
    assert!(error.contains("401"), "{error:?}");
    assert_eq!(
        fake.only_chat_request().header("authorization"),
        Some(format!("Bearer {key}").as_str()),
        "the key from RAGD_LLM_API_KEY reaches the model server"
    );
    fake.wait_for("the start-up check", |r| r.path == "/v1/models")
        .await;
    // Let the start-up warning and the request lines reach the log.
    tokio::time::sleep(ms(300)).await;
    let log = server.log();
    assert!(
        log.contains("/messages"),
        "the log was captured (it has the request lines):\n{log}"
    );
    assert!(!log.contains(key), "the API key is never logged:\n{log}");
}

// ---------------------------------------------------------------------------
// The request ragd sends
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_carries_numbered_passages_the_conversation_and_the_question_last() {
    let fake = FakeLlm::start(stream_of(&["At six ", "[1]."], ms(10))).await;
    // A trailing slash on the base URL is fine.
    let base_url = format!("{}/", fake.base_url);
    let app = spawn_app_at(&base_url, &["--llm-max-tokens", "64", "--llm-temperature", "0.2"]).await;
    let (token, conversation) = user_with_conversation(&app, "prompt@example.com").await;
    let passage_text = "The lighthouse keeper in Kestrel Bay logs the tide at six each morning.";
    Api::of(&app)
        .upload_ready(&token, "keeper.txt", passage_text.as_bytes())
        .await;

    let first = "When does the lighthouse keeper log the tide?";
    let answer = ask_bounded(&app, &token, &conversation, first).await;
    assert_eq!(answer["status"], json!("done"), "{answer}");
    let second = "Where does the lighthouse keeper work?";
    let reply = ask_bounded(&app, &token, &conversation, second).await;
    assert_eq!(reply["status"], json!("done"), "{reply}");

    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 2, "one model request per question");
    let request = &chats[1];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions");
    assert!(
        request
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "a JSON body: {:?}",
        request.header("content-type")
    );
    assert_eq!(
        request.header("authorization"),
        None,
        "without --llm-api-key no Authorization header is sent"
    );
    let body = request.json();
    assert_eq!(body["model"], json!(MODEL), "{body}");
    assert_eq!(body["stream"], json!(true), "{body}");
    assert_eq!(body["max_tokens"], json!(64), "{body}");
    let temperature = body["temperature"]
        .as_f64()
        .unwrap_or_else(|| panic!("temperature is a number: {body}"));
    assert!(
        (temperature - 0.2).abs() < 1e-6,
        "temperature is 0.2: {}",
        body["temperature"]
    );

    let prompt = system_prompt(&body);
    assert_eq!(
        passage(&prompt, 1, "keeper.txt").as_deref(),
        Some(passage_text),
        "the retrieved passage is numbered [1] with its file name; prompt:\n{prompt}"
    );
    let messages = body["messages"].as_array().expect("messages");
    let turns: Vec<(String, String)> = messages[1..]
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        turns,
        [
            ("user".to_owned(), first.to_owned()),
            (
                "assistant".to_owned(),
                answer["content"].as_str().unwrap_or_default().to_owned()
            ),
            ("user".to_owned(), second.to_owned()),
        ],
        "after the system prompt: the earlier turn, then the question last"
    );

    // The first request had no history: system prompt, then the question.
    let first_body = chats[0].json();
    let first_messages = first_body["messages"].as_array().expect("messages");
    assert_eq!(first_messages.len(), 2, "{first_body}");
    assert_eq!(first_messages[1], json!({"role": "user", "content": first}));
}

/// Ten documents that all match the question "Which harbour is it?".
async fn ten_harbours(app: &TestApp, token: &str) {
    let api = Api::of(app);
    for n in 1..=10 {
        let text = format!("Harbour number {n} keeps boats and nets in a quiet harbour.");
        api.upload_ready(token, &format!("harbour-{n}.txt"), text.as_bytes())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_reads_eight_passages_and_the_extractive_answer_quotes_four() {
    let fake = FakeLlm::start(stream_of(&["Harbours [1]."], ms(10))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "harbours@example.com").await;
    ten_harbours(&app, &token).await;
    let reply = ask_bounded(&app, &token, &conversation, "Which harbour is it?").await;
    assert_eq!(reply["status"], json!("done"), "{reply}");
    let prompt = system_prompt(&fake.only_chat_request().json());
    for n in 1..=8 {
        assert!(
            prompt.contains(&format!("[{n}] (harbour-")),
            "passage [{n}] in:\n{prompt}"
        );
    }
    assert!(!prompt.contains("[9] ("), "no ninth passage:\n{prompt}");

    let app = TestApp::spawn().await;
    let (token, conversation) = user_with_conversation(&app, "quotes@example.com").await;
    ten_harbours(&app, &token).await;
    let reply = ask_bounded(&app, &token, &conversation, "Which harbour is it?").await;
    let sources = reply["sources"].as_array().expect("sources");
    assert_eq!(
        sources.len(),
        4,
        "the extractive answer quotes four passages: {reply}"
    );
    assert!(
        reply["content"].as_str().is_some_and(|c| c.contains("[4]")),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sampling_flags_the_request_leaves_them_to_the_server() {
    let fake = FakeLlm::start(stream_of(&["Hi."], ms(10))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "defaults@example.com").await;
    let reply = ask_bounded(&app, &token, &conversation, "Hi?").await;
    assert_eq!(reply["status"], json!("done"), "{reply}");
    let body = fake.only_chat_request().json();
    assert!(body.get("max_tokens").is_none(), "{body}");
    assert!(body.get("temperature").is_none(), "{body}");
    let prompt = system_prompt(&body);
    assert!(
        !prompt.contains("[1] ("),
        "no documents: no passage in the prompt:\n{prompt}"
    );
    assert_eq!(reply["sources"], json!([]), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_checks_the_models_endpoint() {
    let fake = FakeLlm::start(stream_of(&["ok"], ms(10))).await;
    let _app = spawn_app(&fake, &[]).await;
    let check = fake.wait_for("GET /v1/models", |r| r.path == "/v1/models").await;
    assert_eq!(check.method, "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_turn_over_http_shows_the_streamed_reply_done() {
    // `Prefer: respond-async` answers 202 at once; the reply finishes in
    // the background with the streamed text.
    let fake = FakeLlm::start(stream_of(&["Back", "ground."], ms(50))).await;
    let app = spawn_app(&fake, &[]).await;
    let (token, conversation) = user_with_conversation(&app, "async@example.com").await;
    let response = crate::chat::post_message_with(&app, &token, &conversation, "Go", &[ASYNC]).await;
    let body = response.expect(StatusCode::ACCEPTED).clone();
    let reply_id = body["assistant_message"]["id"].clone();
    let deadline = Instant::now() + WAIT_FINAL;
    loop {
        let reply = reply_now(&app, &token, &conversation, &reply_id).await;
        if reply["status"] == json!("done") {
            assert_eq!(reply["content"], json!("Background."));
            break;
        }
        assert!(
            ["pending", "streaming"].contains(&reply["status"].as_str().unwrap_or_default()),
            "{reply}"
        );
        assert!(Instant::now() < deadline, "not done in time: {reply}");
        tokio::time::sleep(ms(50)).await;
    }
}
