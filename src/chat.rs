//! The chat flow of API.md "Messages": a turn is stored (user message
//! `done`, reply `pending`) and published before any generation starts; the
//! generation runs as its own task, so it completes even when the HTTP
//! client goes away, and can be cancelled.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::db::{self, messages::Message, messages::Outcome};
use crate::rag::{AnswerError, AnswerRequest};

/// The generations running now, by assistant message id.
#[derive(Default)]
pub struct Generations {
    running: Mutex<HashMap<String, Running>>,
    /// Every generation task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    next_seq: std::sync::atomic::AtomicU64,
}

struct Running {
    /// Distinguishes a retry's generation from the one it replaced.
    seq: u64,
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

    /// Stops the generation of `message_id`, if any (the reply's status was
    /// already changed by the caller).
    pub fn cancel(&self, message_id: &str) {
        if let Some(running) = self.lock().get(message_id) {
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
}

/// Starts generating `reply` (which is `pending`) as a background task and
/// returns the signal that fires when it has ended and its result committed.
pub fn start(state: &AppState, user_id: &str, reply: &Message, question: String) -> CancellationToken {
    let generations = &state.generations;
    let seq = generations
        .next_seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cancel = CancellationToken::new();
    let done = CancellationToken::new();
    generations.lock().insert(
        reply.id.clone(),
        Running {
            seq,
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
    generations.tracker.spawn(async move {
        let message_id = request.message_id.clone();
        let user_id = request.user_id.clone();
        let outcome = tokio::select! {
            outcome = generate(&task_state, request) => Some(outcome),
            () = cancel.cancelled() => None,
        };
        if let Some(outcome) = outcome {
            let now = db::now_ms();
            let (user, id) = (user_id.clone(), message_id.clone());
            let written = task_state
                .db
                .write(move |tx| db::messages::finish(tx, &user, &id, outcome, now))
                .await;
            if let Err(err) = written {
                // Left pending: the next start-up (or shutdown) sweep marks it interrupted.
                tracing::error!(error = %err, message_id = %message_id, "cannot store a finished reply");
            }
        }
        let mut running = task_state.generations.lock();
        if running.get(&message_id).is_some_and(|r| r.seq == seq) {
            running.remove(&message_id);
        }
        drop(running);
        done.cancel();
    });
    signal
}

/// Runs the answer provider in its own task, so a panic in it becomes an
/// error reply instead of a reply that spins forever.
async fn generate(state: &AppState, request: AnswerRequest) -> Outcome {
    let future = state.answerer.answer(request);
    let task = tokio::spawn(future);
    let abort = task.abort_handle();
    // Dropping this future (cancel) must stop the provider too.
    let _guard = AbortOnDrop(abort);
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
