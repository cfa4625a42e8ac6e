//! Messages: list a conversation, post a turn (sync or `Prefer:
//! respond-async`, with `Idempotency-Key`), cancel and retry a reply. The
//! operations are `chat`'s; this file reads requests and writes answers.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{
    AppJson, AppQuery, DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_time_cursor, idempotency_key,
    limit,
};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::chat::{self, Mode, Reply};
use crate::db::ListKey;
use crate::db::messages::{Message, Page};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations/{id}/messages", get(list).post(create))
        .route("/api/messages/{id}/cancel", post(cancel))
        .route("/api/messages/{id}/retry", post(retry))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    before: Option<String>,
    after: Option<String>,
}

#[derive(Serialize)]
struct MessagePage {
    items: Vec<Message>,
    next_before: Option<String>,
    next_after: Option<String>,
}

#[derive(Deserialize)]
struct NewMessage {
    content: String,
}

fn cursor(key: &ListKey) -> String {
    encode_time_cursor(key.at, &key.id)
}

fn parse_cursor(raw: &str) -> Result<ListKey, ApiError> {
    let (created_at, id) = decode_time_cursor(raw)?;
    Ok(ListKey { at: created_at, id })
}

async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(conversation_id): Path<String>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let limit = limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = match (query.before.as_deref(), query.after.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "pass either before or after, not both".into(),
            ));
        }
        (Some(before), None) => Page::Before(Some(parse_cursor(before)?)),
        (None, Some(after)) => Page::After(parse_cursor(after)?),
        (None, None) => Page::Before(None),
    };
    let listed = chat::list(&state, &user.id, &conversation_id, limit, page).await?;
    Ok(Json(MessagePage {
        next_before: if listed.more_before {
            listed.first.as_ref().map(cursor)
        } else {
            None
        },
        // Past the last item; an empty forward page keeps the caller's place.
        next_after: listed.last.as_ref().map(cursor).or(query.after),
        items: listed.items,
    }))
}

async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(conversation_id): Path<String>,
    headers: HeaderMap,
    AppJson(body): AppJson<NewMessage>,
) -> Result<Response, ApiError> {
    // The content is checked before the key (422 before 400), as always.
    chat::check_content(&body.content)?;
    let key = idempotency_key(&headers)?;
    let reply = chat::post(
        &state,
        &user.id,
        &conversation_id,
        body.content,
        key,
        mode(&headers),
    )
    .await?;
    Ok(answer(reply))
}

async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(chat::cancel(&state, &user.id, &id).await?))
}

async fn retry(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Ok(answer(chat::retry(&state, &user.id, &id, mode(&headers)).await?))
}

fn answer(reply: Reply) -> Response {
    match reply {
        Reply::Final(message) => Json(message).into_response(),
        Reply::Accepted(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
    }
}

/// `Prefer: respond-async` (a token of the comma-separated list).
fn mode(headers: &HeaderMap) -> Mode {
    let asynchronous = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
    if asynchronous { Mode::Async } else { Mode::Wait }
}
