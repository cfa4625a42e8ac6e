//! The document worker: `--workers` tasks claim queued parse jobs with a
//! lease and a fencing token, run the parser in a child process (`child`),
//! renew the lease while it works, and commit the outcome (chunks,
//! statuses, attempt, events) in one transaction (`transitions`). How a
//! failure ends is `policy`'s: retry with backoff, crash twice and the job
//! fails as `crash_loop`, a full disk waits without using attempts.

mod child;
pub mod child_main;
pub mod policy;
mod protocol;
#[cfg(feature = "test-hooks")]
mod test_hooks;
pub mod transitions;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::db::{self, jobs::Claimed};
use crate::types::ChunkText;
use child::ParserChild;
use child_main::ChildLimits;
use policy::{Failure, Timing};
use protocol::ParseRequest;
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

    async fn attempt(&mut self, task: &Task, cancel: &CancellationToken) -> Result<(), db::Error> {
        let config = &self.state.config;
        let claimed = &task.claimed;
        let request = ParseRequest {
            path: self.state.files.path(&claimed.document_id),
            kind: task.kind.clone(),
            attempt: claimed.attempt,
            max_text_bytes: usize::try_from(config.max_upload_mb.saturating_mul(20 << 20))
                .unwrap_or(usize::MAX),
            chunk_size: config.chunk_size,
            chunk_overlap: config.chunk_overlap,
        };
        let state = self.state.clone();
        let parsed = tokio::select! {
            parsed = self.parse(&request) => Some(parsed),
            () = keep_lease(&state, claimed) => None,
            () = cancel.cancelled() => None,
            // Shutting down: the job goes back to the queue (shutdown sweep).
            () = state.stopping.cancelled() => None,
        };
        let Some(parsed) = parsed else {
            // Lost the lease, the document was deleted, or the server is
            // stopping: whatever the child was doing is moot. Start a fresh
            // child for the next job.
            if let Some(mut child) = self.child.take() {
                child.kill().await;
            }
            return Ok(());
        };
        let outcome = match parsed {
            Ok(chunks) => self.commit(claimed, chunks).await,
            Err(failure) => Err(failure),
        };
        if let Err(failure) = outcome {
            if let Failure::Crash(why) = &failure {
                tracing::warn!(job_id = %claimed.job_id, document_id = %claimed.document_id, "parser crashed: {why}");
            }
            self.record_failure(claimed, failure).await?;
        }
        Ok(())
    }

    /// Runs the parser child (starting one when needed).
    async fn parse(&mut self, request: &ParseRequest) -> Result<Vec<ChunkText>, Failure> {
        let limits = ChildLimits {
            memory_bytes: self.state.config.parse_memory_mb.saturating_mul(1 << 20),
            cpu_seconds: self.state.config.job_timeout.as_secs().saturating_mul(2).max(60),
            parent_pid: Some(std::process::id()),
        };
        if self
            .child
            .as_ref()
            .and_then(ParserChild::cpu_seconds)
            .is_some_and(|s| s > limits.cpu_seconds / 2)
        {
            // Its CPU-time limit is for the whole process: start afresh
            // before a healthy job could hit it.
            if let Some(mut old) = self.child.take() {
                old.kill().await;
            }
        }
        let child = match &mut self.child {
            Some(child) => child,
            slot => match ParserChild::spawn(&self.exe, limits) {
                Ok(child) => slot.insert(child),
                Err(err) => {
                    return Err(Failure::Transient(format!(
                        "cannot start the parser process: {err}"
                    )));
                }
            },
        };
        let result = child.parse(request, self.state.config.job_timeout).await;
        if matches!(result, Err(Failure::Crash(_))) {
            self.child = None;
        }
        result
    }

    /// Marks the document ingesting and swaps in the chunks, in one
    /// transaction (one commit to wait for, not two): its events still say
    /// `ingesting`, then `ready`. The same transaction claims this worker's
    /// next job, so that a queue of small documents costs one commit each.
    async fn commit(&mut self, claimed: &Claimed, chunks: Vec<ChunkText>) -> Result<(), Failure> {
        let now = db::now_ms();
        let lease = millis(self.state.config.job_lease);
        let stopping = self.state.stopping.clone();
        let c = claimed.clone();
        let written = self
            .state
            .db
            .write(move |tx| {
                if transitions::start_ingesting(tx, &c, now)? {
                    transitions::succeed(tx, &c, &chunks, now)?;
                }
                if stopping.is_cancelled() {
                    return Ok(None);
                }
                transitions::claim(tx, now, lease)
            })
            .await;
        self.next = written.map_err(storage_failure)?;
        Ok(())
    }

    async fn record_failure(&self, claimed: &Claimed, failure: Failure) -> Result<(), db::Error> {
        let base = self.state.config.job_retry_base;
        let c = claimed.clone();
        let timing = Timing {
            now: db::now_ms(),
            backoff: move |n| policy::backoff(base, n),
            disk_full_wait: millis(DISK_FULL_WAIT),
        };
        self.state
            .db
            .write(move |tx| transitions::fail(tx, &c, &failure, &timing))
            .await?;
        Ok(())
    }
}

fn storage_failure(err: db::Error) -> Failure {
    match err {
        db::Error::DiskFull => Failure::DiskFull("disk full: waiting for free space".into()),
        other => Failure::Transient(format!("cannot store the result: {other}")),
    }
}

/// Renews the lease every `--job-heartbeat`; returns when it was lost.
async fn keep_lease(state: &AppState, claimed: &Claimed) {
    let every = state.config.job_heartbeat;
    let lease = millis(state.config.job_lease);
    loop {
        tokio::time::sleep(every).await;
        let c = claimed.clone();
        let until = db::now_ms() + lease;
        match state.db.write(move |tx| db::jobs::renew(tx, &c, until)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job_id = %claimed.job_id, "lost the job's lease; abandoning the attempt");
                return;
            }
            // A failed renewal is retried at the next beat; the lease is
            // long enough to survive one.
            Err(err) => tracing::warn!(error = %err, "cannot renew a job lease"),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Starts the configured number of workers.
pub fn spawn(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    (0..state.config.workers)
        .map(|_| tokio::spawn(Worker::new(state.clone()).run()))
        .collect()
}
