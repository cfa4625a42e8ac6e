//! `GET /metrics` (Prometheus text, behind `--metrics-token` when set) and
//! the layer that counts every request by route template and status.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::auth::credentials::bearer_token;
use crate::db;
use crate::error::ApiError;
use crate::instruments::{JobQueue, Metrics, Scrape, UNMATCHED, method_label};

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Prometheus metrics (text format).
///
/// When the server is configured with a metrics token, the request must
/// carry it as `Authorization: Bearer <token>`; otherwise none is needed.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "Counters and histograms in the Prometheus text format",
            content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "A metrics token is configured and was not sent", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = &state.config.metrics_token
        && !token_matches(bearer_token(&headers), token.0.trim())
    {
        return Err(ApiError::Unauthorized("missing or wrong metrics token"));
    }
    let now = db::now_ms();
    // The metrics still render when the database does not answer: the job
    // gauges keep their last values, and the failure is logged.
    let jobs = match state.db.read(move |conn| db::jobs::queue(conn, now)).await {
        Ok(queue) => Some(JobQueue {
            queued: queue.queued,
            running: queue.running,
            oldest_due_wait: queue.oldest_due.map_or(std::time::Duration::ZERO, |due| {
                std::time::Duration::from_millis(u64::try_from(now.saturating_sub(due)).unwrap_or(0))
            }),
        }),
        Err(err) => {
            tracing::warn!(error = %err, "metrics: cannot read the job queue");
            None
        }
    };
    let text = state.metrics.render(Scrape {
        write_queue: state.db.queued_writes(),
        jobs,
    });
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response())
}

/// Compares the token in constant time (over digests, so neither its
/// content nor its length leaks through timing).
fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Middleware: counts the request by method, route template and status,
/// and records its time to the response head.
pub async fn record_request(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // Axum inserts the matched template before route layers run; a cheap
    // clone (an `Arc`), taken before the request moves on.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    metrics
        .http
        .observe(method, route, response.status(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn only_the_exact_token_matches() {
        let expected = "s3cret-metrics-token";
        assert!(token_matches(Some(expected), expected));
        assert!(!token_matches(None, expected));
        assert!(!token_matches(Some(""), expected));
        assert!(!token_matches(Some("s3cret-metrics-toke"), expected));
        assert!(!token_matches(Some("s3cret-metrics-token "), expected));
    }
}
