//! The `openai` answer provider: any OpenAI-compatible
//! `POST {base}/chat/completions` with `stream: true` (Ollama, llama.cpp's
//! server, vLLM, OpenAI). The prompt puts the retrieved passages, numbered,
//! and the recent turns before the question; tokens are pushed to the
//! reply's sink as they arrive.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::prompt;
use super::sse::SseReader;
use super::{Answer, AnswerError, AnswerFuture, AnswerRequest, Answerer};
use crate::config::{Config, Secret};
use crate::types::Passage;

#[derive(Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    timeout: Duration,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    context_chars: usize,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// Builds the provider from the configuration; `Err` says which flag is
    /// missing.
    pub fn from_config(config: &Config) -> Result<OpenAi, String> {
        let base_url = config
            .llm_base_url
            .clone()
            .ok_or("--llm-provider openai needs --llm-base-url (e.g. http://127.0.0.1:11434/v1)")?;
        let model = config
            .llm_model
            .clone()
            .ok_or("--llm-provider openai needs --llm-model")?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.llm_timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(OpenAi {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            model,
            api_key: config.llm_api_key.clone(),
            timeout: config.llm_timeout,
            max_tokens: config.llm_max_tokens,
            temperature: config.llm_temperature,
            context_chars: config.llm_context_chars,
        })
    }

    /// Start-up check: is the model server there? Only warns; ragd starts
    /// either way (the model server may come up later).
    pub async fn check(&self) {
        let url = format!("{}/models", self.base_url);
        let request = self
            .authorized(self.client.get(&url))
            .timeout(Duration::from_secs(5));
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                tracing::info!(base_url = %self.base_url, model = %self.model, "model server reachable");
            }
            Ok(response) => tracing::warn!(
                base_url = %self.base_url,
                status = %response.status(),
                "the model server answered the start-up check with an error; answers may fail"
            ),
            Err(err) => tracing::warn!(
                base_url = %self.base_url,
                "cannot reach the model server ({}); answers will fail until it is up",
                describe(&err)
            ),
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(&key.0),
            None => request,
        }
    }

    async fn run(self, mut request: AnswerRequest) -> Result<Answer, AnswerError> {
        let passages = prompt::within_budget(std::mem::take(&mut request.passages), self.context_chars);
        let body = self.body(&request, &passages);
        let url = format!("{}/chat/completions", self.base_url);
        let send = self.authorized(self.client.post(&url)).json(&body).send();
        let response = tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| {
                AnswerError(format!(
                    "the model server did not answer within {}",
                    human(self.timeout)
                ))
            })?
            .map_err(|e| AnswerError(format!("cannot reach the model server: {}", describe(&e))))?;
        if !response.status().is_success() {
            return Err(http_error(response).await);
        }
        let content = self.stream(response, &request).await?;
        let sources = passages.iter().map(Passage::source).collect();
        Ok(Answer { content, sources })
    }

    fn body(&self, request: &AnswerRequest, passages: &[Passage]) -> Value {
        let mut messages = vec![json!({"role": "system", "content": prompt::system_prompt(passages)})];
        for turn in &request.history {
            messages.push(json!({"role": turn.role.as_str(), "content": turn.content}));
        }
        messages.push(json!({"role": "user", "content": request.question}));
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(max_tokens) = self.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if let Some(temperature) = self.temperature {
            body["temperature"] = json!(temperature);
        }
        body
    }

    /// Reads the event stream to `[DONE]`, pushing each piece of text.
    async fn stream(
        &self,
        response: reqwest::Response,
        request: &AnswerRequest,
    ) -> Result<String, AnswerError> {
        let mut bytes = response.bytes_stream();
        let mut reader = SseReader::default();
        let mut content = String::new();
        loop {
            let next = tokio::time::timeout(self.timeout, bytes.next())
                .await
                .map_err(|_| {
                    AnswerError(format!(
                        "the model server stopped sending for {}",
                        human(self.timeout)
                    ))
                })?;
            let chunk = match next {
                Some(Ok(chunk)) => chunk,
                Some(Err(err)) => {
                    return Err(AnswerError(format!(
                        "the connection to the model server broke: {}",
                        describe(&err)
                    )));
                }
                None => {
                    return Err(AnswerError(
                        "the model server closed the stream before the answer was complete".into(),
                    ));
                }
            };
            for data in reader.feed(&chunk) {
                if data.trim() == "[DONE]" {
                    return Ok(content);
                }
                let piece = parse_chunk(&data)?;
                request.stream.push(&piece);
                content.push_str(&piece);
            }
        }
    }
}

impl Answerer for OpenAi {
    fn answer(&self, request: AnswerRequest) -> AnswerFuture {
        let provider = self.clone();
        Box::pin(async move {
            let key = provider.api_key.clone();
            // Upstream text is shown to users: a server that echoes the
            // key (e.g. "Incorrect API key provided: sk-...") must not
            // hand it to every user of this ragd.
            provider
                .run(request)
                .await
                .map_err(|e| AnswerError(redact(&e.0, key.as_ref())))
        })
    }
}

fn redact(text: &str, key: Option<&Secret>) -> String {
    match key {
        Some(key) if key.0.len() >= 4 => text.replace(&key.0, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// `500ms`, `2s`, `2m`: durations as the flags write them.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The text of one streamed chunk (empty for role-only, usage or
/// finish chunks); an error chunk or malformed JSON is an error.
fn parse_chunk(data: &str) -> Result<String, AnswerError> {
    let value: Value = serde_json::from_str(data).map_err(|_| {
        AnswerError(format!(
            "the model server sent a malformed stream (\"{}\")",
            preview(data)
        ))
    })?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        return Err(AnswerError(format!(
            "the model server reported an error: {message}"
        )));
    }
    let text = value
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("delta"))
        .and_then(|d| d.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(text.to_owned())
}

async fn http_error(response: reqwest::Response) -> AnswerError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message").and_then(Value::as_str).or_else(|| e.as_str()))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| preview(&body));
    let hint = match status.as_u16() {
        401 | 403 => " (check --llm-api-key)",
        404 => " (check --llm-base-url and --llm-model)",
        _ => "",
    };
    AnswerError(format!("the model server answered {status}{hint}: {detail}"))
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_connect() {
        "connection refused or host unreachable".to_owned()
    } else if err.is_timeout() {
        "timed out".to_owned()
    } else {
        // Without the URL: it is in the configuration already.
        err.without_url_ref().to_string()
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(url) => text.replace(url.as_str(), "<model server>"),
            None => text,
        }
    }
}

fn preview(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    short.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_yield_their_text_and_errors_are_errors() {
        assert_eq!(
            parse_chunk(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#).unwrap(),
            "Hel"
        );
        assert_eq!(
            parse_chunk(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#).unwrap(),
            ""
        );
        assert_eq!(
            parse_chunk(r#"{"choices":[],"usage":{"total_tokens":9}}"#).unwrap(),
            ""
        );
        assert!(
            parse_chunk(r#"{"error":{"message":"model not loaded"}}"#)
                .unwrap_err()
                .0
                .contains("model not loaded")
        );
        assert!(parse_chunk("garbage").unwrap_err().0.contains("malformed"));
    }
}
