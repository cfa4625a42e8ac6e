//! `GET /api/documents/{id}/file`: the original bytes, inert (a user's
//! upload is never sniffed or run as a page), as an attachment with its
//! name (RFC 6266), text kinds with their charset.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;

use crate::db::documents::Document;
use crate::error::ApiError;
use crate::ingest::Kind;

/// Bytes read first to judge a text file's charset.
const HEAD_BYTES: usize = 8 * 1024;

/// The response carrying `doc`'s original, read from `file`.
pub async fn response(doc: &Document, mut file: tokio::fs::File) -> Result<Response, ApiError> {
    // The head tells a text file's charset; it is sent first, then the rest.
    let mut head = vec![0; HEAD_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match file
            .read(&mut head[filled..])
            .await
            .map_err(|e| ApiError::internal(format!("cannot read a stored file: {e}")))?
        {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    let content_type = served_type(doc, &head);
    let first = futures_util::stream::once(std::future::ready(Ok(Bytes::from(head))));
    let rest = tokio_util::io::ReaderStream::new(file);
    let mut response = Body::from_stream(futures_util::StreamExt::chain(first, rest)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).map_err(ApiError::internal)?,
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&doc.filename)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(doc.size_bytes.max(0).unsigned_abs()),
    );
    Ok(response)
}

/// The type a stored file is served as: HTML (which a browser would run)
/// as bytes to save, text kinds with their charset (from `head`, the
/// file's first bytes), the rest as the kind's type.
fn served_type(doc: &Document, head: &[u8]) -> String {
    const BYTES: &str = "application/octet-stream";
    let whole = usize::try_from(doc.size_bytes).is_ok_and(|size| head.len() >= size);
    match Kind::parse_content_type(&doc.content_type) {
        None | Some(Kind::Html) => BYTES.to_owned(),
        Some(kind @ (Kind::Txt | Kind::Md | Kind::Csv)) => format!(
            "{}; charset={}",
            kind.content_type(),
            crate::ingest::text::charset(head, whole).to_ascii_lowercase()
        ),
        Some(kind) => kind.content_type().to_owned(),
    }
}

/// `attachment` with an ASCII fallback name and the exact name in
/// `filename*` (RFC 6266 / RFC 5987).
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in filename.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_has_an_ascii_fallback_and_utf8_name() {
        assert_eq!(
            content_disposition("Zürich report.pdf"),
            "attachment; filename=\"Z_rich report.pdf\"; filename*=UTF-8''Z%C3%BCrich%20report.pdf"
        );
    }
}
