//! HTTP routing: one router per resource, merged here, with the layers every
//! request passes (metrics, request log, body limit, panic guard) and JSON
//! answers for unknown paths and wrong methods.

pub mod auth;
pub mod conversations;
mod docs;
pub mod documents;
mod download;
pub mod extract;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod openapi;
mod upload;

mod part_headers;
pub mod search;
pub mod ws;

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::AppState;
use crate::error::ApiError;

/// Largest JSON body accepted (API.md: 1 MiB, else 413).
pub const MAX_JSON_BODY: usize = 1 << 20;

/// The whole HTTP surface of ragd.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(conversations::router())
        .merge(messages::router())
        .merge(documents::router(&state))
        .merge(search::router())
        .merge(ws::router())
        .merge(metrics::router())
        .merge(docs::router())
        .merge(crate::web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(crate::telemetry::log_request))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::record_request,
        ))
        .with_state(state)
}

/// Headers every response carries unless its route set its own: no type
/// sniffing, no referrer, and no framing by another page (API responses
/// load nothing, so their policy allows nothing; the web page and
/// downloads set their own `Content-Security-Policy`).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}
