//! The chat flow of API.md "Messages": a turn is stored (user message
//! `done`, reply `pending`) and published before any generation starts; the
//! generation runs as its own task, so it completes even when the HTTP
//! client goes away, and can be cancelled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::db::{self, messages::Message, messages::Outcome};
use crate::rag::{AnswerError, AnswerRequest};

/// How often storing a finished reply is retried (a full disk, a database
/// locked by a backup) before it is left for the interrupt sweep.
const STORE_ATTEMPTS: u32 = 20;

/// The generations running now, by assistant message id.
#[derive(Default)]
pub struct Generations {
    running: Mutex<HashMap<String, Running>>,
    /// Every generation task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

struct Running {
    /// The reply's generation this task produces (bumped by each retry).
    generation: i64,
    conversation_id: String,
    cancel: CancellationToken,
    done: CancellationToken,
}

impl Generations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires when the generation of `message_id` has ended (`None` when
    /// none is running).
    pub fn done_signal(&self, message_id: &str) -> Option<CancellationToken> {
        self.lock().get(message_id).map(|r| r.done.clone())
    }

    /// Stops `generation` of `message_id` if it is the one running (the
    /// reply's status was already changed by the caller).
    pub fn cancel(&self, message_id: &str, generation: i64) {
        if let Some(running) = self.lock().get(message_id).filter(|r| r.generation == generation) {
            running.cancel.cancel();
        }
    }

    /// Stops every generation in a conversation that is being deleted.
    pub fn cancel_conversation(&self, conversation_id: &str) {
        for running in self
            .lock()
            .values()
            .filter(|r| r.conversation_id == conversation_id)
        {
            running.cancel.cancel();
        }
    }

    /// Stops every generation (shutdown, after its grace period).
    pub fn cancel_all(&self) {
        self.lock().values().for_each(|r| r.cancel.cancel());
    }
}

/// Starts generating `reply` (which is `pending` at `generation`) as a
/// background task and returns the signal that fires when it has ended and
/// its result is committed.
pub fn start(
    state: &AppState,
    user_id: &str,
    reply: &Message,
    question: String,
    generation: i64,
) -> CancellationToken {
    let cancel = CancellationToken::new();
    let done = CancellationToken::new();
    state.generations.lock().insert(
        reply.id.clone(),
        Running {
            generation,
            conversation_id: reply.conversation_id.clone(),
            cancel: cancel.clone(),
            done: done.clone(),
        },
    );
    let request = AnswerRequest {
        user_id: user_id.to_owned(),
        conversation_id: reply.conversation_id.clone(),
        message_id: reply.id.clone(),
        question,
    };
    let task_state = state.clone();
    let signal = done.clone();
    state.generations.tracker.spawn(async move {
        let message_id = request.message_id.clone();
        let user_id = request.user_id.clone();
        let outcome = tokio::select! {
            outcome = generate(&task_state, request) => Some(outcome),
            () = cancel.cancelled() => None,
        };
        if let Some(outcome) = outcome {
            store(&task_state, &user_id, &message_id, generation, outcome, &cancel).await;
        }
        let mut running = task_state.generations.lock();
        if running
            .get(&message_id)
            .is_some_and(|r| r.generation == generation)
        {
            running.remove(&message_id);
        }
        drop(running);
        done.cancel();
    });
    signal
}

/// Commits the outcome, retrying while the database refuses (full disk,
/// locked): a reply must not spin while the process lives. If it never
/// commits, the shutdown or start-up sweep marks it interrupted.
async fn store(
    state: &AppState,
    user_id: &str,
    id: &str,
    generation: i64,
    outcome: Outcome,
    cancel: &CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=STORE_ATTEMPTS {
        let (user, message_id, outcome) = (user_id.to_owned(), id.to_owned(), outcome.clone());
        let now = db::now_ms();
        let written = state
            .db
            .write(move |tx| db::messages::finish(tx, &user, &message_id, generation, outcome, now))
            .await;
        match written {
            Ok(_) => return,
            Err(db::Error::Closed) => return,
            Err(err) if attempt == STORE_ATTEMPTS => {
                tracing::error!(error = %err, message_id = %id, "cannot store a finished reply; giving up");
            }
            Err(err) => {
                tracing::warn!(error = %err, message_id = %id, "cannot store a finished reply yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the answer provider in its own task, so a panic in it becomes an
/// error reply instead of a reply that spins forever.
async fn generate(state: &AppState, request: AnswerRequest) -> Outcome {
    let future = state.answerer.answer(request);
    let task = tokio::spawn(future);
    // Dropping this future (cancel) must stop the provider too.
    let _guard = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(Ok(answer)) => Outcome::Done {
            content: answer.content,
            sources: answer.sources,
        },
        Ok(Err(AnswerError(message))) => Outcome::Failed(message),
        Err(err) => {
            tracing::error!(error = %err, "the answer provider panicked");
            Outcome::Failed("the answer provider failed unexpectedly; retry the message".into())
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
