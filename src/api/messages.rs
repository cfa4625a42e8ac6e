//! Messages: list a conversation, post a turn (sync or `Prefer:
//! respond-async`, with `Idempotency-Key`), cancel and retry a reply.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::detached;
use super::extract::{
    AppJson, AppQuery, DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_time_cursor, fingerprint,
    idempotency_key, limit,
};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::chat;
use crate::db::idempotency::{self, Recorded};
use crate::db::messages::{self, ListKey, Message, Page};
use crate::db::{self};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations/{id}/messages", get(list).post(create))
        .route("/api/messages/{id}/cancel", post(cancel))
        .route("/api/messages/{id}/retry", post(retry))
}

const MAX_CONTENT_CHARS: usize = 32_768;

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
    encode_time_cursor(key.created_at, &key.id)
}

fn parse_cursor(raw: &str) -> Result<ListKey, ApiError> {
    let (created_at, id) = decode_time_cursor(raw)?;
    Ok(ListKey { created_at, id })
}

async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(conversation_id): Path<String>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let limit = limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let after_cursor = query.after.clone();
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
    let user_id = user.id.clone();
    let mut listed = state
        .db
        .read(move |conn| messages::list(conn, &user_id, &conversation_id, limit, page))
        .await?;
    live(&state, &user.id, &mut listed.items).await;
    Ok(Json(MessagePage {
        next_before: if listed.more_before {
            listed.first.as_ref().map(cursor)
        } else {
            None
        },
        // Past the last item; an empty forward page keeps the caller's place.
        next_after: listed.last.as_ref().map(cursor).or(after_cursor),
        items: listed.items,
    }))
}

/// A turn after its commit: new (with its generation's done signal), or a
/// repeat of an idempotent request.
enum Started {
    New(Box<(Message, Message)>, chat::Finished),
    Repeat(Recorded),
}

/// What the write of a new turn found.
enum Turn {
    New(Box<(Message, Message)>),
    Repeat(Recorded),
}

#[derive(Serialize, Deserialize)]
struct TurnIds {
    user_message: String,
    assistant_message: String,
}

async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(conversation_id): Path<String>,
    headers: HeaderMap,
    AppJson(body): AppJson<NewMessage>,
) -> Result<Response, ApiError> {
    let content = body.content;
    let n = content.chars().count();
    if n == 0 || n > MAX_CONTENT_CHARS || content.trim().is_empty() {
        return Err(ApiError::Validation(format!(
            "content must be 1 to {MAX_CONTENT_CHARS} characters and not only whitespace"
        )));
    }
    let key = idempotency_key(&headers)?;
    let status = if prefers_async(&headers) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let path = format!("/api/conversations/{conversation_id}/messages");
    let fingerprint = fingerprint("POST", &path, content.as_bytes());
    let now = db::now_ms();
    let (user_id, question) = (user.id.clone(), content.clone());
    let task_state = state.clone();
    let started = detached(async move {
        let writer_user = user_id.clone();
        let turn = task_state
            .db
            .write(move |tx| {
                let user_id = writer_user;
                if let Some(key) = &key
                    && let Some(recorded) = idempotency::find(tx, &user_id, key, &fingerprint, now)?
                {
                    return Ok(Turn::Repeat(recorded));
                }
                let (sent, reply) = messages::insert_turn(tx, &user_id, &conversation_id, &content, now)?;
                if let Some(key) = &key {
                    let ids = TurnIds {
                        user_message: sent.id.clone(),
                        assistant_message: reply.id.clone(),
                    };
                    let response =
                        serde_json::to_string(&ids).map_err(|e| db::Error::Other(e.to_string()))?;
                    let recorded = Recorded {
                        status: status.as_u16(),
                        response,
                    };
                    idempotency::record(tx, &user_id, key, "POST", &path, &fingerprint, &recorded, now)?;
                }
                Ok(Turn::New(Box::new((sent, reply))))
            })
            .await?;
        // Committed: the generation starts even if the client is gone.
        Ok(match turn {
            Turn::New(turn) => {
                let (sent, reply) = *turn;
                let done = chat::start(&task_state, &user_id, &reply, question, 0);
                Started::New(Box::new((sent, reply)), done)
            }
            Turn::Repeat(recorded) => Started::Repeat(recorded),
        })
    })
    .await?;

    match started {
        Started::New(turn, done) => {
            let (sent, reply) = *turn;
            if status == StatusCode::ACCEPTED {
                return Ok(accepted(&sent, &reply));
            }
            Ok(Json(finished(&state, &user.id, &reply.id, &done).await?).into_response())
        }
        Started::Repeat(recorded) => {
            let ids: TurnIds = serde_json::from_str(&recorded.response).map_err(ApiError::internal)?;
            if recorded.status == StatusCode::ACCEPTED.as_u16() {
                let sent = current(&state, &user.id, &ids.user_message).await?;
                let reply = current(&state, &user.id, &ids.assistant_message).await?;
                return Ok(accepted(&sent, &reply));
            }
            if let Some(done) = state.generations.done_signal(&ids.assistant_message) {
                done.cancelled().await;
            }
            Ok(Json(current(&state, &user.id, &ids.assistant_message).await?).into_response())
        }
    }
}

fn accepted(sent: &Message, reply: &Message) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"user_message": sent, "assistant_message": reply})),
    )
        .into_response()
}

/// The reply once its generation has ended: as the generation stored it,
/// or else as the database has it.
async fn finished(
    state: &AppState,
    user_id: &str,
    id: &str,
    done: &chat::Finished,
) -> Result<Message, ApiError> {
    match done.wait().await {
        Some(reply) => Ok(reply),
        None => current(state, user_id, id).await,
    }
}

/// Replies being generated get their live text (read after the rows, so it
/// is at least as new as theirs); one whose generation ended meanwhile is
/// read again, now final.
async fn live(state: &AppState, user_id: &str, items: &mut [Message]) {
    let stale = state.generations.overlay_live(items);
    if stale.is_empty() {
        return;
    }
    let user_id = user_id.to_owned();
    let fresh = state
        .db
        .read(move |conn| {
            stale
                .iter()
                .map(|id| messages::get(conn, &user_id, id))
                .collect::<db::Result<Vec<_>>>()
        })
        .await;
    // Gone meanwhile (its conversation deleted): the rows as read stand.
    let Ok(mut fresh) = fresh else { return };
    state.generations.overlay_live(&mut fresh);
    for message in fresh {
        if let Some(item) = items.iter_mut().find(|m| m.id == message.id) {
            *item = message;
        }
    }
}

/// The message as it is now: its row, with the live text of a reply being
/// generated.
async fn current(state: &AppState, user_id: &str, id: &str) -> Result<Message, ApiError> {
    let (owner, message_id) = (user_id.to_owned(), id.to_owned());
    let mut message = state
        .db
        .read(move |conn| messages::get(conn, &owner, &message_id))
        .await?;
    live(state, user_id, std::slice::from_mut(&mut message)).await;
    Ok(message)
}

async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    const NOT_RUNNING: &str = "only a reply that is still being generated can be cancelled";
    let message = current(&state, &user.id, &id).await?;
    if message.role != "assistant" || !matches!(message.status.as_str(), "pending" | "streaming") {
        return Err(ApiError::Conflict(NOT_RUNNING.into()));
    }
    let task_state = state.clone();
    let message = detached(async move {
        match task_state.generations.cancel_by_user(&id) {
            // The generation stores `cancelled` with the text streamed so
            // far, with its event, then signals.
            Some(done) => done.cancelled().await,
            // No generation in this process (it never started): cancel in
            // the database directly.
            None => {
                let (user_id, message_id, now) = (user.id.clone(), id.clone(), db::now_ms());
                task_state
                    .db
                    .write(move |tx| messages::cancel(tx, &user_id, &message_id, now))
                    .await?;
            }
        }
        current(&task_state, &user.id, &id).await
    })
    .await?;
    if message.status != "cancelled" {
        // It finished before the cancel could stop it.
        return Err(ApiError::Conflict(NOT_RUNNING.into()));
    }
    Ok(Json(message))
}

async fn retry(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = db::now_ms();
    let (user_id, task_state) = (user.id.clone(), state.clone());
    let (reply, done) = detached(async move {
        let writer_user = user_id.clone();
        let (reply, question, generation) = task_state
            .db
            .write(move |tx| messages::reset_for_retry(tx, &writer_user, &id, now))
            .await?;
        let done = chat::start(&task_state, &user_id, &reply, question, generation);
        Ok((reply, done))
    })
    .await?;
    if prefers_async(&headers) {
        return Ok((StatusCode::ACCEPTED, Json(json!({"assistant_message": reply}))).into_response());
    }
    Ok(Json(finished(&state, &user.id, &reply.id, &done).await?).into_response())
}

/// `Prefer: respond-async` (a token of the comma-separated list).
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}
