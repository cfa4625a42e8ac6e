//! The HTTP calls the scenarios make, over one pooled keep-alive client.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Result, err};

/// The password of every bench account.
pub const PASSWORD: &str = "bench password 0123";
const BOUNDARY: &str = "ragd-bench-boundary-7c1f03b2";

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// A registered account.
#[derive(Clone, Debug)]
pub struct Account {
    pub token: String,
}

impl Api {
    pub fn new(base: &str) -> Result<Api> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| err(format!("HTTP client: {e}")))?;
        Ok(Api {
            base: base.to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers `email` and returns its token.
    pub async fn register(&self, email: &str) -> Result<Account> {
        let response = self
            .http
            .post(self.url("/api/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        let body = expect(response, StatusCode::CREATED, "register").await?;
        Ok(Account {
            token: str_field(&body, "token")?,
        })
    }

    /// Registers `count` accounts `bench-<run>-<i>@example.com`, a few at
    /// a time (password hashing is the server's slowest request).
    pub async fn register_many(&self, run: &str, count: usize) -> Result<Vec<Account>> {
        use futures_util::StreamExt;
        let results: Vec<Result<Account>> = futures_util::stream::iter(0..count)
            .map(|i| {
                let api = self.clone();
                let email = format!("bench-{run}-{i}@example.com");
                async move { api.register(&email).await }
            })
            .buffered(8)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// `POST /api/conversations` -> its id.
    pub async fn create_conversation(&self, token: &str, title: &str) -> Result<String> {
        let response = self
            .http
            .post(self.url("/api/conversations"))
            .bearer_auth(token)
            .json(&json!({ "title": title }))
            .send()
            .await?;
        let body = expect(response, StatusCode::CREATED, "create a conversation").await?;
        str_field(&body, "id")
    }

    /// A synchronous chat turn: 200 with the final reply.
    pub async fn post_message(&self, token: &str, conversation: &str, content: &str) -> Result<Value> {
        let response = self
            .http
            .post(self.url(&format!("/api/conversations/{conversation}/messages")))
            .bearer_auth(token)
            .json(&json!({ "content": content }))
            .send()
            .await?;
        expect(response, StatusCode::OK, "post a message").await
    }

    /// `POST /api/documents` with one `file` part -> the document (201).
    pub async fn upload(&self, token: &str, filename: &str, bytes: &[u8]) -> Result<Value> {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let response = self
            .http
            .post(self.url("/api/documents"))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await?;
        expect(response, StatusCode::CREATED, "upload").await
    }

    /// `GET /api/search?q=&limit=` -> the items.
    pub async fn search(&self, token: &str, q: &str, limit: usize) -> Result<Vec<Value>> {
        let response = self
            .http
            .get(self.url("/api/search"))
            .bearer_auth(token)
            .query(&[("q", q), ("limit", &limit.to_string())])
            .send()
            .await?;
        let body = expect(response, StatusCode::OK, "search").await?;
        match body["items"].as_array() {
            Some(items) => Ok(items.clone()),
            None => Err(err(format!("search: no items in {body}"))),
        }
    }
}

/// The JSON body when the status is as expected, else an error naming both.
async fn expect(response: reqwest::Response, status: StatusCode, what: &str) -> Result<Value> {
    let got = response.status();
    let text = response.text().await?;
    if got != status {
        let snippet: String = text.chars().take(300).collect();
        return Err(err(format!("{what}: expected {status}, got {got}: {snippet}")));
    }
    serde_json::from_str(&text).map_err(|e| err(format!("{what}: the body is not JSON ({e})")))
}

fn str_field(body: &Value, name: &str) -> Result<String> {
    body[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| err(format!("no {name} in {body}")))
}
