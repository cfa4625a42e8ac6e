//! `TestApp`: a real ragd on an ephemeral port with its own data dir, plus
//! small HTTP helpers that return what a client sees (status, headers, body).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A password that satisfies the contract (8..=256 characters).
pub const PASSWORD: &str = "correct horse battery";

/// How long a stopping server may take before the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

static TELEMETRY: Once = Once::new();

fn init_telemetry() {
    TELEMETRY.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            ragd::telemetry::init(ragd::config::LogFormat::Text);
        }
    });
}

/// A running server. One that is never stopped ends with its test's runtime.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    args: Vec<String>,
    hooks: ragd::Hooks,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// What a client saw: status, headers and the body (JSON when it parses,
/// `Value::Null` when empty or not JSON; the raw text is kept too).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, then returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        &self.body
    }

    /// Asserts a contract error: status, `application/json`, and
    /// `{"error":{"code":<code>,"message":<non-empty>}}`.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error responses are JSON, got content-type {content_type:?} (body {:?})",
            self.text
        );
        assert_eq!(
            self.body["error"]["code"],
            json!(code),
            "error code; body: {}",
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

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    /// A server with extra command-line flags (e.g. `--registration closed`).
    pub async fn spawn_with(args: &[&str]) -> TestApp {
        let dir = tempfile::Builder::new()
            .prefix("ragd-test-")
            .tempdir()
            .expect("create a temp data dir");
        Self::spawn_in(dir, args.iter().map(|s| (*s).to_owned()).collect()).await
    }

    /// A server with extra flags and in-process test seams (an answerer the
    /// test controls, a replay pause).
    pub async fn spawn_with_hooks(args: &[&str], hooks: ragd::Hooks) -> TestApp {
        let dir = tempfile::Builder::new()
            .prefix("ragd-test-")
            .tempdir()
            .expect("create a temp data dir");
        Self::spawn_in_with(dir, args.iter().map(|s| (*s).to_owned()).collect(), hooks).await
    }

    /// A server on an existing data dir (a restart).
    pub async fn spawn_in(dir: TempDir, args: Vec<String>) -> TestApp {
        Self::spawn_in_with(dir, args, ragd::Hooks::default()).await
    }

    /// A server on an existing data dir, with test seams.
    pub async fn spawn_in_with(dir: TempDir, args: Vec<String>, mut hooks: ragd::Hooks) -> TestApp {
        init_telemetry();
        // The worker's parser child is the real `ragd parse`: this test
        // binary is not ragd.
        hooks
            .parser_exe
            .get_or_insert_with(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_ragd")));
        let config = config_for(dir.path(), &args);
        let app = ragd::App::build_with(config, hooks.clone())
            .await
            .expect("the server builds (lock, migrate)");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.serve(listener, shutdown.clone()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build an HTTP client");
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            client,
            dir,
            args,
            hooks,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops the server (cancel, then wait for it to drain and release the
    /// data dir lock) and hands back the data dir.
    pub async fn stop(self) -> (TempDir, Vec<String>) {
        let (dir, args, _) = self.stop_with_hooks().await;
        (dir, args)
    }

    /// Like [`TestApp::stop`], also handing back the test seams.
    pub async fn stop_with_hooks(mut self) -> (TempDir, Vec<String>, ragd::Hooks) {
        // Close our keep-alive connections so the drain has nothing to wait for.
        self.client = reqwest::Client::new();
        self.shutdown.cancel();
        let handle = self.handle.take().expect("the server task");
        let result = tokio::time::timeout(STOP_TIMEOUT, handle)
            .await
            .expect("the server stops within the timeout")
            .expect("the server task does not panic");
        result.expect("the server stops cleanly");
        let TestApp { dir, args, hooks, .. } = self;
        (dir, args, hooks)
    }

    /// Stops and starts again on the same data dir with the same flags (and
    /// the same test seams).
    pub async fn restart(self) -> TestApp {
        let (dir, args, hooks) = self.stop_with_hooks().await;
        Self::spawn_in_with(dir, args, hooks).await
    }

    /// Stops and starts again on the same data dir with other flags.
    pub async fn restart_with(self, args: &[&str]) -> TestApp {
        let (dir, _) = self.stop().await;
        Self::spawn_in(dir, args.iter().map(|s| (*s).to_owned()).collect()).await
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends any request with extra headers; `body` is sent as JSON.
    pub async fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        send(builder).await
    }

    /// Sends any request; `body` is sent as JSON with its content type.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> TestResponse {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        send(builder).await
    }

    /// Sends a request in the background (e.g. a sync POST that waits for
    /// a reply the test holds back); await the handle for what it saw.
    pub fn spawn_request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> JoinHandle<TestResponse> {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        tokio::spawn(send(builder))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// POST without a body (and without a Content-Type).
    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::POST, path, token, None).await
    }

    pub async fn patch_json(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::DELETE, path, token, None).await
    }

    pub async fn delete_json(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.request(Method::DELETE, path, token, Some(body)).await
    }

    /// Sends a raw body with the given content type (or none).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> TestResponse {
        let mut builder = self.client.request(method, self.url(path)).body(body);
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        send(builder).await
    }

    /// `send_raw` for a body the server refuses from its Content-Length,
    /// before reading it. The server answers and closes without draining
    /// the rest (no lingering close), so a client still writing can see the
    /// connection reset before it reads the answer; such attempts are
    /// retried, and the answer is what the caller checks.
    pub async fn send_refused_early(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: String,
    ) -> TestResponse {
        let mut resets = Vec::new();
        for _ in 0..5 {
            let mut builder = self
                .client
                .request(method.clone(), self.url(path))
                .header("content-type", content_type)
                .body(body.clone());
            if let Some(token) = token {
                builder = builder.bearer_auth(token);
            }
            match try_send(builder).await {
                Ok(response) => return response,
                Err(err) if err.is_request() => resets.push(err),
                Err(err) => panic!("unexpected client error: {err}"),
            }
        }
        panic!("every attempt was reset before the answer: {resets:?}")
    }

    /// GET with a raw `Authorization` header value.
    pub async fn get_with_authorization(&self, path: &str, authorization: &str) -> TestResponse {
        send(
            self.client
                .get(self.url(path))
                .header("authorization", authorization),
        )
        .await
    }

    /// Registers an account (asserting 201) and returns `(token, user)`.
    pub async fn register(&self, email: &str, password: &str) -> (String, Value) {
        let response = self
            .post_json(
                "/api/auth/register",
                None,
                &json!({"email": email, "password": password}),
            )
            .await;
        let body = response.expect(StatusCode::CREATED);
        let token = body["token"]
            .as_str()
            .expect("register returns a token")
            .to_owned();
        (token, body["user"].clone())
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        self.post_json(
            "/api/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Logs in (asserting 200) and returns the token.
    pub async fn login_token(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        let body = response.expect(StatusCode::OK);
        body["token"].as_str().expect("login returns a token").to_owned()
    }

    /// Logs in with an `X-Forwarded-For` header.
    pub async fn login_from(&self, email: &str, password: &str, forwarded_for: &str) -> TestResponse {
        send(
            self.client
                .post(self.url("/api/auth/login"))
                .header("x-forwarded-for", forwarded_for)
                .json(&json!({"email": email, "password": password})),
        )
        .await
    }

    /// Creates a conversation (asserting 201) and returns it.
    pub async fn create_conversation(&self, token: &str, title: Option<&str>) -> Value {
        let body = match title {
            Some(title) => json!({"title": title}),
            None => json!({}),
        };
        let response = self.post_json("/api/conversations", Some(token), &body).await;
        response.expect(StatusCode::CREATED).clone()
    }

    /// The JWT signing secret as the server uses it: the trimmed text of
    /// `<data-dir>/secret.key`, as raw bytes.
    pub fn secret(&self) -> Vec<u8> {
        secret_in(self.data_dir())
    }

    /// Signs `claims` with HS256 and the server's secret.
    pub fn sign(&self, claims: &Value) -> String {
        sign_hs256(&self.secret(), claims)
    }
}

fn config_for(dir: &Path, extra: &[String]) -> ragd::Config {
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().cloned());
    ragd::Config::from_args(args).expect("valid test flags")
}

async fn send(builder: reqwest::RequestBuilder) -> TestResponse {
    try_send(builder).await.expect("the request reaches the server")
}

async fn try_send(builder: reqwest::RequestBuilder) -> Result<TestResponse, reqwest::Error> {
    let response = builder.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("read the response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(TestResponse {
        status,
        headers,
        text,
        body,
    })
}

pub fn secret_path(dir: &Path) -> PathBuf {
    dir.join("secret.key")
}

pub fn secret_in(dir: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(secret_path(dir)).expect("read <data-dir>/secret.key");
    text.trim().as_bytes().to_vec()
}

pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    sign_with(jsonwebtoken::Algorithm::HS256, secret, claims)
}

pub fn sign_with(algorithm: jsonwebtoken::Algorithm, secret: &[u8], claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret).expect("an HMAC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, &key).expect("sign a token")
}

/// Base64url without padding, as JWT segments are written.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The decoded payload (claims) of a JWT, without checking it.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(now.as_secs()).expect("seconds fit in i64")
}

/// Asserts an RFC 3339 UTC timestamp with milliseconds,
/// e.g. `2026-11-28T20:01:21.123Z`.
#[track_caller]
pub fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp is a string, got {value}"));
    let pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
    let ok = text.len() == pattern.len()
        && text.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            other => c == other,
        });
    assert!(
        ok,
        "{text:?} is not an RFC 3339 UTC timestamp with milliseconds (like 2026-11-28T20:01:21.123Z)"
    );
    let month: u32 = text[5..7].parse().unwrap_or(0);
    let day: u32 = text[8..10].parse().unwrap_or(0);
    let hour: u32 = text[11..13].parse().unwrap_or(99);
    let minute: u32 = text[14..16].parse().unwrap_or(99);
    let second: u32 = text[17..19].parse().unwrap_or(99);
    assert!(
        (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 61,
        "{text:?} is not a valid date and time"
    );
}

/// Waits until the wall clock (milliseconds) has moved on, so that two
/// writes get different timestamps at the contract's resolution.
pub async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}
