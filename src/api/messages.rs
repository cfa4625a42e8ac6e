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
use crate::chat::{self, Accepted, Mode, Reply};
use crate::db::ListKey;
use crate::db::messages::{Message, Page};
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations/{id}/messages", get(list).post(create))
        .route("/api/messages/{id}/cancel", post(cancel))
        .route("/api/messages/{id}/retry", post(retry))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// A `next_before` cursor: older messages. Not with `after`.
    before: Option<String>,
    /// A `next_after` cursor: newer messages. Not with `before`.
    after: Option<String>,
}

/// Oldest first.
#[derive(Serialize, utoipa::ToSchema)]
struct MessagePage {
    items: Vec<Message>,
    /// Null when no older message exists.
    #[schema(required = true)]
    next_before: Option<String>,
    /// Just past the last item (on an empty page, the `after` passed).
    #[schema(required = true)]
    next_after: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewMessage {
    /// 1 to 32768 characters, not only whitespace.
    content: String,
}

fn cursor(key: &ListKey) -> String {
    encode_time_cursor(key.at, &key.id)
}

fn parse_cursor(raw: &str) -> Result<ListKey, ApiError> {
    let (created_at, id) = decode_time_cursor(raw)?;
    Ok(ListKey { at: created_at, id })
}

#[utoipa::path(get, path = "/api/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The conversation's id"), ListQuery),
    responses(
        (status = 200, description = "A page of messages; a reply being generated shows the text streamed so far", body = MessagePage),
        (status = 404, description = "Unknown conversation, or another user's", body = ErrorBody),
        (status = 422, description = "`limit` out of range", body = ErrorBody),
    ))]
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

/// Post a question and get its answer.
///
/// Stores the question and a pending reply (with their `message.created`
/// events), then answers over the caller's ready documents. Sync by
/// default; with `Prefer: respond-async` it answers 202 at once and the
/// reply arrives on the socket.
#[utoipa::path(post, path = "/api/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The conversation's id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 characters: a repeat within 24 h creates nothing new"),
    ),
    request_body = NewMessage,
    responses(
        (status = 200, description = "The reply, finished (`done`, `error` or `cancelled`)", body = Message),
        (status = 202, description = "Accepted (`Prefer: respond-async`): both messages as stored", body = Accepted),
        (status = 404, description = "Unknown conversation, or deleted while waiting", body = ErrorBody),
        (status = 409, description = "The `Idempotency-Key` was used for another request", body = ErrorBody),
        (status = 422, description = "Empty, blank or too long content", body = ErrorBody),
    ))]
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

#[utoipa::path(post, path = "/api/messages/{id}/cancel", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The reply's id")),
    responses(
        (status = 200, description = "The reply, now `cancelled`, with its partial content", body = Message),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
        (status = 409, description = "Not a running reply", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(chat::cancel(&state, &user.id, &id).await?))
}

/// Generate a reply again.
///
/// For an assistant message that is `error`, `cancelled` or `done`: it goes
/// back to `pending`, then is answered like a new question.
#[utoipa::path(post, path = "/api/messages/{id}/retry", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The reply's id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once"),
    ),
    responses(
        (status = 200, description = "The new reply, finished", body = Message),
        (status = 202, description = "Accepted (`Prefer: respond-async`): `assistant_message` only", body = Accepted),
        (status = 404, description = "Unknown, or another user's", body = ErrorBody),
        (status = 409, description = "Still running, or a user message", body = ErrorBody),
    ))]
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
