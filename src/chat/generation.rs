//! One generation of a reply, as its own task, so that it completes even
//! when the HTTP client goes away, and can be cancelled: the turn's history
//! and passages are gathered, the answer provider runs (its streamed text
//! goes out through the `Streamer`), and the outcome is stored with its
//! event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::generations::{Finished, Live, Running};
use super::retrieval;
use super::streamer::Streamer;
use crate::AppState;
use crate::db::{self, messages::Message, messages::Outcome};
use crate::instruments::ReplyEnd;
use crate::rag::{AnswerError, AnswerRequest, TokenSink};
use crate::types::MessageStatus;

/// How often storing a finished reply is retried (a full disk, a database
/// locked by a backup) before it is left for the interrupt sweep.
const STORE_ATTEMPTS: u32 = 20;
/// Characters of earlier turns given to the answer provider.
const HISTORY_CHARS: usize = 6_000;

/// What a generation works on.
struct Turn {
    user_id: String,
    reply_id: String,
    question: String,
    generation: i64,
}

/// Starts generating `reply` (which is `pending` at `generation`) as a
/// background task.
pub fn start(
    state: &AppState,
    user_id: &str,
    reply: &Message,
    question: String,
    generation: i64,
) -> Finished {
    let cancel = CancellationToken::new();
    let done = CancellationToken::new();
    let by_user = Arc::new(AtomicBool::new(false));
    let live = Live::default();
    state.generations.insert(
        &reply.id,
        Running {
            generation,
            live: live.clone(),
            by_user: by_user.clone(),
            conversation_id: reply.conversation_id.clone(),
            cancel: cancel.clone(),
            done: done.clone(),
        },
    );
    let finished = Finished {
        signal: done.clone(),
        stored: Arc::new(OnceLock::new()),
    };
    let stored = Arc::clone(&finished.stored);
    let turn = Turn {
        user_id: user_id.to_owned(),
        reply_id: reply.id.clone(),
        question,
        generation,
    };
    let state = state.clone();
    state.clone().generations.tracker.spawn(async move {
        let started = std::time::Instant::now();
        let mut streamer = Streamer::new(&state, &turn.user_id, &turn.reply_id, generation, live);
        let outcome = tokio::select! {
            outcome = answer(&state, &turn, &mut streamer) => Some(outcome),
            () = cancel.cancelled() => None,
        };
        match outcome {
            Some(outcome) => {
                // A reply that fails mid-stream keeps the text its deltas showed.
                let outcome = match outcome {
                    Outcome::Failed(error, None) if streamer.chars > 0 => {
                        Outcome::Failed(error, Some(streamer.live.text()))
                    }
                    other => other,
                };
                if let Some(reply) = store(&state, &turn, outcome, &cancel).await {
                    let end = match reply.status {
                        MessageStatus::Done => Some(ReplyEnd::Done),
                        MessageStatus::Error => Some(ReplyEnd::Error),
                        _ => None,
                    };
                    if let Some(end) = end {
                        state.metrics.replies.generated(end, started.elapsed());
                    }
                    let _ = stored.set(reply);
                }
            }
            None if by_user.load(Ordering::SeqCst) => {
                if streamer.store_cancelled().await {
                    state
                        .metrics
                        .replies
                        .generated(ReplyEnd::Cancelled, started.elapsed());
                }
            }
            // Deleted, or shutting down: keep what streamed for the sweep.
            None => streamer.save(true).await,
        }
        state.generations.remove(&turn.reply_id, generation);
        done.cancel();
    });
    finished
}

/// Gathers the turn's history and passages, then runs the answer provider
/// with its streamed text going through `streamer`.
async fn answer(state: &AppState, turn: &Turn, streamer: &mut Streamer) -> Outcome {
    let passages =
        match retrieval::passages(state, &turn.user_id, &turn.question, state.answerer.passages()).await {
            Ok(passages) => passages,
            Err(AnswerError(message)) => return Outcome::Failed(message, None),
        };
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let request = AnswerRequest {
        question: turn.question.clone(),
        history: history(state, turn).await,
        passages,
        stream: TokenSink::new(sender),
    };
    let (outcome, ()) = tokio::join!(generate(state, request), streamer.run(receiver));
    outcome
}

/// The finished turns before the reply, for providers that read them.
async fn history(state: &AppState, turn: &Turn) -> Vec<crate::types::Turn> {
    if !state.answerer.uses_history() {
        return Vec::new();
    }
    let (user_id, id) = (turn.user_id.clone(), turn.reply_id.clone());
    match state
        .db
        .read(move |conn| db::messages::history(conn, &user_id, &id, HISTORY_CHARS))
        .await
    {
        Ok(history) => history,
        Err(err) => {
            tracing::warn!(error = %err, "cannot load the conversation history; answering without it");
            Vec::new()
        }
    }
}

/// Commits the outcome, retrying while the database refuses (full disk,
/// locked): a reply must not spin while the process lives. If it never
/// commits, the shutdown or start-up sweep marks it interrupted. Returns the
/// reply as stored (`None` if it was not, or a retry took it over).
async fn store(
    state: &AppState,
    turn: &Turn,
    outcome: Outcome,
    cancel: &CancellationToken,
) -> Option<Message> {
    let mut delay = Duration::from_millis(100);
    let id = &turn.reply_id;
    for attempt in 1..=STORE_ATTEMPTS {
        let (user, message_id, outcome) = (turn.user_id.clone(), id.clone(), outcome.clone());
        let (generation, now) = (turn.generation, db::now_ms());
        let written = state
            .db
            .write(move |tx| db::messages::finish(tx, &user, &message_id, generation, outcome, now))
            .await;
        match written {
            Ok(reply) => return reply,
            Err(db::Error::Closed) => return None,
            Err(err) if attempt == STORE_ATTEMPTS => {
                tracing::error!(error = %err, message_id = %id, "cannot store a finished reply; giving up");
            }
            Err(err) => {
                tracing::warn!(error = %err, message_id = %id, "cannot store a finished reply yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    None
}

/// Runs the answer provider in its own task, so a panic in it becomes an
/// error reply instead of a reply that spins forever.
async fn generate(state: &AppState, request: AnswerRequest) -> Outcome {
    let task = tokio::spawn(state.answerer.answer(request));
    // Dropping this future (cancel) must stop the provider too.
    let _guard = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(Ok(answer)) => Outcome::Done {
            content: answer.content,
            sources: answer.sources,
        },
        Ok(Err(AnswerError(message))) => Outcome::Failed(message, None),
        Err(err) => {
            tracing::error!(error = %err, "the answer provider panicked");
            Outcome::Failed(
                "the answer provider failed unexpectedly; retry the message".into(),
                None,
            )
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
