//! The built-in web page: `web/` compiled into the binary (rust-embed; a
//! debug build reads the folder at run time, so the page can be edited
//! without a rebuild). `GET /` is the page, `GET /assets/...` its files,
//! each with an ETag (revalidated on every load, answered 304 when
//! unchanged) and the page with a strict Content-Security-Policy: nothing
//! inline, nothing from another origin.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use crate::AppState;
use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Files;

/// What the page may load and run: its own scripts, styles and images, and
/// requests (HTTP and its WebSocket) to its own origin; no inline script or
/// style, no plugins, no framing, no form posts elsewhere.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/assets/{*path}", get(asset))
}

/// The built-in web page (no token needed).
#[utoipa::path(get, path = "/", tag = "page",
    responses(
        (status = 200, description = "The page (`text/html`), with a strict Content-Security-Policy", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    ))]
async fn page(headers: HeaderMap) -> Result<Response, ApiError> {
    let mut response = serve("index.html", &headers)?;
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    Ok(response)
}

/// The page's scripts, style and icons (no token needed).
#[utoipa::path(get, path = "/assets/{path}", tag = "page",
    params(("path" = String, Path, description = "A file of the page", example = "app.js")),
    responses(
        (status = 200, description = "The file, with an ETag and `Cache-Control: no-cache`", content_type = "application/octet-stream", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 404, description = "No such file", body = crate::error::ErrorBody),
    ))]
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    serve(&format!("assets/{path}"), &headers)
}

/// One embedded file, or 304 when the client's copy is current.
fn serve(path: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    // rust-embed never reads outside `web/`; a `..` is simply not a file.
    let file = Files::get(path).ok_or(ApiError::NotFound)?;
    let hash = file.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash[..12].iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    revalidated(request, &etag, content_type(path), file.data.into_owned())
}

/// A file that never changes while the binary runs: 304 when the request
/// names its `etag` in `If-None-Match`, else the bytes; either way with the
/// ETag and `Cache-Control: no-cache` (names carry no version, so clients
/// revalidate on every load, and a 304 costs little). The page's and the
/// API docs' files both go through it.
pub(crate) fn revalidated(
    request: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    bytes: impl Into<axum::body::Body>,
) -> Result<Response, ApiError> {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let etag = HeaderValue::from_str(etag).map_err(ApiError::internal)?;
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            bytes.into(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The content type of an embedded file, by its extension.
pub(crate) fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json" | "webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}
