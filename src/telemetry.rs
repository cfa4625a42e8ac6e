//! Logging set-up and the per-request log line (request id, redacted query).

use std::io::IsTerminal;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`),
/// output on stderr as text or JSON lines. Text is coloured only on a
/// terminal (not in a file, the journal or `docker logs`), and never with
/// `NO_COLOR` set.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

const REQUEST_ID: &str = "x-request-id";

/// Middleware: one log line per request with method, path (query redacted),
/// status, latency and request id; the id is also returned as `x-request-id`.
pub async fn log_request(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(redact_query);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }

    let span = tracing::info_span!("request", id = %request_id);
    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status().as_u16();
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let target = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    span.in_scope(|| {
        if path == "/healthz" || path == "/readyz" || path == "/metrics" {
            tracing::debug!(%method, path = %target, status, latency_ms, "request");
        } else if status >= 500 {
            tracing::warn!(%method, path = %target, status, latency_ms, "request");
        } else {
            tracing::info!(%method, path = %target, status, latency_ms, "request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn is_acceptable_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Query parameters whose values are logged (ids, cursors and numbers), and
/// the most characters of such a value. Everything else (credentials under
/// any spelling, search text) is not.
const LOGGED_PARAMS: [(&str, usize); 5] = [
    ("since", 20),
    ("limit", 20),
    ("epoch", 64),
    ("before", 128),
    ("after", 128),
];

/// The query as logged: a parameter of `LOGGED_PARAMS`, spelled exactly so
/// and with a value of the shape ids and cursors have (letters, digits, `-`
/// and `_`), as it is; any other value as `REDACTED`. A name that is not a
/// plain word (`tok%65n`, which the server decodes to `token`) is redacted
/// with its value, so no spelling of a credential reaches the log.
pub fn redact_query(query: &str) -> String {
    let plain = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    query
        .split('&')
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let logged = LOGGED_PARAMS
                .iter()
                .any(|&(name, max)| name == key && plain(value, max));
            if logged {
                pair.to_owned()
            } else if plain(key, 32) {
                format!("{key}=REDACTED")
            } else {
                "REDACTED".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::redact_query;

    #[test]
    fn only_allowlisted_parameters_keep_their_values() {
        assert_eq!(
            redact_query("since=4&token=abc.def.ghi"),
            "since=4&token=REDACTED"
        );
        assert_eq!(redact_query("ticket=xyz"), "ticket=REDACTED");
        assert_eq!(redact_query("q=secret+plans&limit=5"), "q=REDACTED&limit=5");
        assert_eq!(
            redact_query("before=MTc5NTg5NjA4MTEyMw-abc_1&epoch=9f3c"),
            "before=MTc5NTg5NjA4MTEyMw-abc_1&epoch=9f3c"
        );
    }

    #[test]
    fn encoded_names_and_odd_values_are_redacted_whole() {
        assert_eq!(redact_query("tok%65n=eyJhbGciOi.x.y"), "REDACTED");
        assert_eq!(redact_query("%73ince=eyJhbGciOi.x.y"), "REDACTED");
        // An allowlisted name with a value no id or cursor has.
        assert_eq!(redact_query("since=eyJhbGciOi.x.y"), "since=REDACTED");
        assert_eq!(redact_query("since=a%20b"), "since=REDACTED");
    }
}
