//! The document worker: `--workers` tasks claim queued parse jobs with a
//! lease and a fencing token, run the parser in a child process (`child`),
//! renew the lease while it works, and stage the chunks it made
//! (`transitions::stage`); the indexer (`indexer`) puts them in the search
//! index and then finishes the job (`transitions::finish`: chunks live,
//! document `ready`). How a failure ends is `policy`'s: retry with
//! backoff, crash twice and the job fails as `crash_loop`, a full disk
//! waits without using attempts.

mod attempt;
mod child;
pub mod child_main;
pub mod indexer;
pub mod policy;
mod protocol;
#[cfg(feature = "test-hooks")]
pub(crate) mod test_hooks;
pub mod transitions;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::db;
use child::ParserChild;
use transitions::Task;

/// How long a job waits after a full disk before it is tried again.
const DISK_FULL_WAIT: Duration = Duration::from_secs(30);
/// Longest sleep of an idle worker without a wake-up (a safety net: new
/// jobs wake a worker at once).
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Shared between the API (which queues jobs and deletes documents) and
/// the workers.
#[derive(Default)]
pub struct Control {
    /// Woken when a job is queued.
    pub wake: Notify,
    /// The documents being parsed now, to cancel when one is deleted.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// The documents whose chunks wait for the search index.
    pub indexing: indexer::Indexing,
}

impl Control {
    /// Wakes idle workers: a job was queued.
    pub fn job_queued(&self) {
        self.wake.notify_waiters();
    }

    /// Stops work on a document that was deleted (its job rows are gone, so
    /// the attempt could not commit anything anyway).
    pub fn cancel_document(&self, document_id: &str) {
        if let Some(token) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(document_id)
        {
            token.cancel();
        }
    }
}

/// What one step of a worker did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Ran one attempt of a job.
    Ran,
    /// Nothing was due; the next job is due at this time (ms), if any.
    Idle(Option<i64>),
}

/// One worker: claims and runs jobs one at a time with its own child.
pub struct Worker {
    state: AppState,
    child: Option<ParserChild>,
    exe: PathBuf,
    /// The next job, claimed in the transaction that finished the last one.
    next: Option<Task>,
}

impl Worker {
    pub fn new(state: AppState) -> Worker {
        let exe = state
            .hooks
            .parser_exe
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("ragd"));
        Worker {
            state,
            child: None,
            exe,
            next: None,
        }
    }

    /// Runs until the server stops.
    pub async fn run(mut self) {
        let stopping = self.state.stopping.clone();
        let state = self.state.clone();
        while !stopping.is_cancelled() {
            let wake = state.worker.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            match self.run_once().await {
                Ok(Step::Ran) => continue,
                Ok(Step::Idle(due)) => {
                    let wait = due
                        .map(|at| Duration::from_millis(u64::try_from(at - db::now_ms()).unwrap_or(0)))
                        .unwrap_or(IDLE_CHECK)
                        .min(IDLE_CHECK);
                    tokio::select! {
                        () = &mut wake => {}
                        () = tokio::time::sleep(wait) => {}
                        () = stopping.cancelled() => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "worker cannot reach the database; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stopping.cancelled() => {}
                    }
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            child.kill().await;
        }
    }

    /// Claims one due job and runs one attempt of it.
    pub async fn run_once(&mut self) -> Result<Step, db::Error> {
        let now = db::now_ms();
        let lease = millis(self.state.config.job_lease);
        let task = match self.next.take() {
            Some(task) => Some(task),
            None => {
                // Back-pressure: parse no more than the index takes in.
                self.state.worker.indexing.room().await;
                self.state
                    .db
                    .write(move |tx| transitions::claim(tx, now, lease))
                    .await?
            }
        };
        let Some(task) = task else {
            let due = self.state.db.read(db::jobs::next_due).await?;
            return Ok(Step::Idle(due));
        };
        let cancel = CancellationToken::new();
        let document_id = task.claimed.document_id.clone();
        self.running().insert(document_id.clone(), cancel.clone());
        let result = self.attempt(&task, &cancel).await;
        self.running().remove(&document_id);
        result.map(|()| Step::Ran)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.state
            .worker
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Starts the configured number of workers, then the indexer (the last
/// handle).
pub fn spawn(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    (0..state.config.workers)
        .map(|_| tokio::spawn(Worker::new(state.clone()).run()))
        .chain(std::iter::once(tokio::spawn(indexer::run(state.clone()))))
        .collect()
}
