//! `/api/documents`: upload (streamed to disk, checked, then committed with
//! its parse job and events), list, get, download, jobs, reprocess, delete.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::extract::{
    AppQuery, DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_time_cursor, fingerprint, idempotency_key,
    limit,
};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::db::documents::{self, Document, ListKey, NewDocument};
use crate::db::idempotency::{self, Recorded};
use crate::db::{self, jobs};
use crate::error::ApiError;
use crate::ingest::Kind;

/// Bytes of multipart framing allowed on top of the file itself.
const FORM_OVERHEAD: u64 = 64 * 1024;
/// Bytes kept from the start of an upload to check its type.
const HEAD_BYTES: usize = 8 * 1024;
const MIB: u64 = 1 << 20;

pub fn router(state: &AppState) -> Router<AppState> {
    let body_limit = state
        .config
        .max_upload_mb
        .saturating_mul(MIB)
        .saturating_add(FORM_OVERHEAD);
    Router::new()
        .route(
            "/api/documents",
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(
                    usize::try_from(body_limit).unwrap_or(usize::MAX),
                ))
                .layer(axum::middleware::map_request(super::part_headers::clean)),
        )
        .route("/api/documents/{id}", get(fetch).delete(remove))
        .route("/api/documents/{id}/file", get(download))
        .route("/api/documents/{id}/jobs", get(list_jobs))
        .route("/api/documents/{id}/reprocess", post(reprocess))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    before: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = match query.before.as_deref() {
        None => None,
        Some(cursor) => {
            let (created_at, id) = decode_time_cursor(cursor)?;
            Some(ListKey { created_at, id })
        }
    };
    let (items, last) = state
        .db
        .read(move |conn| documents::list(conn, &user.id, limit, before.as_ref()))
        .await?;
    let next_before = last.map(|k| encode_time_cursor(k.created_at, &k.id));
    Ok(Json(json!({"items": items, "next_before": next_before})))
}

async fn fetch(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Document>, ApiError> {
    Ok(Json(
        state
            .db
            .read(move |conn| documents::get(conn, &user.id, &id))
            .await?,
    ))
}

async fn list_jobs(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = state
        .db
        .read(move |conn| jobs::for_document(conn, &user.id, &id))
        .await?;
    Ok(Json(json!({ "items": items })))
}

async fn reprocess(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<jobs::Job>), ApiError> {
    let (now, retries) = (db::now_ms(), state.config.job_max_retries);
    let job = state
        .db
        .write(move |tx| documents::reprocess(tx, &user.id, &id, retries, now))
        .await?;
    state.worker.job_queued();
    Ok((StatusCode::ACCEPTED, Json(job)))
}

async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = db::now_ms();
    let document_id = id.clone();
    state
        .write_to_free_space(move |tx| documents::delete(tx, &user.id, &document_id, now))
        .await?;
    state.worker.cancel_document(&id);
    remove_file(&state.files_dir.join(&id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a stored file; a missing one is fine (the start-up sweep also
/// removes files no document owns).
pub async fn remove_file(path: &FsPath) {
    if let Err(err) = tokio::fs::remove_file(path).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %err, path = %path.display(), "cannot remove a stored file");
    }
}

async fn download(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let doc_id = id.clone();
    let doc = state
        .db
        .read(move |conn| documents::get(conn, &user.id, &doc_id))
        .await?;
    let read_error = |err: std::io::Error| {
        if err.kind() == std::io::ErrorKind::NotFound {
            ApiError::NotFound
        } else {
            ApiError::internal(format!("cannot read a stored file: {err}"))
        }
    };
    let mut file = tokio::fs::File::open(state.files_dir.join(&id))
        .await
        .map_err(read_error)?;
    // The head tells a text file's charset; it is sent first, then the rest.
    let mut head = vec![0; HEAD_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]).await.map_err(read_error)? {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    let content_type = served_type(&doc, &head);
    let rest = tokio_util::io::ReaderStream::new(file);
    let first = futures_util::stream::once(std::future::ready(Ok(axum::body::Bytes::from(head))));
    let body = Body::from_stream(futures_util::StreamExt::chain(first, rest));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).map_err(ApiError::internal)?,
    );
    // The bytes are a user's upload: never sniffed, never run as a page,
    // even when opened directly.
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

/// An upload being written to `files/.upload-*`; removed unless kept.
struct Incoming {
    path: PathBuf,
    keep: bool,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What streaming the `file` field produced.
struct Received {
    incoming: Incoming,
    filename: String,
    size: u64,
    sha256: String,
    head: Vec<u8>,
}

async fn upload(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Document>), ApiError> {
    let limit = state.config.max_upload_mb.saturating_mul(MIB);
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the upload is larger than {} MiB",
            state.config.max_upload_mb
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(FORM_OVERHEAD)) {
        return Err(too_large());
    }
    let key = idempotency_key(&headers)?;
    // A nearly full disk keeps its last space for deletions: no upload
    // while the disk reserve cannot be in place (it is put back here as
    // soon as there is room for it).
    if !state.reserve.allows_upload().await {
        return Err(ApiError::InsufficientStorage);
    }
    let mut multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType("expected multipart/form-data with a `file` field".into())
    })?;
    let received = loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(&e, limit))?;
        match field {
            None => return Err(ApiError::BadRequest("the form has no `file` field".into())),
            Some(field) if field.name() == Some("file") => break receive(&state, field, limit).await?,
            Some(_) => continue,
        }
    };
    if received.size == 0 {
        return Err(ApiError::Validation("the file is empty".into()));
    }
    let kind = Kind::from_filename(&received.filename).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "unsupported file type: upload .txt, .md, .html, .pdf, .docx, .csv or .json".into(),
        )
    })?;
    if !kind.matches(&received.head) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the file's contents are not a valid .{} file",
            kind.as_str()
        )));
    }
    store(&state, &user, key, kind, received).await
}

/// Moves the received file into place and commits the document, its job
/// and their events; a repeat of an idempotent upload answers with the
/// document the first one created.
async fn store(
    state: &AppState,
    user: &CurrentUser,
    key: Option<String>,
    kind: Kind,
    mut received: Received,
) -> Result<(StatusCode, Json<Document>), ApiError> {
    let id = db::new_id();
    let final_path = state.files_dir.join(&id);
    let from = received.incoming.path.clone();
    let to = final_path.clone();
    let dir = state.files_dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::rename(&from, &to)?;
        // The rename itself must survive a power cut, like the bytes.
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(io_error)?;
    received.incoming.path = final_path;

    let body = format!("{}\n{}", received.filename, received.sha256);
    let print = fingerprint("POST", "/api/documents", body.as_bytes());
    let new = NewDocument {
        id,
        user_id: user.id.clone(),
        filename: received.filename.clone(),
        content_type: kind.content_type().to_owned(),
        kind: kind.as_str().to_owned(),
        size_bytes: i64::try_from(received.size).unwrap_or(i64::MAX),
        sha256: received.sha256.clone(),
    };
    let (now, retries) = (db::now_ms(), state.config.job_max_retries);
    let stored = state
        .db
        .write(move |tx| {
            if let Some(key) = &key
                && let Some(recorded) = idempotency::find(tx, &new.user_id, key, &print, now)?
            {
                return Ok(Err(recorded));
            }
            let (doc, _job) = documents::create(tx, &new, retries, now)?;
            if let Some(key) = &key {
                let recorded = Recorded {
                    status: 201,
                    response: json!({ "document": doc.id }).to_string(),
                };
                idempotency::record(
                    tx,
                    &new.user_id,
                    key,
                    "POST",
                    "/api/documents",
                    &print,
                    &recorded,
                    now,
                )?;
            }
            Ok(Ok(doc))
        })
        .await?;
    match stored {
        Ok(doc) => {
            received.incoming.keep = true;
            state.worker.job_queued();
            Ok((StatusCode::CREATED, Json(doc)))
        }
        Err(recorded) => {
            // The first upload's document; this copy of the bytes goes.
            let first: serde_json::Value =
                serde_json::from_str(&recorded.response).map_err(ApiError::internal)?;
            let doc_id = first["document"].as_str().unwrap_or_default().to_owned();
            let user_id = user.id.clone();
            let doc = state
                .db
                .read(move |conn| documents::get(conn, &user_id, &doc_id))
                .await?;
            Ok((StatusCode::CREATED, Json(doc)))
        }
    }
}

/// Streams the field to `files/.upload-<uuid>`, hashing as it goes, never
/// holding the whole file in memory; fsyncs it before returning.
async fn receive(state: &AppState, mut field: Field<'_>, limit: u64) -> Result<Received, ApiError> {
    let raw_name = field
        .file_name()
        .map(str::to_owned)
        .or_else(|| extended_filename(field.headers()));
    let filename = super::names::sanitize_filename(raw_name.as_deref().unwrap_or_default());
    let path = state
        .files_dir
        .join(format!(".upload-{}", uuid::Uuid::now_v7().simple()));
    let incoming = Incoming {
        path: path.clone(),
        keep: false,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(HEAD_BYTES);
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e, limit))? {
        size = size.saturating_add(chunk.len() as u64);
        if size > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the upload is larger than {} MiB",
                limit / MIB
            )));
        }
        if head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io_error)?;
    }
    file.flush().await.map_err(io_error)?;
    file.sync_all().await.map_err(io_error)?;
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Received {
        incoming,
        filename,
        size,
        sha256,
        head,
    })
}

fn multipart_error(err: &MultipartError, limit: u64) -> ApiError {
    let (status, text) = (err.status(), err.body_text());
    if crate::server::body_too_slow(err) {
        ApiError::RequestTimeout
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("the upload is larger than {} MiB", limit / MIB))
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

fn io_error(err: std::io::Error) -> ApiError {
    match err.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => ApiError::InsufficientStorage,
        _ => ApiError::internal(format!("cannot store the upload: {err}")),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn content_disposition_has_an_ascii_fallback_and_utf8_name() {
        assert_eq!(
            content_disposition("Zürich report.pdf"),
            "attachment; filename=\"Z_rich report.pdf\"; filename*=UTF-8''Z%C3%BCrich%20report.pdf"
        );
    }
}
