//! `/api/documents`: upload, list, get, download, jobs, reprocess, delete.
//! The operations are `documents`'; receiving an upload is `upload.rs`'s,
//! serving the original `download.rs`'s.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::{
    AppQuery, DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_time_cursor, idempotency_key, limit,
};
use super::openapi::{DocumentPage, JobList, UploadForm};
use super::upload::{FORM_OVERHEAD, MIB};
use super::{download, upload};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::db::ListKey;
use crate::db::documents::{self, Document};
use crate::db::jobs::Job;
use crate::documents as ops;
use crate::error::{ApiError, ErrorBody};

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
                .post(create)
                .layer(DefaultBodyLimit::max(
                    usize::try_from(body_limit).unwrap_or(usize::MAX),
                ))
                .layer(axum::middleware::map_request(super::part_headers::clean)),
        )
        .route("/api/documents/{id}", get(fetch).delete(remove))
        .route("/api/documents/{id}/file", get(file))
        .route("/api/documents/{id}/jobs", get(jobs))
        .route("/api/documents/{id}/reprocess", post(reprocess))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// A `next_before` cursor of an earlier page.
    before: Option<String>,
}

#[utoipa::path(get, path = "/api/documents", tag = "documents", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's documents, newest first", body = DocumentPage),
        (status = 422, description = "`limit` out of range", body = ErrorBody),
    ))]
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
            Some(ListKey { at: created_at, id })
        }
    };
    let (items, last) = state
        .db
        .read(move |conn| documents::list(conn, &user.id, limit, before.as_ref()))
        .await?;
    let next_before = last.map(|k| encode_time_cursor(k.at, &k.id));
    Ok(Json(json!({"items": items, "next_before": next_before})))
}

/// Upload a document.
///
/// Answers once the file is on disk and the document, its parse job and
/// their events are committed; parsing runs in the background (watch the
/// socket or `GET /api/documents/{id}`). The type comes from the file
/// name's extension and is checked against the bytes; checks run in the
/// order size (413), empty (422), type (415).
#[utoipa::path(post, path = "/api/documents", tag = "documents", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1 to 128 characters: a repeat with the same name and bytes within 24 h stores nothing new")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored, `queued` for parsing", body = Document),
        (status = 409, description = "The `Idempotency-Key` was used for another request", body = ErrorBody),
        (status = 413, description = "Above `--max-upload-mb`", body = ErrorBody),
        (status = 415, description = "Not multipart, an unsupported extension, or bytes that do not match it", body = ErrorBody),
        (status = 422, description = "An empty file", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing was stored", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Document>), ApiError> {
    upload::check_length(&state, &headers)?;
    let key = idempotency_key(&headers)?;
    // A nearly full disk keeps its last space for deletions: no upload
    // while the disk reserve cannot be in place (it is put back here as
    // soon as there is room for it).
    if !state.reserve.allows_upload().await {
        return Err(ApiError::InsufficientStorage);
    }
    let received = upload::receive(&state, multipart).await?;
    let doc = ops::upload(&state, &user.id, key, received).await?;
    Ok((StatusCode::CREATED, Json(doc)))
}

#[utoipa::path(get, path = "/api/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 200, description = "The document", body = Document),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
    ))]
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

/// Download the original file.
///
/// The bytes as uploaded, as an attachment named after the document, served
/// inert (`Content-Security-Policy: sandbox`; HTML as
/// `application/octet-stream`); text kinds carry their charset.
#[utoipa::path(get, path = "/api/documents/{id}/file", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 200, description = "The original bytes", content_type = "application/octet-stream", body = String),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
    ))]
async fn file(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (doc, file) = ops::open(&state, &user.id, &id).await?;
    download::response(&doc, file).await
}

#[utoipa::path(get, path = "/api/documents/{id}/jobs", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 200, description = "Its parse jobs, newest first, each with every attempt", body = JobList),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
    ))]
async fn jobs(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = ops::jobs(&state, &user.id, &id).await?;
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(post, path = "/api/documents/{id}/reprocess", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 202, description = "A new parse job; the old chunks stay searchable until the new ones replace them", body = Job),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
        (status = 409, description = "A job is queued or running", body = ErrorBody),
    ))]
async fn reprocess(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(ops::reprocess(&state, &user.id, &id).await?),
    ))
}

#[utoipa::path(delete, path = "/api/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 204, description = "Deleted: its chunks, its file and its jobs"),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ops::delete(&state, &user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
