//! Chat, as docs/API.md "Messages" defines it: each user-visible operation
//! (post a turn, retry, cancel, list a conversation) is one function here
//! that a handler calls. A turn is stored (user message `done`, reply
//! `pending`) and published before any generation starts; the generation
//! (`generation`) runs as its own task with its streamed text
//! (`streamer`), over the passages of one retrieval step (`retrieval`).

pub mod conversations;
mod generation;
mod generations;
mod retrieval;
mod streamer;

use serde::Serialize;

pub use generations::{Finished, Generations};

use crate::AppState;
use crate::db::messages::{self, Listed, Message, Page};
use crate::db::{self};
use crate::error::ApiError;
use crate::idempotency::{self, Keyed, Once};
use crate::instruments::ReplyEnd;
use crate::types::{MessageStatus, Role};

/// Longest message content, in characters.
const MAX_CONTENT_CHARS: usize = 32_768;

/// How the client asked to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wait for the final reply (200).
    Wait,
    /// `Prefer: respond-async`: answer once the turn is stored (202).
    Async,
}

/// The answer to a posted turn or a retry.
pub enum Reply {
    /// The reply as it ended (done, error or cancelled).
    Final(Message),
    /// Stored and generating; the result arrives on the socket.
    Accepted(Accepted),
}

/// The body of a 202.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The question; absent for a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_message: Option<Message>,
    pub assistant_message: Message,
}

/// A message's content: 1 to 32,768 characters, not only whitespace (422).
pub fn check_content(content: &str) -> Result<(), ApiError> {
    let n = content.chars().count();
    if n == 0 || n > MAX_CONTENT_CHARS || content.trim().is_empty() {
        return Err(ApiError::Validation(format!(
            "content must be 1 to {MAX_CONTENT_CHARS} characters and not only whitespace"
        )));
    }
    Ok(())
}

/// The ids a keyed turn records, so a repeat answers with the same messages.
#[derive(Serialize, serde::Deserialize)]
struct TurnIds {
    user_message: String,
    assistant_message: String,
}

/// Posts a turn: stores the question and its pending reply, starts the
/// generation, and answers as `mode` says (a repeat of a keyed request in
/// the mode of the first). The store and the start run as their own task:
/// a client that goes away does not stop them halfway.
pub async fn post(
    state: &AppState,
    user_id: &str,
    conversation_id: &str,
    content: String,
    key: Option<String>,
    mode: Mode,
) -> Result<Reply, ApiError> {
    check_content(&content)?;
    let path = format!("/api/conversations/{conversation_id}/messages");
    let keyed = key.map(|key| Keyed::new(key, "POST", path, content.as_bytes()));
    let status: u16 = match mode {
        Mode::Wait => 200,
        Mode::Async => 202,
    };
    let (task_state, user, conversation) = (state.clone(), user_id.to_owned(), conversation_id.to_owned());
    let started = detached(async move {
        let (writer_user, question, now) = (user.clone(), content.clone(), db::now_ms());
        let turn = task_state
            .db
            .write(move |tx| {
                idempotency::once(tx, &writer_user, keyed.as_ref(), status, now, |tx| {
                    let (sent, reply) =
                        messages::insert_turn(tx, &writer_user, &conversation, &content, now)?;
                    let ids = TurnIds {
                        user_message: sent.id.clone(),
                        assistant_message: reply.id.clone(),
                    };
                    let response =
                        serde_json::to_string(&ids).map_err(|e| db::Error::Other(e.to_string()))?;
                    Ok(((sent, reply), response))
                })
            })
            .await?;
        // Committed: the generation starts even if the client is gone.
        Ok(match turn {
            Once::First((sent, reply)) => {
                let finished = generation::start(&task_state, &user, &reply, question, 0);
                Once::First((sent, reply, finished))
            }
            Once::Repeat(recorded) => Once::Repeat(recorded),
        })
    })
    .await?;
    match started {
        Once::First((sent, reply, finished)) => match mode {
            Mode::Async => Ok(Reply::Accepted(Accepted {
                user_message: Some(sent),
                assistant_message: reply,
            })),
            Mode::Wait => Ok(Reply::Final(ended(state, user_id, &reply.id, &finished).await?)),
        },
        Once::Repeat(recorded) => {
            let ids: TurnIds = serde_json::from_str(&recorded.response).map_err(ApiError::internal)?;
            if recorded.status == 202 {
                return Ok(Reply::Accepted(Accepted {
                    user_message: Some(current(state, user_id, &ids.user_message).await?),
                    assistant_message: current(state, user_id, &ids.assistant_message).await?,
                }));
            }
            if let Some(done) = state.generations.done_signal(&ids.assistant_message) {
                done.cancelled().await;
            }
            Ok(Reply::Final(
                current(state, user_id, &ids.assistant_message).await?,
            ))
        }
    }
}

/// Regenerates a finished reply: back to `pending` (empty, no sources),
/// then generated again as a new generation.
pub async fn retry(state: &AppState, user_id: &str, message_id: &str, mode: Mode) -> Result<Reply, ApiError> {
    let (task_state, user, id, now) = (
        state.clone(),
        user_id.to_owned(),
        message_id.to_owned(),
        db::now_ms(),
    );
    let (reply, finished) = detached(async move {
        let writer_user = user.clone();
        let (reply, question, generation) = task_state
            .db
            .write(move |tx| messages::reset_for_retry(tx, &writer_user, &id, now))
            .await?;
        let finished = generation::start(&task_state, &user, &reply, question, generation);
        Ok((reply, finished))
    })
    .await?;
    match mode {
        Mode::Async => Ok(Reply::Accepted(Accepted {
            user_message: None,
            assistant_message: reply,
        })),
        Mode::Wait => Ok(Reply::Final(ended(state, user_id, &reply.id, &finished).await?)),
    }
}

/// Cancels a reply being generated, keeping its partial text.
pub async fn cancel(state: &AppState, user_id: &str, message_id: &str) -> Result<Message, ApiError> {
    const NOT_RUNNING: &str = "only a reply that is still being generated can be cancelled";
    let message = current(state, user_id, message_id).await?;
    if message.role != Role::Assistant || !message.status.is_running() {
        return Err(ApiError::Conflict(NOT_RUNNING.into()));
    }
    let (task_state, user, id) = (state.clone(), user_id.to_owned(), message_id.to_owned());
    let message = detached(async move {
        match task_state.generations.cancel_by_user(&id) {
            // The generation stores `cancelled` with the text streamed so
            // far, with its event, then signals.
            Some(done) => done.cancelled().await,
            // No generation in this process (it never started): cancel in
            // the database directly.
            None => {
                let (user_id, message_id, now) = (user.clone(), id.clone(), db::now_ms());
                task_state
                    .db
                    .write(move |tx| messages::cancel(tx, &user_id, &message_id, now))
                    .await?;
                task_state.metrics.replies.ended(ReplyEnd::Cancelled);
            }
        }
        current(&task_state, &user, &id).await
    })
    .await?;
    if message.status != MessageStatus::Cancelled {
        // It finished before the cancel could stop it.
        return Err(ApiError::Conflict(NOT_RUNNING.into()));
    }
    Ok(message)
}

/// One page of a conversation, replies being generated with their live
/// text.
pub async fn list(
    state: &AppState,
    user_id: &str,
    conversation_id: &str,
    limit: usize,
    page: Page,
) -> Result<Listed, ApiError> {
    let (user, conversation) = (user_id.to_owned(), conversation_id.to_owned());
    let mut listed = state
        .db
        .read(move |conn| {
            // The conversation must be the caller's, even when it has no messages.
            db::conversations::get(conn, &user, &conversation)?;
            messages::list(conn, &user, &conversation, limit, page)
        })
        .await?;
    live(state, user_id, &mut listed.items).await;
    Ok(listed)
}

/// The reply once its generation has ended: as the generation stored it,
/// or else as the database has it.
async fn ended(state: &AppState, user_id: &str, id: &str, finished: &Finished) -> Result<Message, ApiError> {
    match finished.wait().await {
        Some(reply) => Ok(reply),
        None => current(state, user_id, id).await,
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

/// Runs `work` as its own task and waits for it. Work that must not stop
/// halfway when the client disconnects (commit, then start what the commit
/// promised) goes through here: a dropped handler does not drop the task.
async fn detached<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
{
    tokio::spawn(work).await.map_err(ApiError::internal)?
}
