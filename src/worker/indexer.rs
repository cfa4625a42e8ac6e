//! The indexer: keeps the full-text index (`crate::search`) in step with
//! `chunks`, and finishes the parse jobs whose chunks it has taken in. One
//! task; each step reads a bounded batch in one snapshot (the chunks
//! written since the index's `through`, and the delete queue), applies it
//! in one index commit, and then, in writes the writer commits together,
//! clears the applied deletes and makes each finished document's chunk set
//! live with the document `ready` (`transitions::finish`).
//!
//! Why it is crash-safe: the index commit comes first, and SQLite alone
//! says what is live. Until `finish` commits, searches keep serving the
//! document's old set (a staged set is not live, so its index entries are
//! dropped when a hit is read, `db::chunks::passages`); a crash before it
//! leaves the job `running`, which the start-up sweep requeues, and the
//! retry deletes the staged set (`db::chunks::stage`). A delete commits in
//! SQLite first: from then on its chunks are not served, and its queue
//! entries are cleared only after the index commit that applied them. An
//! index that lost commits (a crash of its own, a restore) reads again
//! from the `through` it has.
//!
//! Back-pressure: workers stage new chunks only while fewer than
//! `MAX_STAGED_CHUNKS` wait for the index; memory stays bounded because a
//! batch is read from disk, whatever the backlog.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use super::transitions::{self, Staged};
use crate::AppState;
use crate::db;
use crate::instruments::Attempt;
use crate::search::{self, Batch};

/// Chunks read into one index commit, at most.
const BATCH_CHUNKS: usize = 10_000;
/// Queued deletes applied in one index commit, at most.
const BATCH_DELETES: usize = 100_000;
/// Staged chunks waiting for the index above which workers wait.
pub const MAX_STAGED_CHUNKS: usize = 50_000;
/// Longest sleep without a wake-up (a safety net: writes wake it).
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Pause after a failed step.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The documents waiting for the index, shared by the workers (which add
/// to it) and the indexer (which finishes them).
#[derive(Default)]
pub struct Indexing {
    staged: Mutex<Vec<Staged>>,
    /// Woken when there is something to index or to finish.
    wake: Notify,
    /// Woken when staged chunks were finished (room for more).
    room: Notify,
}

impl Indexing {
    /// A set was staged (its write committed): index it, then finish it.
    pub fn add(&self, staged: Staged) {
        self.lock().push(staged);
        self.wake.notify_one();
    }

    /// Chunks were deleted: the index should drop them soon.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Whether workers may stage more chunks now.
    pub fn has_room(&self) -> bool {
        self.lock().iter().map(|s| s.count).sum::<usize>() < MAX_STAGED_CHUNKS
    }

    /// Waits until workers may stage more chunks.
    pub async fn room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.has_room() {
                return;
            }
            // A bounded wait: a finish that failed frees no room by itself.
            let _ = tokio::time::timeout(IDLE_CHECK, room).await;
        }
    }

    /// Takes the staged sets that the index holds (all of them up to
    /// `through`).
    fn take_indexed(&self, through: i64) -> Vec<Staged> {
        let mut staged = self.lock();
        let (done, waiting): (Vec<Staged>, Vec<Staged>) = staged.drain(..).partition(|s| s.set.1 <= through);
        *staged = waiting;
        done
    }

    fn is_idle(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Staged>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs until the server stops; on the way out it finishes what the index
/// already holds.
pub async fn run(state: AppState) {
    let indexing = &state.worker.indexing;
    loop {
        let wake = indexing.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        match step(&state).await {
            Ok(true) => continue,
            Ok(false) if state.stopping.is_cancelled() => break,
            Ok(false) => {
                tokio::select! {
                    () = &mut wake => {}
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                    () = state.stopping.cancelled() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot update the search index; retrying");
                if state.stopping.is_cancelled() {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                    () = state.stopping.cancelled() => {}
                }
            }
        }
    }
    if !indexing.is_idle() {
        tracing::info!("documents still waiting for the search index are requeued");
    }
}

/// Indexes every chunk written so far before the server listens (after a
/// migration or a rebuild, that is all of them), logging its progress.
pub async fn catch_up(state: &AppState) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let total = state.db.read(db::chunks::last_rowid).await?;
    if state.search.through() >= total {
        return Ok(());
    }
    tracing::info!(
        through = state.search.through(),
        last = total,
        "building the search index"
    );
    let mut last_log = std::time::Instant::now();
    while step(state).await? {
        if last_log.elapsed() >= Duration::from_secs(5) {
            tracing::info!(
                through = state.search.through(),
                last = total,
                "building the search index"
            );
            last_log = std::time::Instant::now();
        }
    }
    tracing::info!(
        chunks = state.search.len(),
        seconds = started.elapsed().as_secs_f64(),
        "search index built"
    );
    Ok(())
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error(transparent)]
    Index(#[from] search::Error),
}

/// One step; `false` when there was nothing to do.
pub async fn step(state: &AppState) -> Result<bool, Error> {
    let applied = apply_next(&state.db, &state.search).await?;
    let done = state.worker.indexing.take_indexed(state.search.through());
    if applied.deletes_through == 0 && done.is_empty() {
        return Ok(applied.changed);
    }
    finish(state, applied.deletes_through, done).await;
    Ok(true)
}

/// What [`apply_next`] did.
pub struct Applied {
    /// Whether the index committed anything.
    pub changed: bool,
    /// The last queued delete the commit applied (0: none queued).
    pub deletes_through: i64,
}

/// Reads the next batch (chunks past the index's `through`, queued
/// deletes) in one snapshot and applies it in one index commit.
pub async fn apply_next(db: &db::Db, index: &search::Index) -> Result<Applied, Error> {
    let after = index.through();
    let (batch, deletes_through) = db
        .read(move |conn| {
            // One snapshot: `through` covers exactly the chunks read.
            let tx = conn.unchecked_transaction()?;
            let chunks = db::chunks::unindexed(&tx, after, BATCH_CHUNKS)?;
            let deletes = db::chunks::deletes(&tx, BATCH_DELETES)?;
            let through = match chunks.last() {
                Some(last) if chunks.len() == BATCH_CHUNKS => last.rowid,
                _ => db::chunks::last_rowid(&tx)?,
            };
            let batch = Batch {
                chunks,
                deleted: deletes.chunks,
                through,
            };
            Ok((batch, deletes.through))
        })
        .await?;
    let changed = !batch.chunks.is_empty() || !batch.deleted.is_empty() || batch.through > after;
    if changed {
        #[cfg(feature = "test-hooks")]
        let stall = !batch.chunks.is_empty();
        #[cfg(feature = "test-hooks")]
        if stall {
            super::test_hooks::index_stall(super::test_hooks::IndexPoint::BeforeCommit).await;
        }
        let index = index.clone();
        tokio::task::spawn_blocking(move || index.apply(batch))
            .await
            .map_err(|e| search::Error(format!("index task failed: {e}")))??;
        #[cfg(feature = "test-hooks")]
        if stall {
            super::test_hooks::index_stall(super::test_hooks::IndexPoint::AfterCommit).await;
        }
    }
    Ok(Applied {
        changed,
        deletes_through,
    })
}

/// Clears the applied deletes and finishes each document the index now
/// holds, each in a write of its own (the writer commits them together):
/// one that fails leaves its job to the lease sweep, not the others.
async fn finish(state: &AppState, deletes_through: i64, done: Vec<Staged>) {
    let now = db::now_ms();
    let clear = async {
        if deletes_through > 0 {
            let cleared = state
                .db
                .write(move |tx| db::chunks::clear_deletes(tx, deletes_through))
                .await;
            if let Err(err) = cleared {
                // Applied again by the next step: deletes are idempotent.
                tracing::warn!(error = %err, "cannot clear the applied index deletes");
            }
        }
    };
    let finishes = done.into_iter().map(|s| async move {
        let Staged { claimed, set, count } = s;
        let claimed_at = claimed.claimed_at;
        let written = state
            .db
            .write(move |tx| transitions::finish(tx, &claimed, Some(set), count, now))
            .await;
        match written {
            Ok(true) => {
                let took = super::attempt::since(claimed_at);
                state.metrics.jobs.attempt_ended(Attempt::Succeeded, Some(took));
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot mark an indexed document ready; its job will be retried");
            }
        }
    });
    tokio::join!(clear, futures_util::future::join_all(finishes));
    state.worker.indexing.room.notify_waiters();
}
