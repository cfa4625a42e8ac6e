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
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations", get(list).post(create))
        .route("/api/conversations/{id}", get(fetch).patch(rename).delete(remove))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct CreateBody {
    /// 1 to 200 characters after cleaning; "New chat" when absent.
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RenameBody {
    /// Missing is 400 (a missing field); present but null is 422.
    #[serde(deserialize_with = "present")]
    #[schema(required = true)]
    title: Option<String>,
}

/// Deserializes a field that must be present but may be null.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
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

/// Most recently updated first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ConversationPage)]
struct Page {
    items: Vec<Conversation>,
    /// Pass as `before` for the next page; null at the end.
    #[schema(required = true)]
    next_before: Option<String>,
}

#[utoipa::path(post, path = "/api/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = Conversation),
        (status = 422, description = "A blank or too long title", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(body): AppJson<CreateBody>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let conversation = chat::conversations::create(&state, &user.id, body.title).await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

#[utoipa::path(get, path = "/api/conversations", tag = "conversations", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's conversations", body = Page),
        (status = 422, description = "`limit` out of range", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/api/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
    ))]
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

#[utoipa::path(patch, path = "/api/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "The conversation's id")),
    request_body = RenameBody,
    responses(
        (status = 200, description = "Renamed", body = Conversation),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
        (status = 422, description = "A null, blank or too long title", body = ErrorBody),
    ))]
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

#[utoipa::path(delete, path = "/api/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 204, description = "Deleted with its messages; a reply being generated is cancelled"),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    chat::conversations::delete(&state, &user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
