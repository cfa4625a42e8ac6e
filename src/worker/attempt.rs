//! One attempt of a claimed job: the parser child runs the file (started
//! afresh after a crash or when its CPU-time budget is half spent) while
//! the lease is renewed; the outcome commits through `transitions`, the
//! success together with the claim of the next job.

use tokio_util::sync::CancellationToken;

use super::child::ParserChild;
use super::child_main::ChildLimits;
use super::policy::{self, Failure, Timing};
use super::protocol::ParseRequest;
use super::transitions::{self, Stage, Task};
use super::{DISK_FULL_WAIT, Worker, millis};
use crate::AppState;
use crate::db::{self, jobs::Claimed, jobs::End};
use crate::instruments::Attempt;
use crate::types::ChunkText;

impl Worker {
    pub(super) async fn attempt(&mut self, task: &Task, cancel: &CancellationToken) -> Result<(), db::Error> {
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

    /// Stages the chunks beside the document's live ones (the document
    /// `ingesting`) and hands them to the indexer, which finishes the job
    /// once they are searchable. The same transaction claims this worker's
    /// next job while the index keeps up, so that a queue of small
    /// documents costs one commit each here.
    async fn commit(&mut self, claimed: &Claimed, chunks: Vec<ChunkText>) -> Result<(), Failure> {
        let now = db::now_ms();
        let lease = millis(self.state.config.job_lease);
        let state = self.state.clone();
        let c = claimed.clone();
        let written = self
            .state
            .db
            .write(move |tx| {
                match transitions::stage(tx, &c, &chunks, now, lease)? {
                    Stage::Staged(staged) => {
                        let indexing = state.clone();
                        tx.after_commit(move || indexing.worker.indexing.add(staged));
                    }
                    Stage::Done => {
                        // Nothing to index: the job succeeded in this write.
                        let jobs = state.metrics.jobs.clone();
                        let took = since(c.claimed_at);
                        tx.after_commit(move || jobs.attempt_ended(Attempt::Succeeded, Some(took)));
                    }
                    Stage::Lost => {}
                }
                if state.stopping.is_cancelled() || !state.worker.indexing.has_room() {
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
        let ended = self
            .state
            .db
            .write(move |tx| transitions::fail(tx, &c, &failure, &timing))
            .await?;
        if let Some(end) = ended {
            let outcome = match end {
                End::Succeeded => Attempt::Succeeded,
                End::Retry { .. } => Attempt::Retry,
                End::Wait { .. } => Attempt::Wait,
                End::Fail { .. } => Attempt::Failed,
            };
            let took = since(claimed.claimed_at);
            self.state.metrics.jobs.attempt_ended(outcome, Some(took));
        }
        Ok(())
    }
}

/// Time since `at` (ms since the epoch), for an attempt's duration.
pub(super) fn since(at: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(db::now_ms().saturating_sub(at)).unwrap_or(0))
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
