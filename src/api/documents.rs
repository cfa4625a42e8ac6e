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
use super::upload::{FORM_OVERHEAD, MIB};
use super::{download, upload};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::db::ListKey;
use crate::db::documents::{self, Document};
use crate::db::jobs::Job;
use crate::documents as ops;
use crate::error::ApiError;

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

async fn file(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (doc, file) = ops::open(&state, &user.id, &id).await?;
    download::response(&doc, file).await
}

async fn jobs(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = ops::jobs(&state, &user.id, &id).await?;
    Ok(Json(json!({ "items": items })))
}

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

async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ops::delete(&state, &user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
