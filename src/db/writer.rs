//! The single writer: one thread owns the write connection and commits the
//! writes queued meanwhile in one transaction (group commit), so one fsync
//! serves many requests. Each write runs in its own savepoint, so a failing
//! write rolls back alone and the others in its batch still commit.
//! The WAL is checkpointed between batches, once their writers were answered.

use std::cell::Cell;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use tokio::sync::{mpsc, oneshot};

use super::events::EventFrame;
use super::{Error, Result, Tx};

/// Receives the events of each committed write, in commit order, on the
/// writer thread (so a user's events are published in id order).
pub type Publisher = Arc<dyn Fn(Vec<EventFrame>) + Send + Sync>;

/// Most writes committed together; bounds the latency of the first one.
const MAX_BATCH: usize = 256;
/// Queued writes before `submit` waits (back-pressure instead of growth).
const QUEUE_DEPTH: usize = 4096;

/// WAL frames (pages) after which the writer checkpoints: SQLite's own
/// automatic checkpoint threshold.
const CHECKPOINT_FRAMES: c_int = 1000;

thread_local! {
    /// Frames in the WAL after the last commit on this (the writer) thread.
    static WAL_FRAMES: Cell<c_int> = const { Cell::new(0) };
}

/// The write connection's WAL hook. Setting it turns off SQLite's automatic
/// checkpoint, which would run inside COMMIT and so delay the answers to
/// the batch's writes (by seconds after a bulk change such as the start-up
/// sweep); the writer checkpoints after answering instead.
fn note_wal_frames(_: &Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(frames);
    Ok(())
}

/// Called once the batch that holds a write has committed (`Ok`) or failed.
type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// A queued write, type-erased so one channel carries writes of any result.
trait Job: Send {
    /// Runs inside the batch's transaction; says whether it succeeded.
    fn run(self: Box<Self>, conn: &Connection, publish: &Publisher) -> (bool, Completion);
    /// The write could not run at all.
    fn abort(self: Box<Self>, err: Error);
}

struct TypedJob<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, publish: &Publisher) -> (bool, Completion) {
        let TypedJob { f, reply } = *self;
        let mut tx = Tx::new(conn);
        match f(&mut tx) {
            Ok(value) => {
                let (events, actions) = (tx.events, tx.after_commit);
                let publish = Arc::clone(publish);
                (
                    true,
                    Box::new(move |committed: Result<()>| {
                        if committed.is_ok() {
                            if !events.is_empty() {
                                publish(events);
                            }
                            actions.into_iter().for_each(|action| action());
                        }
                        let _ = reply.send(committed.map(|()| value));
                    }),
                )
            }
            Err(err) => (
                false,
                Box::new(move |_| {
                    let _ = reply.send(Err(err));
                }),
            ),
        }
    }

    fn abort(self: Box<Self>, err: Error) {
        let _ = self.reply.send(Err(err));
    }
}

enum Msg {
    Job(Box<dyn Job>),
    /// Checkpoint the WAL between batches (not possible inside one).
    Checkpoint,
    Stop,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Writer {
    pub fn start(conn: Connection, publish: Publisher) -> Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("ragd-writer".into())
            .spawn(move || run(conn, rx, publish))
            .map_err(|e| Error::Other(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    pub async fn submit<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, done) = oneshot::channel::<Result<T>>();
        let job: Box<dyn Job> = Box::new(TypedJob { f, reply });
        self.tx.send(Msg::Job(job)).await.map_err(|_| Error::Closed)?;
        // A dropped reply means the write panicked inside the writer.
        done.await
            .map_err(|_| Error::Other("the write failed unexpectedly".into()))?
    }

    /// Asks the writer to checkpoint the WAL after the writes queued so far.
    pub async fn checkpoint(&self) {
        let _ = self.tx.send(Msg::Checkpoint).await;
    }

    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Stop).await;
        let handle = self.thread.lock().ok().and_then(|mut guard| guard.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Msg>, publish: Publisher) {
    conn.wal_hook(Some(note_wal_frames));
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut stop = false;
        let mut checkpoint = false;
        match rx.blocking_recv() {
            Some(Msg::Job(job)) => batch.push(job),
            Some(Msg::Checkpoint) => checkpoint = true,
            Some(Msg::Stop) | None => stop = true,
        }
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Checkpoint) => checkpoint = true,
                Ok(Msg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &publish, batch.drain(..));
        }
        // An asked-for checkpoint also truncates the WAL; the automatic one
        // copies it back into the database, like SQLite's own would.
        let grown = WAL_FRAMES.replace(0) >= CHECKPOINT_FRAMES;
        let mode = if checkpoint { "TRUNCATE" } else { "PASSIVE" };
        if (checkpoint || grown)
            && let Err(err) = conn.execute_batch(&format!("PRAGMA wal_checkpoint({mode})"))
        {
            tracing::warn!(error = %err, "WAL checkpoint failed");
        }
        if stop {
            break;
        }
    }
    // Writes still queued after Stop are refused (their senders see Closed).
    rx.close();
    while let Ok(Msg::Job(job)) = rx.try_recv() {
        job.abort(Error::Closed);
    }
    if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %err, "final WAL checkpoint failed");
    }
}

fn commit_batch(conn: &Connection, publish: &Publisher, jobs: impl Iterator<Item = Box<dyn Job>>) {
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = Error::from(err);
        tracing::error!(error = %err, "cannot begin a write transaction");
        jobs.for_each(|job| job.abort(err.duplicate()));
        return;
    }
    let mut completions: Vec<Completion> = Vec::new();
    for job in jobs {
        if let Err(err) = conn.execute_batch("SAVEPOINT job") {
            job.abort(Error::from(err));
            continue;
        }
        match catch_unwind(AssertUnwindSafe(|| job.run(conn, publish))) {
            Ok((true, completion)) => {
                let _ = conn.execute_batch("RELEASE job");
                completions.push(completion);
            }
            Ok((false, completion)) => {
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                completions.push(completion);
            }
            Err(_) => {
                // The reply went down with the job: its caller sees a failure.
                tracing::error!("a write panicked; its changes were rolled back");
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            }
        }
    }
    // New chunks enter the search index once per batch (one FTS5 segment),
    // in the same transaction.
    let committed =
        super::chunks::index_pending(conn).and_then(|_| conn.execute_batch("COMMIT").map_err(Error::from));
    match committed {
        Ok(()) => completions.into_iter().for_each(|c| c(Ok(()))),
        Err(err) => {
            tracing::error!(error = %err, "commit failed; the batch was rolled back");
            let _ = conn.execute_batch("ROLLBACK");
            completions.into_iter().for_each(|c| c(Err(err.duplicate())));
        }
    }
}
