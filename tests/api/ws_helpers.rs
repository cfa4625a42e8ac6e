//! A real WebSocket client for `/ws` (tokio-tungstenite) with bounded waits:
//! every read fails the test after a few seconds instead of hanging, and
//! "nothing more arrives" is a short bounded wait.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{TestApp, assert_timestamp};

/// Longest wait for a frame that must arrive.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "no more frames" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a socket authenticates (API.md "WebSocket /ws").
#[derive(Clone, Copy, Debug)]
pub enum Cred<'a> {
    None,
    /// `Authorization: Bearer <JWT>`
    Bearer(&'a str),
    /// `Authorization: <this value>`, as written
    Authorization(&'a str),
    /// `Sec-WebSocket-Protocol: bearer, <JWT>`
    Protocol(&'a str),
    /// `?token=<JWT>`
    Query(&'a str),
    /// `?ticket=<t>`
    Ticket(&'a str),
}

/// An upgrade the server refused: what the client saw instead of a 101.
#[derive(Debug)]
pub struct Rejected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Rejected {
    /// Asserts a contract error body with this status and code.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "refused upgrade; body: {}", self.text);
        assert_eq!(
            self.body["error"]["code"],
            json!(code),
            "error code of the refused upgrade; body: {}",
            self.text
        );
        let message = self.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "error message must be non-empty; body: {}",
            self.text
        );
    }
}

/// An open socket, its `hello` already read and checked.
pub struct Ws {
    stream: Stream,
    /// The data of the `hello` frame.
    pub hello: Value,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// WebSocket ping frames received so far.
    pub pings: usize,
}

/// What ended a read that expected a close.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code (None: a close frame without a code).
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Dropped(String),
}

fn ws_url(http_address: &str, query: &str) -> String {
    let base = http_address.strip_prefix("http://").unwrap_or(http_address);
    format!("ws://{base}/ws{query}")
}

fn query_string(cred: Cred<'_>, query: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    match cred {
        Cred::Query(token) => parts.push(format!("token={token}")),
        Cred::Ticket(ticket) => parts.push(format!("ticket={ticket}")),
        _ => {}
    }
    let query = query.trim_start_matches(['?', '&']);
    if !query.is_empty() {
        parts.push(query.to_owned());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Tries to open `/ws` on a server at `http_address` (`http://host:port`);
/// `query` is extra query text such as `since=3&epoch=x`.
pub async fn try_connect_to(
    http_address: &str,
    cred: Cred<'_>,
    query: &str,
) -> Result<(Stream, Option<String>), Rejected> {
    try_connect_with_headers(http_address, cred, query, &[]).await
}

/// `try_connect_to` with extra request headers (e.g. a browser's `Origin`).
pub async fn try_connect_with_headers(
    http_address: &str,
    cred: Cred<'_>,
    query: &str,
    extra: &[(&str, &str)],
) -> Result<(Stream, Option<String>), Rejected> {
    let url = ws_url(http_address, &query_string(cred, query));
    let mut request = url
        .as_str()
        .into_client_request()
        .expect("a valid WebSocket request");
    for (name, value) in extra {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    match cred {
        Cred::Bearer(token) => {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
            );
        }
        Cred::Authorization(value) => {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        Cred::Protocol(token) => {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("bearer, {token}")).expect("a header value"),
            );
        }
        _ => {}
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(WAIT, connect).await {
        Err(_) => panic!("the WebSocket handshake to {url} did not finish within {WAIT:?}"),
        Ok(Ok((stream, response))) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((stream, protocol))
        }
        Ok(Err(WsError::Http(response))) => {
            let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
            let mut headers = HeaderMap::new();
            for (name, value) in response.headers() {
                if let (Ok(name), Ok(value)) = (
                    reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                    reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    headers.append(name, value);
                }
            }
            let text = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            Err(Rejected {
                status,
                headers,
                text,
                body,
            })
        }
        Ok(Err(other)) => panic!("the WebSocket handshake to {url} failed: {other}"),
    }
}

/// Opens a socket, or returns the refusal.
pub async fn try_connect(app: &TestApp, cred: Cred<'_>, query: &str) -> Result<Ws, Rejected> {
    try_connect_at(&app.address, cred, query).await
}

/// Opens a socket on any server address, or returns the refusal.
pub async fn try_connect_at(http_address: &str, cred: Cred<'_>, query: &str) -> Result<Ws, Rejected> {
    let (stream, protocol) = try_connect_to(http_address, cred, query).await?;
    let mut ws = Ws::from_stream(stream).await;
    ws.protocol = protocol;
    Ok(ws)
}

/// Opens a socket (asserting the upgrade succeeds and `hello` comes first).
pub async fn connect_with(app: &TestApp, cred: Cred<'_>, query: &str) -> Ws {
    connect_at(&app.address, cred, query).await
}

/// Like [`connect_with`] for any server address.
pub async fn connect_at(http_address: &str, cred: Cred<'_>, query: &str) -> Ws {
    match try_connect_at(http_address, cred, query).await {
        Ok(ws) => ws,
        Err(rejected) => panic!(
            "the upgrade ({cred:?}, query {query:?}) was refused: {} {}",
            rejected.status, rejected.text
        ),
    }
}

/// Opens a socket with `Authorization: Bearer`, live events only.
pub async fn connect(app: &TestApp, token: &str) -> Ws {
    connect_with(app, Cred::Bearer(token), "").await
}

/// Opens a socket with `Authorization: Bearer` and `?since=`.
pub async fn connect_since(app: &TestApp, token: &str, since: i64) -> Ws {
    connect_with(app, Cred::Bearer(token), &format!("since={since}")).await
}

/// Asserts a `hello` control frame: `{"type":"hello","data":{"user_id",
/// "epoch" (string),"head","heartbeat_ms"}}` with no `id`.
#[track_caller]
pub fn assert_hello(frame: &Value) {
    assert_eq!(frame["type"], json!("hello"), "the first frame is hello: {frame}");
    assert_control(frame);
    let data = &frame["data"];
    assert!(
        data["user_id"].as_str().is_some_and(|s| !s.is_empty()),
        "hello.user_id is a string: {frame}"
    );
    assert!(
        data["epoch"].as_str().is_some_and(|s| !s.is_empty()),
        "hello.epoch is a non-empty string: {frame}"
    );
    assert!(data["head"].is_u64(), "hello.head is an integer >= 0: {frame}");
    assert!(
        data["heartbeat_ms"].as_u64().is_some_and(|ms| ms > 0),
        "hello.heartbeat_ms is a positive integer: {frame}"
    );
}

/// A control frame is `{"type","data"}` without an `id`.
#[track_caller]
pub fn assert_control(frame: &Value) {
    let object = frame.as_object().expect("a frame is a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["data", "type"],
        "a control frame has type and data only: {frame}"
    );
}

/// An event frame is `{"id": <int>, "type", "ts": <RFC 3339>, "data": {...}}`.
#[track_caller]
pub fn assert_event(frame: &Value) {
    let object = frame
        .as_object()
        .unwrap_or_else(|| panic!("an event is a JSON object: {frame}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["data", "id", "ts", "type"],
        "an event has exactly id, type, ts and data: {frame}"
    );
    assert!(
        frame["id"].as_i64().is_some_and(|id| id >= 1),
        "an event id is a positive integer: {frame}"
    );
    assert!(frame["type"].is_string(), "event type is a string: {frame}");
    assert!(frame["data"].is_object(), "event data is an object: {frame}");
    assert_timestamp(&frame["ts"]);
}

/// The id of an event frame.
#[track_caller]
pub fn id_of(event: &Value) -> i64 {
    event["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("an event with an integer id: {event}"))
}

/// Asserts ids `first, first + 1, ...` (no gap, no duplicate, in order).
#[track_caller]
pub fn assert_consecutive(events: &[Value], first: i64) {
    let ids: Vec<i64> = events.iter().map(id_of).collect();
    for (expected, (i, &id)) in (first..).zip(ids.iter().enumerate()) {
        if id != expected {
            let from = i.saturating_sub(3);
            let to = (i + 4).min(ids.len());
            panic!(
                "event ids must be gap-free and in order from {first}: at position {i} expected \
                 {expected}, got {id} (ids around it: {:?}; {} events)",
                &ids[from..to],
                ids.len()
            );
        }
    }
}

/// The `type` of each event.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

impl Ws {
    /// Wraps an upgraded stream, reading and checking its `hello`.
    pub async fn from_stream(stream: Stream) -> Ws {
        let mut ws = Ws {
            stream,
            hello: Value::Null,
            protocol: None,
            pings: 0,
        };
        let hello = ws.next_frame_within(WAIT).await;
        assert_hello(&hello);
        ws.hello = hello["data"].clone();
        ws
    }

    /// The user's latest event id when the socket opened (`hello.head`).
    pub fn head(&self) -> i64 {
        self.hello["head"].as_i64().expect("hello.head is an integer")
    }

    /// The next text frame as JSON (control or event), failing the test
    /// after `timeout` or when the socket closes. WebSocket pings are
    /// counted (and answered by the client library).
    pub async fn next_frame_within(&mut self, timeout: Duration) -> Value {
        match self.try_next_frame(timeout).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("no frame arrived within {timeout:?}"),
            Err(ending) => panic!("the socket ended while a frame was expected: {ending:?}"),
        }
    }

    /// The next text frame, `Ok(None)` after `timeout`, `Err` when the
    /// socket ends.
    pub async fn try_next_frame(&mut self, timeout: Duration) -> Result<Option<Value>, Ending> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Ok(None),
                Ok(next) => next,
            };
            match next {
                None => return Err(Ending::Dropped("end of stream".into())),
                Some(Err(error)) => return Err(Ending::Dropped(error.to_string())),
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("a text frame is JSON ({e}): {text}"));
                    return Ok(Some(value));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Ending::Close(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(Message::Ping(_))) => self.pings += 1,
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(bytes))) => {
                    panic!(
                        "the server sends JSON text frames, got {} binary bytes",
                        bytes.len()
                    )
                }
            }
        }
    }

    /// The next event (heartbeats skipped), checked for the envelope.
    pub async fn next_event(&mut self) -> Value {
        self.next_event_within(WAIT).await
    }

    /// The next event within `timeout` (heartbeats skipped).
    pub async fn next_event_within(&mut self, timeout: Duration) -> Value {
        match self.try_next_event(timeout).await {
            Ok(event) => event,
            Err(why) => panic!("{why}"),
        }
    }

    /// The next event within `timeout`, or why none came.
    async fn try_next_event(&mut self, timeout: Duration) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match self.try_next_frame(left).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(format!("no event arrived within {timeout:?}")),
                Err(ending) => {
                    return Err(format!(
                        "the socket ended while an event was expected: {ending:?}"
                    ));
                }
            };
            if frame["type"] == json!("heartbeat") {
                continue;
            }
            assert_event(&frame);
            return Ok(frame);
        }
    }

    /// The next `n` events (on failure, the message lists those that came).
    pub async fn next_events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            match self.try_next_event(WAIT).await {
                Ok(event) => events.push(event),
                Err(why) => panic!(
                    "expected {n} events, got {}: {why}; received: {}",
                    events.len(),
                    Value::from(events.clone())
                ),
            }
        }
        events
    }

    /// The next non-heartbeat frame, which must be a control frame of `kind`
    /// (e.g. `resync_required`); returns its data.
    pub async fn next_control(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match self.try_next_frame(left).await {
                Ok(Some(frame)) => frame,
                Ok(None) => panic!("no {kind} frame arrived within {WAIT:?}"),
                Err(ending) => panic!("the socket ended while {kind} was expected: {ending:?}"),
            };
            if frame["type"] == json!("heartbeat") && kind != "heartbeat" {
                continue;
            }
            assert_eq!(frame["type"], json!(kind), "expected a {kind} frame, got {frame}");
            assert_control(&frame);
            return frame["data"].clone();
        }
    }

    /// Asserts that no event or control frame other than heartbeats arrives
    /// for `QUIET`, and that the socket stays open.
    pub async fn expect_quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next_frame(left).await {
                Ok(None) => return,
                Ok(Some(frame)) if frame["type"] == json!("heartbeat") => {}
                Ok(Some(frame)) => panic!("no more frames expected, got {frame}"),
                Err(ending) => panic!("the socket should stay open, but it ended: {ending:?}"),
            }
        }
    }

    /// Reads (and drops) frames until the socket ends; returns how.
    pub async fn expect_close_within(&mut self, timeout: Duration) -> Ending {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next_frame(left).await {
                Ok(None) => panic!("the socket was not closed within {timeout:?}"),
                Ok(Some(_)) => {}
                Err(ending) => return ending,
            }
        }
    }

    /// Reads until the socket ends (within `WAIT`); returns how.
    pub async fn expect_close(&mut self) -> Ending {
        self.expect_close_within(WAIT).await
    }

    pub async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(WAIT, self.stream.send(Message::text(text)))
            .await
            .expect("a frame is sent within the timeout")
            .expect("send a text frame");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        tokio::time::timeout(WAIT, self.stream.send(Message::binary(bytes)))
            .await
            .expect("a frame is sent within the timeout")
            .expect("send a binary frame");
    }

    /// Sends `{"type":"ping"}` and asserts the next non-heartbeat frame is
    /// exactly `{"type":"pong"}`.
    pub async fn ping_pong(&mut self) {
        self.send_text(r#"{"type":"ping"}"#).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match self.try_next_frame(left).await {
                Ok(Some(frame)) => frame,
                Ok(None) => panic!("no pong within {WAIT:?}"),
                Err(ending) => panic!("the socket ended while a pong was expected: {ending:?}"),
            };
            if frame["type"] == json!("heartbeat") {
                continue;
            }
            assert_eq!(frame, json!({"type": "pong"}), "the answer to a ping");
            return;
        }
    }

    /// Closes the socket from the client side (close handshake).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.stream.close(None)).await;
        // Drain until the server's close arrives or the stream ends.
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

/// `POST /api/ws-ticket` (asserting 201) -> the ticket.
pub async fn ticket(app: &TestApp, token: &str) -> String {
    let response = app.post_empty("/api/ws-ticket", Some(token)).await;
    let body = response.expect(StatusCode::CREATED);
    assert_timestamp(&body["expires_at"]);
    body["ticket"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("a ticket string: {body}"))
        .to_owned()
}
