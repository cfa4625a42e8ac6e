//! The sweeps that heal: at start-up (replies and jobs a dead process left
//! running, files no document owns) and periodically (expired leases, old
//! events and idempotency keys, the search index's view of its merges, the
//! disk reserve, the WAL).

use std::time::Duration;

use crate::AppState;
use crate::db::{self, Db};
use crate::files::Files;
use crate::instruments::Metrics;
use crate::worker::transitions;

use super::StartupError;

/// Start-up sweep (safe because this process owns the data dir): replies
/// and jobs left running by a dead process are interrupted and requeued,
/// and files no document owns (interrupted uploads) are removed.
pub(super) async fn at_start_up(db: &Db, files: &Files, metrics: &Metrics) -> Result<(), StartupError> {
    let failed = |e: db::Error| StartupError::Runtime(format!("start-up sweep failed: {e}"));
    let now = db::now_ms();
    let (replies, jobs) = db
        .write(move |tx| {
            // Nobody can listen yet: clients find these events in the log.
            tx.store_only();
            let replies = db::messages::interrupt_unfinished(tx, now)?;
            let jobs = transitions::rescue(tx, db::jobs::Rescue::All, now)?;
            Ok((replies, jobs))
        })
        .await
        .map_err(failed)?;
    metrics.replies.interrupted(replies);
    metrics.jobs.rescued(jobs);
    if replies > 0 || jobs > 0 {
        tracing::warn!(
            replies,
            jobs,
            "work left unfinished by a previous process was interrupted and requeued"
        );
    }
    files
        .create_dir()
        .map_err(|e| StartupError::Runtime(format!("cannot create the files directory: {e}")))?;
    let known = db.read(db::documents::all_ids).await.map_err(failed)?;
    let files = files.clone();
    let removed = tokio::task::spawn_blocking(move || files.remove_orphans(&known))
        .await
        .map_err(|e| StartupError::Runtime(format!("start-up sweep failed: {e}")))?;
    if removed > 0 {
        tracing::info!(removed, "removed files that no document owns");
    }
    Ok(())
}

/// The periodic sweep: requeues jobs whose lease expired, prunes old events
/// (keeping each user's newest `--event-retention-min`) and expired
/// idempotency keys, and checkpoints the WAL when it has grown.
pub(super) async fn periodically(state: AppState) {
    let mut ticker = tokio::time::interval(state.config.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let retention_ms = i64::try_from(state.config.event_retention.as_millis()).unwrap_or(i64::MAX);
        let keep = i64::from(state.config.event_retention_min);
        let now = db::now_ms();
        let swept = state
            .db
            .write(move |tx| {
                let jobs = transitions::rescue(tx, db::jobs::Rescue::Expired, now)?;
                let events = db::events::prune(tx, now.saturating_sub(retention_ms), now, keep)?;
                let keys = db::idempotency::prune(tx, now)?;
                Ok((jobs, events, keys))
            })
            .await;
        match swept {
            Ok((jobs, events, keys)) => {
                state.metrics.jobs.rescued(jobs);
                if jobs > 0 {
                    tracing::warn!(jobs, "requeued jobs whose worker stopped renewing the lease");
                    state.worker.job_queued();
                }
                if events + keys > 0 {
                    tracing::debug!(events, keys, "pruned");
                }
            }
            Err(err) => tracing::warn!(error = %err, "periodic sweep failed"),
        }
        refresh_index(&state).await;
        state.reserve.ensure().await;
        let wal = state.config.data_dir.join("ragd.db-wal");
        state.db.checkpoint_if_larger(&wal, WAL_CHECKPOINT_BYTES).await;
    }
}

/// Shows searches the segments that the index's background merges have
/// made since its last commit (fewer segments: cheaper searches), and lets
/// the files of the merged ones go; closes the index writer when no batch
/// came for `INDEX_WRITER_IDLE` (an idle server holds no writer).
async fn refresh_index(state: &AppState) {
    let index = state.search.clone();
    let refreshed = tokio::task::spawn_blocking(move || {
        index.close_idle(INDEX_WRITER_IDLE)?;
        index.refresh()
    });
    match refreshed.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot refresh the search index"),
        Err(err) => tracing::warn!(error = %err, "search index refresh task failed"),
    }
}

/// How long the index writer stays open without a batch.
const INDEX_WRITER_IDLE: Duration = Duration::from_secs(30);

/// The WAL is checkpointed by the sweep once it is larger than this.
const WAL_CHECKPOINT_BYTES: u64 = 64 << 20;
