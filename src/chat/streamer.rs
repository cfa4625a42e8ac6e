//! Streamed text of a running reply: coalesced into `message.delta`
//! frames (at most one per 50 ms), appended to the reply's live text under
//! the same lock as each frame is sent, marked `streaming` on the first
//! piece, and saved about once a second for crash safety.

use std::time::Duration;

use super::generations::Live;
use crate::AppState;
use crate::db;
use crate::realtime::frames;

/// Longest time streamed text waits before it goes out as one
/// `message.delta` (so at most ~20 frames per second per reply).
const DELTA_EVERY: Duration = Duration::from_millis(50);
/// How often the text streamed so far is saved for reloads.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Turns streamed text into `message.delta` frames, marks the reply
/// `streaming` on the first piece, and saves the text at a bounded rate.
pub(super) struct Streamer {
    state: AppState,
    user_id: String,
    message_id: String,
    generation: i64,
    /// Everything sent so far.
    pub live: Live,
    /// Its length in characters (the next delta's `offset`).
    pub chars: usize,
    /// Received, not yet sent.
    pending: String,
    seq: u64,
    streaming: bool,
    saved_chars: usize,
    last_save: std::time::Instant,
}

impl Streamer {
    pub fn new(state: &AppState, user_id: &str, message_id: &str, generation: i64, live: Live) -> Streamer {
        Streamer {
            state: state.clone(),
            user_id: user_id.to_owned(),
            message_id: message_id.to_owned(),
            generation,
            live,
            chars: 0,
            pending: String::new(),
            seq: 0,
            streaming: false,
            saved_chars: 0,
            last_save: std::time::Instant::now(),
        }
    }

    /// Runs until the provider is done (its sink is dropped).
    pub async fn run(&mut self, mut receiver: tokio::sync::mpsc::UnboundedReceiver<String>) {
        let mut ticker = tokio::time::interval(DELTA_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                piece = receiver.recv() => match piece {
                    Some(piece) => {
                        if !self.streaming {
                            self.mark_streaming().await;
                        }
                        self.pending.push_str(&piece);
                    }
                    None => break,
                },
                _ = ticker.tick(), if !self.pending.is_empty() => {
                    self.flush();
                    if self.last_save.elapsed() >= SAVE_EVERY {
                        self.save(false).await;
                    }
                }
            }
        }
        self.flush();
    }

    async fn mark_streaming(&mut self) {
        self.streaming = true;
        let (user, id, generation, now) = (
            self.user_id.clone(),
            self.message_id.clone(),
            self.generation,
            db::now_ms(),
        );
        let marked = self
            .state
            .db
            .write(move |tx| db::messages::mark_streaming(tx, &user, &id, generation, now))
            .await;
        if let Err(err) = marked {
            tracing::warn!(error = %err, message_id = %self.message_id, "cannot mark a reply streaming");
        }
    }

    /// Sends what was received since the last frame as one delta.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let delta = std::mem::take(&mut self.pending);
        let frame = frames::delta(&self.message_id, self.seq, self.chars, &delta);
        // Sent and appended under one lock: a reader of the live text has
        // every delta sent before it read, and none sent after.
        let mut live = self.live.lock();
        self.state.hub.push_control(&self.user_id, frame);
        live.push_str(&delta);
        drop(live);
        self.seq += 1;
        self.chars += delta.chars().count();
    }

    /// Saves the text so far (when it changed, or always when `force`).
    pub async fn save(&mut self, force: bool) {
        self.flush();
        self.last_save = std::time::Instant::now();
        if !self.streaming || (!force && self.saved_chars == self.chars) {
            return;
        }
        self.saved_chars = self.chars;
        let (user, id, generation, content) = (
            self.user_id.clone(),
            self.message_id.clone(),
            self.generation,
            self.live.text(),
        );
        let saved = self
            .state
            .db
            .write(move |tx| db::messages::save_partial(tx, &user, &id, generation, &content))
            .await;
        if let Err(err) = saved {
            tracing::warn!(error = %err, message_id = %self.message_id, "cannot save a partial reply");
        }
    }

    /// The user cancelled: `cancelled` with everything streamed so far.
    /// Says whether this stored it.
    pub async fn store_cancelled(&mut self) -> bool {
        self.flush();
        let (user, id, generation, content, now) = (
            self.user_id.clone(),
            self.message_id.clone(),
            self.generation,
            self.live.text(),
            db::now_ms(),
        );
        let stored = self
            .state
            .db
            .write(move |tx| db::messages::cancel_generation(tx, &user, &id, generation, &content, now))
            .await;
        match stored {
            Ok(reply) => reply.is_some(),
            Err(err) => {
                tracing::warn!(error = %err, message_id = %self.message_id, "cannot store a cancelled reply");
                false
            }
        }
    }
}
