//! `/api/conversations`: create, list, get, rename, delete; every query is
//! scoped to the caller.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};

use super::extract::{
    AppJson, AppQuery, DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_time_cursor, limit,
};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::chat;
use crate::db::{self, ListKey, conversations::Conversation};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations", get(list).post(create))
        .route("/api/conversations/{id}", get(fetch).patch(rename).delete(remove))
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize)]
struct RenameBody {
    /// Missing is 400 (a missing field); present but null is 422.
    #[serde(deserialize_with = "present")]
    title: Option<String>,
}

/// Deserializes a field that must be present but may be null.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    before: Option<String>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<Conversation>,
    next_before: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(body): AppJson<CreateBody>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let conversation = chat::conversations::create(&state, &user.id, body.title).await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let limit = limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = match query.before.as_deref() {
        None => None,
        Some(cursor) => {
            let (updated_at, id) = decode_time_cursor(cursor)?;
            Some(ListKey { at: updated_at, id })
        }
    };
    let (items, last) = state
        .db
        .read(move |conn| db::conversations::list(conn, &user.id, limit, before.as_ref()))
        .await?;
    let next_before = last.map(|k| encode_time_cursor(k.at, &k.id));
    Ok(Json(Page { items, next_before }))
}

async fn fetch(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        state
            .db
            .read(move |conn| db::conversations::get(conn, &user.id, &id))
            .await?,
    ))
}

async fn rename(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    AppJson(body): AppJson<RenameBody>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        chat::conversations::rename(&state, &user.id, &id, body.title).await?,
    ))
}

async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    chat::conversations::delete(&state, &user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
