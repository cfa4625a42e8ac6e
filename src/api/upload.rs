//! Receiving an upload: the multipart `file` field streamed to a temporary
//! file (`files::Incoming`), hashed as it goes and never held in memory,
//! cut off above `--max-upload-mb` (413), fsynced. What it must be is
//! `documents::upload`'s to check.

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::documents::Received;
use crate::error::{ApiError, io_error};
use crate::names;

/// Bytes of multipart framing allowed on top of the file itself.
pub const FORM_OVERHEAD: u64 = 64 * 1024;
/// Bytes kept from the start of an upload to check its type.
const HEAD_BYTES: usize = 8 * 1024;
pub const MIB: u64 = 1 << 20;

/// 413 at once for a body whose declared length is above the limit (the
/// first check of an upload).
pub fn check_length(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let limit = state.config.max_upload_mb.saturating_mul(MIB);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(FORM_OVERHEAD)) {
        return Err(too_large(limit));
    }
    Ok(())
}

/// The form's `file` field, received whole (other fields are ignored).
pub async fn receive(
    state: &AppState,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Received, ApiError> {
    let limit = state.config.max_upload_mb.saturating_mul(MIB);
    let mut multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType("expected multipart/form-data with a `file` field".into())
    })?;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(&e, limit))?;
        match field {
            None => return Err(ApiError::BadRequest("the form has no `file` field".into())),
            Some(field) if field.name() == Some("file") => return stream(state, field, limit).await,
            Some(_) => continue,
        }
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!("the upload is larger than {} MiB", limit / MIB))
}

/// Streams the field to a temporary file, hashing as it goes; fsyncs it.
async fn stream(state: &AppState, mut field: Field<'_>, limit: u64) -> Result<Received, ApiError> {
    let raw_name = field
        .file_name()
        .map(str::to_owned)
        .or_else(|| extended_filename(field.headers()));
    let filename = names::sanitize_filename(raw_name.as_deref().unwrap_or_default());
    let mut incoming = state.files.incoming().await.map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(HEAD_BYTES);
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e, limit))? {
        size = size.saturating_add(chunk.len() as u64);
        if size > limit {
            return Err(too_large(limit));
        }
        if head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        incoming.write(&chunk).await.map_err(io_error)?;
    }
    incoming.sync().await.map_err(io_error)?;
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Received {
        incoming,
        filename,
        size,
        sha256,
        head,
    })
}

/// The RFC 5987 `filename*=UTF-8''...` of a part's Content-Disposition,
/// which some clients send instead of a plain `filename` for non-ASCII
/// names (the multipart parser reads only the plain one).
fn extended_filename(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    let encoded = value
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("filename*="))?;
    let (charset, rest) = encoded.split_once('\'')?;
    let encoded = rest.split_once('\'')?.1.trim_matches('"');
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(b) = input.next() {
        if b == b'%' {
            let hex = [input.next()?, input.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

fn multipart_error(err: &MultipartError, limit: u64) -> ApiError {
    let (status, text) = (err.status(), err.body_text());
    if crate::server::body_too_slow(err) {
        ApiError::RequestTimeout
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else if text == "failed to read headers" {
        // Control bytes were removed from the part headers already
        // (`part_headers`): what is left is most likely a line break in a
        // header value, which no header line can carry.
        ApiError::BadRequest(format!(
            "malformed multipart body: {text}: a part's headers cannot be read; \
             is there a line break in the file name?"
        ))
    } else {
        ApiError::BadRequest(format!("malformed multipart body: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn extended_filenames_are_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("form-data; name=\"file\"; filename*=utf-8''Z%C3%BCrich%20notes.md"),
        );
        assert_eq!(extended_filename(&headers).as_deref(), Some("Zürich notes.md"));
    }
}
