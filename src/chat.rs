//! The chat flow of API.md "Messages": a turn is stored (user message
//! `done`, reply `pending`) and published before any generation starts; the
//! generation runs as its own task, so it completes even when the HTTP
//! client goes away, and can be cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::db::{self, messages::Message, messages::Outcome};
use crate::rag::{AnswerError, AnswerRequest, TokenSink};

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
    /// The text streamed so far, exactly as the `message.delta` frames sent
    /// it: a GET reads it from here, so a reload shows what the socket
    /// showed (the stored row lags by up to `SAVE_EVERY`).
    live: Live,
    /// Set when the user cancelled (the task then stores `cancelled` with
    /// the partial text); unset for deletions and shutdown.
    by_user: Arc<AtomicBool>,
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
        for message in messages
            .iter_mut()
            .filter(|m| matches!(m.status.as_str(), "pending" | "streaming"))
        {
            match running.get(&message.id) {
                Some(r) if r.generation == message.generation => {
                    message.content = r.live.text();
                    if !message.content.is_empty() {
                        // Its `streaming` may not have committed when the row was read.
                        message.status = "streaming".to_owned();
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
struct Live(Arc<Mutex<String>>);

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn text(&self) -> String {
        self.lock().clone()
    }
}

/// The end of a generation, for the request that started it.
pub struct Finished {
    signal: CancellationToken,
    stored: Arc<OnceLock<Message>>,
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
    state.generations.lock().insert(
        reply.id.clone(),
        Running {
            generation,
            live: live.clone(),
            by_user: by_user.clone(),
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
        history: Vec::new(),
        stream: TokenSink::default(),
    };
    let task_state = state.clone();
    let finished = Finished {
        signal: done.clone(),
        stored: Arc::new(OnceLock::new()),
    };
    let stored = Arc::clone(&finished.stored);
    state.generations.tracker.spawn(async move {
        let (message_id, user_id) = (request.message_id.clone(), request.user_id.clone());
        let mut streamer = Streamer::new(&task_state, &user_id, &message_id, generation, live);
        let outcome = {
            let run = async {
                let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                let request = with_history(&task_state, request, TokenSink::new(sender)).await;
                let (outcome, ()) = tokio::join!(generate(&task_state, request), streamer.run(receiver));
                outcome
            };
            tokio::select! {
                outcome = run => Some(outcome),
                () = cancel.cancelled() => None,
            }
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
                if let Some(reply) =
                    store(&task_state, &user_id, &message_id, generation, outcome, &cancel).await
                {
                    let _ = stored.set(reply);
                }
            }
            None if by_user.load(Ordering::SeqCst) => streamer.store_cancelled().await,
            // Deleted, or shutting down: keep what streamed for the sweep.
            None => streamer.save(true).await,
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
    finished
}

/// Characters of earlier turns given to the answer provider.
const HISTORY_CHARS: usize = 6_000;

async fn with_history(state: &AppState, mut request: AnswerRequest, stream: TokenSink) -> AnswerRequest {
    request.stream = stream;
    if !state.answerer.uses_history() {
        return request;
    }
    let (user_id, id) = (request.user_id.clone(), request.message_id.clone());
    match state
        .db
        .read(move |conn| db::messages::history(conn, &user_id, &id, HISTORY_CHARS))
        .await
    {
        Ok(history) => request.history = history,
        Err(err) => {
            tracing::warn!(error = %err, "cannot load the conversation history; answering without it")
        }
    }
    request
}

/// Longest time streamed text waits before it goes out as one
/// `message.delta` (so at most ~20 frames per second per reply).
const DELTA_EVERY: Duration = Duration::from_millis(50);
/// How often the text streamed so far is saved for reloads.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Turns streamed text into `message.delta` frames, marks the reply
/// `streaming` on the first piece, and saves the text at a bounded rate.
struct Streamer {
    state: AppState,
    user_id: String,
    message_id: String,
    generation: i64,
    /// Everything sent so far.
    live: Live,
    /// Its length in characters (the next delta's `offset`).
    chars: usize,
    /// Received, not yet sent.
    pending: String,
    seq: u64,
    streaming: bool,
    saved_chars: usize,
    last_save: std::time::Instant,
}

impl Streamer {
    fn new(state: &AppState, user_id: &str, message_id: &str, generation: i64, live: Live) -> Streamer {
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
    async fn run(&mut self, mut receiver: tokio::sync::mpsc::UnboundedReceiver<String>) {
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
        let frame = serde_json::json!({"type": "message.delta", "data": {
            "message_id": self.message_id,
            "seq": self.seq,
            "offset": self.chars,
            "delta": delta,
        }});
        // Sent and appended under one lock: a reader of the live text has
        // every delta sent before it read, and none sent after.
        let mut live = self.live.lock();
        self.state
            .hub
            .push_control(&self.user_id, frame.to_string().into());
        live.push_str(&delta);
        drop(live);
        self.seq += 1;
        self.chars += delta.chars().count();
    }

    /// Saves the text so far (when it changed, or always when `force`).
    async fn save(&mut self, force: bool) {
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
    async fn store_cancelled(&mut self) {
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
        if let Err(err) = stored {
            tracing::warn!(error = %err, message_id = %self.message_id, "cannot store a cancelled reply");
        }
    }
}

/// Commits the outcome, retrying while the database refuses (full disk,
/// locked): a reply must not spin while the process lives. If it never
/// commits, the shutdown or start-up sweep marks it interrupted. Returns the
/// reply as stored (`None` if it was not, or a retry took it over).
async fn store(
    state: &AppState,
    user_id: &str,
    id: &str,
    generation: i64,
    outcome: Outcome,
    cancel: &CancellationToken,
) -> Option<Message> {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=STORE_ATTEMPTS {
        let (user, message_id, outcome) = (user_id.to_owned(), id.to_owned(), outcome.clone());
        let now = db::now_ms();
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
    let future = state.answerer.answer(request);
    let task = tokio::spawn(future);
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
