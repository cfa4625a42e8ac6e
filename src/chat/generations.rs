//! The generations running in this process, by reply id: how to cancel
//! each, when it has ended, and the text it has streamed so far (which a
//! GET lays over the stored row, so a reload shows what the socket showed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::messages::Message;
use crate::types::MessageStatus;

#[derive(Default)]
pub struct Generations {
    running: Mutex<HashMap<String, Running>>,
    /// Every generation task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// One running generation, as the registry holds it.
pub(super) struct Running {
    /// The reply's generation this task produces (bumped by each retry).
    pub generation: i64,
    /// The text streamed so far, exactly as the `message.delta` frames sent
    /// it (the stored row lags by up to a second).
    pub live: Live,
    /// Set when the user cancelled (the task then stores `cancelled` with
    /// the partial text); unset for deletions and shutdown.
    pub by_user: Arc<AtomicBool>,
    pub conversation_id: String,
    pub cancel: CancellationToken,
    pub done: CancellationToken,
}

impl Generations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a generation that is about to start (replacing an ended
    /// one of an earlier generation of the same reply).
    pub(super) fn insert(&self, reply_id: &str, running: Running) {
        self.lock().insert(reply_id.to_owned(), running);
    }

    /// Forgets a generation that has ended, unless a retry replaced it.
    pub(super) fn remove(&self, reply_id: &str, generation: i64) {
        let mut running = self.lock();
        if running.get(reply_id).is_some_and(|r| r.generation == generation) {
            running.remove(reply_id);
        }
    }

    /// Fires when the generation of `message_id` has ended (`None` when
    /// none is running).
    pub fn done_signal(&self, message_id: &str) -> Option<CancellationToken> {
        self.lock().get(message_id).map(|r| r.done.clone())
    }

    /// Asks the running generation of `message_id` to stop and store the
    /// reply as `cancelled` with its partial text; returns the signal that
    /// fires once it has (`None` when no generation is running).
    pub fn cancel_by_user(&self, message_id: &str) -> Option<CancellationToken> {
        let running = self.lock();
        let running = running.get(message_id)?;
        running.by_user.store(true, Ordering::SeqCst);
        running.cancel.cancel();
        Some(running.done.clone())
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

    /// Gives each reply still being generated here the text streamed so
    /// far, which may be ahead of its stored row. Every delta sent before
    /// this call is in that text and none sent after it (they are sent and
    /// appended under one lock), so a client splicing later deltas by
    /// `offset` neither doubles nor loses text.
    ///
    /// Returns the ids of replies read as `pending`/`streaming` that have no
    /// generation of theirs running here: it ended (and stored its result)
    /// after the row was read, or has not begun. Their rows must be read
    /// again, or a client would see text older than the deltas it had.
    pub fn overlay_live(&self, messages: &mut [Message]) -> Vec<String> {
        let running = self.lock();
        let mut stale = Vec::new();
        for message in messages.iter_mut().filter(|m| m.status.is_running()) {
            match running.get(&message.id) {
                Some(r) if r.generation == message.generation => {
                    message.content = r.live.text();
                    if !message.content.is_empty() {
                        // Its `streaming` may not have committed when the row was read.
                        message.status = MessageStatus::Streaming;
                    }
                }
                _ => stale.push(message.id.clone()),
            }
        }
        stale
    }
}

/// The text of a reply as streamed so far, shared by its generation task
/// and the readers of `Generations::overlay_live`.
#[derive(Clone, Default)]
pub(super) struct Live(Arc<Mutex<String>>);

impl Live {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn text(&self) -> String {
        self.lock().clone()
    }
}

/// The end of a generation, for the request that started it.
pub struct Finished {
    pub(super) signal: CancellationToken,
    pub(super) stored: Arc<OnceLock<Message>>,
}

impl Finished {
    /// Waits until the generation has ended and its result is committed;
    /// returns the reply as stored, or `None` when this generation did not
    /// store a finished reply (cancelled, deleted, or taken over by a
    /// retry): then only the database knows its state.
    pub async fn wait(&self) -> Option<Message> {
        self.signal.cancelled().await;
        self.stored.get().cloned()
    }
}
