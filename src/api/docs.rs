//! `GET /api/openapi.json`, the OpenAPI document, and `GET /api/docs`,
//! Swagger UI over it. Swagger UI's files are compiled into the binary
//! (utoipa-swagger-ui's vendored copy); the page and the script that starts
//! Swagger UI are ours, both files, so that the page runs under a policy
//! that allows its own origin's scripts and styles and nothing inline.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::openapi;
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::web::content_type;

/// The docs page's policy: like the web page's (`web::PAGE_POLICY`), its
/// own scripts, styles and images and requests to its own origin ("Try it
/// out"); no inline script or style, no `eval`, no framing, no forms.
pub const DOCS_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Swagger UI's files that the page loads.
const SWAGGER_FILES: [&str; 4] = [
    "swagger-ui.css",
    "index.css",
    "swagger-ui-bundle.js",
    "favicon-32x32.png",
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(document))
        .route("/api/docs", get(page))
        .route("/api/docs/{file}", get(asset))
}

/// A file of the page, with its ETag.
struct Asset {
    bytes: Cow<'static, [u8]>,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(bytes: Cow<'static, [u8]>, content_type: &'static str) -> Asset {
        let hash = Sha256::digest(&bytes);
        let etag = format!(
            "\"{}\"",
            hash[..12].iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        Asset {
            bytes,
            content_type,
            etag,
        }
    }
}

/// The page, our initializer and Swagger UI's files, hashed once.
static FILES: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    let config = Arc::new(utoipa_swagger_ui::Config::default());
    let mut files = HashMap::new();
    for name in SWAGGER_FILES {
        // Swagger UI's own files are served as they are (only its
        // initializer, which ragd does not use, is generated).
        if let Ok(Some(file)) = utoipa_swagger_ui::serve(name, config.clone()) {
            files.insert(name, Asset::new(file.bytes, content_type(name)));
        }
    }
    for (name, text) in [
        ("index.html", include_str!("docs/index.html")),
        ("initializer.js", include_str!("docs/initializer.js")),
    ] {
        files.insert(
            name,
            Asset::new(Cow::Borrowed(text.as_bytes()), content_type(name)),
        );
    }
    files
});

/// This API's OpenAPI 3.1 document (no token needed).
#[utoipa::path(get, path = "/api/openapi.json", tag = "docs",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)))]
async fn document() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        openapi::document(),
    )
        .into_response()
}

/// Swagger UI over this document (no token needed; "Authorize" takes one).
#[utoipa::path(get, path = "/api/docs", tag = "docs",
    responses(
        (status = 200, description = "The page (`text/html`)", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    ))]
async fn page(headers: HeaderMap) -> Result<Response, ApiError> {
    let mut response = serve("index.html", &headers)?;
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_POLICY),
    );
    Ok(response)
}

/// The docs page's scripts, styles and icon (no token needed).
#[utoipa::path(get, path = "/api/docs/{file}", tag = "docs",
    params(("file" = String, Path, description = "A file of the page", example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The file, with an ETag and `Cache-Control: no-cache`", content_type = "application/octet-stream", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    if file == "index.html" {
        // The page is `/api/docs`, with its policy.
        return Err(ApiError::NotFound);
    }
    serve(&file, &headers)
}

/// One file, or 304 when the client's copy is current.
fn serve(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let file = FILES.get(name).ok_or(ApiError::NotFound)?;
    crate::web::revalidated(
        request,
        &file.etag,
        file.content_type,
        file.bytes.clone().into_owned(),
    )
}
