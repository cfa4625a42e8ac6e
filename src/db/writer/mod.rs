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
use std::time::Duration;

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
trait QueuedWrite: Send {
    /// Runs inside the batch's transaction; says whether it succeeded (and
    /// if not, with a copy of its error).
    fn run(self: Box<Self>, conn: &Connection, publish: &Publisher) -> (Result<()>, Completion);
    /// The write could not run at all.
    fn abort(self: Box<Self>, err: Error);
}

struct TypedWrite<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> QueuedWrite for TypedWrite<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, publish: &Publisher) -> (Result<()>, Completion) {
        let TypedWrite { f, reply } = *self;
        let mut tx = Tx::new(conn);
        match f(&mut tx) {
            Ok(value) => {
                let (events, actions) = (tx.events, tx.after_commit);
                let publish = Arc::clone(publish);
                (
                    Ok(()),
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
                Err(err.duplicate()),
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

/// What an asked-for checkpoint does about readers of an older snapshot
/// (a backup's long read), which keep the WAL from being truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Waits for them, up to the busy timeout: to free disk space.
    Wait,
    /// Copies what it can and leaves the truncation to a later one: every
    /// write queued behind the checkpoint would wait with it.
    Skip,
}

enum Msg {
    Write(Box<dyn QueuedWrite>),
    /// Checkpoint the WAL between batches (not possible inside one).
    Checkpoint(Readers),
    Stop,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Writer {
    /// Starts the writer thread; it records each batch's time from `BEGIN`
    /// to `COMMIT` in `commits`.
    pub fn start(conn: Connection, publish: Publisher, commits: metrics::Histogram) -> Result<Writer> {
        Self::start_with(conn, publish, commits, true)
    }

    /// A writer beside the server's (`ragd user`): it leaves the WAL to
    /// the server, without the final checkpoint that would wait for it.
    pub fn start_beside(conn: Connection, publish: Publisher) -> Result<Writer> {
        Self::start_with(conn, publish, metrics::Histogram::noop(), false)
    }

    fn start_with(
        conn: Connection,
        publish: Publisher,
        commits: metrics::Histogram,
        final_checkpoint: bool,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("ragd-writer".into())
            .spawn(move || run(conn, rx, publish, commits, final_checkpoint))
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
        let write: Box<dyn QueuedWrite> = Box::new(TypedWrite { f, reply });
        self.tx.send(Msg::Write(write)).await.map_err(|_| Error::Closed)?;
        // A dropped reply means the write panicked inside the writer.
        done.await
            .map_err(|_| Error::Other("the write failed unexpectedly".into()))?
    }

    /// Writes queued and not yet taken by the writer thread.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Asks the writer to checkpoint and truncate the WAL after the writes
    /// queued so far.
    pub async fn checkpoint(&self, readers: Readers) {
        let _ = self.tx.send(Msg::Checkpoint(readers)).await;
    }

    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Stop).await;
        let handle = self.thread.lock().ok().and_then(|mut guard| guard.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    publish: Publisher,
    commits: metrics::Histogram,
    final_checkpoint: bool,
) {
    conn.wal_hook(Some(note_wal_frames));
    let mut batch: Vec<Box<dyn QueuedWrite>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut stop = false;
        let mut checkpoint = None;
        match rx.blocking_recv() {
            Some(Msg::Write(write)) => batch.push(write),
            Some(Msg::Checkpoint(readers)) => checkpoint = Some(readers),
            Some(Msg::Stop) | None => stop = true,
        }
        // A checkpoint ends the batch: the writes queued after it run after
        // it (a delete retried on a full disk counts on the space it frees).
        while !stop && checkpoint.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Write(write)) => batch.push(write),
                Ok(Msg::Checkpoint(readers)) => checkpoint = Some(readers),
                Ok(Msg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let started = std::time::Instant::now();
            commit_batch(&conn, &publish, batch.drain(..));
            commits.record(started.elapsed().as_secs_f64());
        }
        // An asked-for checkpoint also truncates the WAL; the automatic one
        // copies it back into the database, like SQLite's own would.
        let grown = WAL_FRAMES.replace(0) >= CHECKPOINT_FRAMES;
        let done = match checkpoint {
            Some(readers) => truncate(&conn, readers),
            None if grown => conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)"),
            None => Ok(()),
        };
        if let Err(err) = done {
            tracing::warn!(error = %err, "WAL checkpoint failed");
        }
        if stop {
            break;
        }
    }
    // Writes still queued after Stop are refused (their senders see Closed).
    rx.close();
    while let Ok(Msg::Write(write)) = rx.try_recv() {
        write.abort(Error::Closed);
    }
    if final_checkpoint && let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %err, "final WAL checkpoint failed");
    }
}

/// A checkpoint that truncates the WAL. With `Readers::Skip` it waits
/// only briefly for readers, enough for the pool's short reads and not for
/// a long one; SQLite then reports busy in its result row, not as an error.
fn truncate(conn: &Connection, readers: Readers) -> rusqlite::Result<()> {
    if readers == Readers::Skip {
        conn.busy_timeout(SKIP_READERS_AFTER)?;
    }
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
    if readers == Readers::Skip {
        conn.busy_timeout(super::BUSY_TIMEOUT)?;
    }
    if busy? != 0 {
        tracing::debug!(
            ?readers,
            "WAL checkpoint: a reader kept the WAL from being truncated"
        );
    }
    Ok(())
}

/// How long a checkpoint with `Readers::Skip` waits for readers.
const SKIP_READERS_AFTER: Duration = Duration::from_millis(100);

fn commit_batch(
    conn: &Connection,
    publish: &Publisher,
    mut writes: impl Iterator<Item = Box<dyn QueuedWrite>>,
) {
    if let Err(err) = begin(conn) {
        writes.for_each(|write| write.abort(err.duplicate()));
        return;
    }
    let mut completions: Vec<Completion> = Vec::new();
    while let Some(write) = writes.next() {
        if let Err(err) = conn.execute_batch("SAVEPOINT write") {
            write.abort(Error::from(err));
            continue;
        }
        let failed = match catch_unwind(AssertUnwindSafe(|| write.run(conn, publish))) {
            Ok((Ok(()), completion)) => {
                completions.push(completion);
                None
            }
            Ok((Err(err), completion)) => {
                completions.push(completion);
                Some(err)
            }
            Err(_) => {
                // The reply went down with the write: its caller sees a failure.
                tracing::error!("a write panicked; its changes were rolled back");
                Some(Error::Other("a write panicked".into()))
            }
        };
        let settled = if conn.is_autocommit() {
            // SQLite rolled back the whole transaction, not just the failed
            // statement (it may on a full disk or an I/O error).
            Err(failed.unwrap_or_else(|| Error::Other("the write transaction ended unexpectedly".into())))
        } else if failed.is_some() {
            conn.execute_batch("ROLLBACK TO write; RELEASE write")
                .map_err(Error::from)
        } else {
            conn.execute_batch("RELEASE write").map_err(Error::from)
        };
        if let Err(err) = settled {
            // The batch's transaction is lost or unusable: the writes run in
            // it so far must not be answered as committed. The rest of the
            // batch starts a new transaction.
            tracing::error!(error = %err, "a failed write rolled back its batch");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            completions.drain(..).for_each(|c| c(Err(err.duplicate())));
            if let Err(err) = begin(conn) {
                writes.for_each(|write| write.abort(err.duplicate()));
                return;
            }
        }
    }
    let committed = conn.execute_batch("COMMIT").map_err(Error::from);
    match committed {
        Ok(()) => completions.into_iter().for_each(|c| c(Ok(()))),
        Err(err) => {
            tracing::error!(error = %err, "commit failed; the batch was rolled back");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            completions.into_iter().for_each(|c| c(Err(err.duplicate())));
        }
    }
}

fn begin(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|err| {
        let err = Error::from(err);
        tracing::error!(error = %err, "cannot begin a write transaction");
        err
    })
}

#[cfg(test)]
mod tests;
