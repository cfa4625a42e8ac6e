//! Taking back running jobs in bulk: at start-up every running job belongs
//! to a dead process, while serving those whose lease expired, at shutdown
//! this process's own. Set-based, a slice at a time, since the start-up
//! sweep may find a crashed server's whole queue running.

use std::collections::HashMap;

use rusqlite::Connection;
use tracing::instrument;

use super::{Attempt, COLUMNS, Job, attempt, job};
use crate::db::{Error, Result, Tx};
use crate::types::JobStatus;

/// Which running jobs a rescue takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescue {
    /// At start-up: every running job belongs to a dead process; each
    /// costs a retry.
    All,
    /// While serving: jobs whose worker stopped renewing the lease; each
    /// costs a retry.
    Expired,
    /// At shutdown: this process's own jobs, requeued without cost.
    Shutdown,
}

/// A job a rescue took back: now queued (or failed, when the interruption
/// used up its last retry), with all its attempts.
#[derive(Debug, Clone)]
pub struct Rescued {
    pub user_id: String,
    pub job: Job,
    pub failed: bool,
}

/// The error of a job (and its document) interrupted once too often.
pub const OUT_OF_RETRIES: &str = "interrupted: the job was interrupted more often than it may be retried";

/// The running jobs a rescue takes: all, or with `:expired_only` those whose
/// lease ended before `:now`. Through the partial index of running jobs;
/// an `ORDER BY rowid` would make SQLite scan the whole table instead.
pub(super) const TAKEN: &str = "SELECT rowid FROM jobs
    WHERE status = 'running' AND (NOT :expired_only OR lease_until < :now)";

/// One slice of the jobs a rescue takes (`:slice`, a JSON array of their
/// rowids, looked up one by one; the conditions of `TAKEN` still hold for
/// them), and whether the interruption, costing `:cost` retries, leaves
/// each without a retry (`failed`, then with `error`). Every statement of a
/// slice starts with it.
const RESCUED: &str = "rescued AS (
    SELECT rowid AS job, id, document_id, attempt, retry_count + :cost > max_retries AS failed,
           :error AS error
    FROM jobs WHERE rowid IN (SELECT value FROM json_each(:slice))
                AND status = 'running' AND (NOT :expired_only OR lease_until < :now))";

/// Rescued jobs handled (and held in memory) together.
pub(super) const SLICE: usize = 1000;

/// Closes the open attempt of the running jobs `which` takes with
/// "interrupted" and requeues them (`retry_count + 1`, or failed when out of
/// retries), without events: `then` gets each slice of them, in job
/// (creation) order, to move their documents and emit the events. Returns
/// how many were taken.
#[instrument(skip_all)]
pub fn rescue(
    tx: &mut Tx<'_>,
    which: Rescue,
    now: i64,
    mut then: impl FnMut(&mut Tx<'_>, Vec<Rescued>) -> Result<()>,
) -> Result<usize> {
    let expired_only = which == Rescue::Expired;
    let mut jobs: Vec<i64> = tx
        .prepare_cached(TAKEN)?
        .query_map(
            rusqlite::named_params! {":expired_only": expired_only, ":now": now},
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    // Creation order.
    jobs.sort_unstable();
    for slice in jobs.chunks(SLICE) {
        let scope = Scope {
            expired_only,
            cost: i64::from(which != Rescue::Shutdown),
            now,
            slice: serde_json::to_string(slice).map_err(|e| Error::Other(format!("rescue slice: {e}")))?,
        };
        // The jobs go last: updating them takes them out of `RESCUED`.
        let mut attempts = close_attempts(tx, &scope)?;
        let mut rescued = requeue_jobs(tx, &scope)?;
        // RETURNING has no order.
        rescued.sort_unstable_by_key(|(rowid, _)| *rowid);
        let rescued = rescued
            .into_iter()
            .map(|(_, mut r)| {
                r.job.attempts = attempts.remove(&r.job.id).unwrap_or_default();
                r
            })
            .collect();
        then(tx, rescued)?;
    }
    Ok(jobs.len())
}

/// The parameters of `RESCUED`.
struct Scope {
    expired_only: bool,
    cost: i64,
    now: i64,
    /// The slice's rowids as a JSON array.
    slice: String,
}

impl Scope {
    fn params(&self) -> [(&'static str, &dyn rusqlite::ToSql); 5] {
        [
            (":expired_only", &self.expired_only),
            (":now", &self.now),
            (":cost", &self.cost),
            (":error", &OUT_OF_RETRIES),
            (":slice", &self.slice),
        ]
    }
}

/// Closes the rescued jobs' open attempts; returns all their attempts.
#[instrument(skip_all)]
fn close_attempts(conn: &Connection, scope: &Scope) -> Result<HashMap<String, Vec<Attempt>>> {
    conn.prepare_cached(&format!(
        "WITH {RESCUED}
         UPDATE job_attempts SET finished_at = :now, error = 'interrupted'
         FROM rescued WHERE job_attempts.job_id = rescued.id AND job_attempts.n = rescued.attempt"
    ))?
    .execute(&scope.params()[..])?;
    let mut stmt = conn.prepare_cached(&format!(
        "WITH {RESCUED}
         SELECT a.job_id, a.n, a.started_at, a.finished_at, a.error
         FROM rescued JOIN job_attempts AS a ON a.job_id = rescued.id ORDER BY a.job_id, a.n"
    ))?;
    let mut rows = stmt.query(&scope.params()[..])?;
    let mut attempts: HashMap<String, Vec<Attempt>> = HashMap::new();
    while let Some(row) = rows.next()? {
        attempts.entry(row.get(0)?).or_default().push(attempt(row, 1)?);
    }
    Ok(attempts)
}

/// Requeues (or fails) the rescued jobs; returns them (without attempts)
/// with their rowids.
#[instrument(skip_all)]
fn requeue_jobs(conn: &Connection, scope: &Scope) -> Result<Vec<(i64, Rescued)>> {
    Ok(conn
        .prepare_cached(&format!(
            "WITH {RESCUED}
             UPDATE jobs SET status = iif(rescued.failed, 'failed', 'queued'),
                 retry_count = retry_count + iif(rescued.failed, 0, :cost),
                 last_error = iif(rescued.failed, rescued.error, 'interrupted'),
                 run_after = iif(rescued.failed, run_after, :now),
                 lease_until = NULL, updated_at = :now
             FROM rescued WHERE jobs.rowid = rescued.job
             RETURNING {COLUMNS}, user_id, rowid"
        ))?
        .query_map(&scope.params()[..], |row| {
            // (RETURNING may name only the updated table's columns.)
            let job = job(row)?;
            Ok((
                row.get::<_, i64>(10)?,
                Rescued {
                    user_id: row.get(9)?,
                    failed: job.status == JobStatus::Failed,
                    job,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?)
}
