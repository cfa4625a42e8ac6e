//! `GET /metrics` (API.md "Health and operations", "Metrics"): Prometheus
//! text that a chat turn, an upload and a socket move, the route label as a
//! template, and `--metrics-token`.
//!
//! Each server has a recorder of its own, so the numbers asserted here are
//! exactly what this test's server did, whatever other tests run beside it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::answerers::TestAnswerer;
use crate::chat::{ask, ask_async, cancel_path};
use crate::doc_helpers::{Api, fixture, id};
use crate::helpers::{PASSWORD, TestApp, TestResponse};
use crate::ws_helpers::{Ws, connect};

const TOKEN: &str = "metrics-token-0123456789";

/// The parsed samples of a scrape: `(series, value)`, `series` being the
/// name with its labels exactly as rendered.
struct Scrape(Vec<(String, f64)>);

impl Scrape {
    /// Parses Prometheus text, asserting its shape: `# HELP`/`# TYPE`
    /// comments, and samples `name{label="value",...} value`.
    #[track_caller]
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.split(' ');
                let kind = words.next().unwrap_or_default();
                assert!(kind == "HELP" || kind == "TYPE", "an unknown comment: {line}");
                assert!(
                    words.next().is_some_and(is_metric_name),
                    "a comment names a metric: {line}"
                );
                if kind == "TYPE" {
                    let t = words.next().unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "a known type: {line}"
                    );
                }
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample is `series value`: {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .unwrap_or_else(|_| panic!("a numeric value: {line:?}")),
            };
            let name = series.split('{').next().unwrap_or_default();
            assert!(is_metric_name(name), "a metric name: {line:?}");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                assert!(are_labels(labels), "labels are {{name=\"value\",...}}: {line:?}");
            }
            samples.push((series.to_owned(), value));
        }
        Scrape(samples)
    }

    /// The value of one series; 0 when absent (a counter not moved yet).
    fn get(&self, series: &str) -> f64 {
        self.0.iter().find(|(s, _)| s == series).map_or(0.0, |(_, v)| *v)
    }

    fn has(&self, series: &str) -> bool {
        self.0.iter().any(|(s, _)| s == series)
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y"}`, values with `\"`, `\\` and `\n` escapes.
fn are_labels(text: &str) -> bool {
    let Some(mut rest) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return false;
    };
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once("=\"") else {
            return false;
        };
        if !is_metric_name(name) || name.contains(':') {
            return false;
        }
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { return false };
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            rest = more;
        } else if !rest.is_empty() {
            return false;
        }
    }
    true
}

async fn scrape(app: &TestApp) -> (TestResponse, Scrape) {
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let scrape = Scrape::parse(&response.text);
    (response, scrape)
}

/// Reads frames until the reply `reply_id` is `done`; returns how many
/// stored events (frames with an id) came.
async fn events_until_done(ws: &mut Ws, reply_id: &str) -> usize {
    let mut events = 0;
    loop {
        let frame = ws.next_frame_within(Duration::from_secs(30)).await;
        if frame["id"].is_i64() {
            events += 1;
        }
        if frame["type"] == json!("message.status_updated")
            && frame["data"]["id"] == json!(reply_id)
            && frame["data"]["status"] == json!("done")
        {
            return events;
        }
    }
}

/// Polls `/metrics` until `series` has `value` (a socket's end is counted
/// once its task has finished, just after the client saw the close).
async fn until_metric(app: &TestApp, series: &str, value: f64) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, scrape) = scrape(app).await;
        if scrape.get(series) == value || tokio::time::Instant::now() > deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_chat_turn_an_upload_and_a_socket_move_their_metrics() {
    let app = TestApp::spawn().await;
    let (token, _) = app.register("metrics@example.com", PASSWORD).await;
    let mut ws = connect(&app, &token).await;

    let api = Api::of(&app);
    let doc = api.upload_ready(&token, "notes.md", &fixture("notes.md")).await;
    let conversation = app.create_conversation(&token, None).await;
    let reply = ask(&app, &token, &conversation, "What do the notes say?").await;
    assert_eq!(reply["status"], json!("done"), "{reply}");
    let seen = events_until_done(&mut ws, crate::chat::id_str(&reply)).await;
    let path = format!("/api/conversations/{}", crate::chat::id_str(&conversation));
    app.get(&path, Some(&token)).await.expect(StatusCode::OK);
    app.get("/api/no/such/path-12345", Some(&token))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    let (response, m) = scrape(&app).await;
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.header("content-type")
    );
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert!(
        response.header("x-request-id").is_some(),
        "it passes the request log"
    );

    // Requests: by route template and status, never the raw path.
    let requests = |method: &str, route: &str, status: u16| {
        m.get(&format!(
            r#"ragd_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
        ))
    };
    assert_eq!(requests("POST", "/api/conversations/{id}/messages", 200), 1.0);
    assert_eq!(requests("POST", "/api/documents", 201), 1.0);
    assert_eq!(requests("POST", "/api/auth/register", 201), 1.0);
    assert_eq!(requests("GET", "/api/conversations/{id}", 200), 1.0);
    assert_eq!(requests("GET", "unmatched", 404), 1.0);
    assert!(
        !response.text.contains("path-12345"),
        "raw paths are never labels"
    );
    assert!(!response.text.contains(id(&doc)), "ids are never labels");
    assert!(!response.text.contains(crate::chat::id_str(&conversation)));
    assert_eq!(
        m.get(r#"ragd_http_request_duration_seconds_count{method="POST",route="/api/conversations/{id}/messages"}"#),
        1.0
    );
    assert!(m.has(r#"ragd_http_request_duration_seconds_bucket{method="POST",route="/api/conversations/{id}/messages",le="+Inf"}"#));

    // The reply and its generation.
    assert_eq!(m.get(r#"ragd_replies_total{status="done"}"#), 1.0);
    assert_eq!(m.get(r#"ragd_replies_total{status="error"}"#), 0.0);
    assert_eq!(m.get("ragd_reply_generation_duration_seconds_count"), 1.0);

    // The parse job.
    assert_eq!(m.get(r#"ragd_job_attempts_total{outcome="succeeded"}"#), 1.0);
    assert_eq!(m.get(r#"ragd_job_attempts_total{outcome="retry"}"#), 0.0);
    assert_eq!(
        m.get(r#"ragd_job_attempt_duration_seconds_count{outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(m.get(r#"ragd_jobs{status="queued"}"#), 0.0);
    assert_eq!(m.get(r#"ragd_jobs{status="running"}"#), 0.0);
    assert_eq!(m.get("ragd_job_queue_oldest_wait_seconds"), 0.0);

    // Events and the socket.
    assert!(
        seen >= 5,
        "the socket saw the document's and the turn's events: {seen}"
    );
    assert!(m.get("ragd_events_published_total") >= seen as f64);
    assert!(m.get("ragd_ws_events_delivered_total") >= seen as f64);
    assert_eq!(m.get("ragd_ws_sockets_open"), 1.0);

    // The writer.
    assert!(m.get("ragd_db_commit_duration_seconds_count") > 0.0);
    assert!(m.has("ragd_db_write_queue_depth"));

    // (Waiting for `ready` used a socket of its own, closed by now.)
    let closed_before = m.get(r#"ragd_ws_closes_total{reason="client"}"#);
    ws.close().await;
    let m = until_metric(&app, "ragd_ws_sockets_open", 0.0).await;
    assert_eq!(m.get("ragd_ws_sockets_open"), 0.0);
    assert_eq!(
        m.get(r#"ragd_ws_closes_total{reason="client"}"#),
        closed_before + 1.0
    );
    assert_eq!(m.get(r#"ragd_ws_closes_total{reason="shutdown"}"#), 0.0);
    // Scrapes count too.
    assert!(m.get(r#"ragd_http_requests_total{method="GET",route="/metrics",status="200"}"#) >= 1.0);
}

#[tokio::test]
async fn with_a_token_metrics_need_it() {
    let app = TestApp::spawn_with(&["--metrics-token", TOKEN]).await;
    let missing = app.get("/metrics", None).await;
    missing.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(missing.header("x-content-type-options"), Some("nosniff"));
    app.get("/metrics", Some("metrics-token-012345678"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    app.get_with_authorization("/metrics", TOKEN)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A user's token is not the metrics token.
    let (user_token, _) = app.register("reader@example.com", PASSWORD).await;
    app.get("/metrics", Some(&user_token))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let allowed = app.get("/metrics", Some(TOKEN)).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    let m = Scrape::parse(&allowed.text);
    assert_eq!(
        m.get(r#"ragd_http_requests_total{method="GET",route="/metrics",status="401"}"#),
        4.0,
        "refused scrapes are counted"
    );
    let lower = app
        .get_with_authorization("/metrics", &format!("bearer {TOKEN}"))
        .await;
    assert_eq!(lower.status, StatusCode::OK, "the scheme is case-insensitive");
}

#[tokio::test]
async fn a_short_metrics_token_is_a_bad_setting() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = ragd::Config::from_args([
        "--data-dir",
        &dir.path().display().to_string(),
        "--metrics-token",
        "short",
    ])
    .expect("the flag parses");
    let Err(err) = ragd::App::build(config).await else {
        panic!("a 5-character metrics token must be refused");
    };
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("--metrics-token"), "{err}");
}

/// Every line of a fresh server's output has the text format's shape, and
/// every documented metric is there before anything happened.
#[tokio::test]
async fn the_output_is_prometheus_text_with_every_metric() {
    let app = TestApp::spawn().await;
    let (response, m) = scrape(&app).await;
    for name in [
        "ragd_ws_sockets_open",
        "ragd_ws_events_delivered_total",
        "ragd_events_published_total",
        "ragd_db_write_queue_depth",
        "ragd_job_queue_oldest_wait_seconds",
    ] {
        assert!(m.has(name), "{name} in\n{}", response.text);
    }
    for series in [
        r#"ragd_ws_closes_total{reason="too_slow"}"#,
        r#"ragd_jobs{status="queued"}"#,
        r#"ragd_job_attempts_total{outcome="failed"}"#,
        r#"ragd_replies_total{status="interrupted"}"#,
    ] {
        assert_eq!(m.get(series), 0.0);
        assert!(m.has(series), "{series} in\n{}", response.text);
    }
    for line in [
        "# TYPE ragd_ws_closes_total counter",
        "# TYPE ragd_ws_sockets_open gauge",
        "# TYPE ragd_db_commit_duration_seconds histogram",
    ] {
        assert!(response.text.contains(line), "{line} in\n{}", response.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_parse_and_a_cancelled_reply_are_counted() {
    let answerer = TestAnswerer::gated();
    let app = TestApp::spawn_with_hooks(&[], answerer.hooks()).await;
    let api = Api::of(&app);
    let token = api.register("failures@example.com").await;
    let doc = api
        .upload_ok(&token, "no-text.pdf", &fixture("no-text.pdf"))
        .await;
    api.wait_for_status(&token, id(&doc), "failed").await;

    let conversation = app.create_conversation(&token, None).await;
    let (_, pending) = ask_async(&app, &token, &conversation, "a slow one").await;
    answerer.wait_for_calls(1).await;
    app.post_empty(&cancel_path(&pending), Some(&token))
        .await
        .expect(StatusCode::OK);

    let (_, m) = scrape(&app).await;
    assert_eq!(m.get(r#"ragd_job_attempts_total{outcome="failed"}"#), 1.0);
    assert_eq!(m.get(r#"ragd_job_attempts_total{outcome="succeeded"}"#), 0.0);
    assert_eq!(
        m.get(r#"ragd_job_attempt_duration_seconds_count{outcome="failed"}"#),
        1.0
    );
    assert_eq!(m.get(r#"ragd_replies_total{status="cancelled"}"#), 1.0);
    assert_eq!(m.get(r#"ragd_replies_total{status="done"}"#), 0.0);
    assert_eq!(m.get("ragd_reply_generation_duration_seconds_count"), 1.0);
    assert_eq!(
        m.get(r#"ragd_http_requests_total{method="POST",route="/api/messages/{id}/cancel",status="200"}"#),
        1.0
    );
    assert_eq!(
        m.get(
            r#"ragd_http_requests_total{method="POST",route="/api/conversations/{id}/messages",status="202"}"#
        ),
        1.0
    );
}
