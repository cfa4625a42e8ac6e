//! The `jobs` and `job_attempts` tables: enqueue, claim with a lease and a
//! fencing `attempt` token, renew, and end an attempt as the worker decided
//! (`worker::policy`). Every write of an attempt is fenced by
//! `WHERE id = ? AND status = 'running' AND attempt = ?`, and every change
//! of a job emits its `job.status_updated`. `rescue` takes back the jobs
//! of dead or stopping workers in bulk.

mod rescue;
#[cfg(test)]
mod tests;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

use super::events::{NewEvent, Subject};
use super::{Result, Tx, format_ms};
use crate::types::{EventType, JobStatus};
pub use rescue::{OUT_OF_RETRIES, Rescue, Rescued, rescue};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    pub n: i64,
    pub started_at: String,
    /// Null while it runs.
    #[schema(required = true)]
    pub finished_at: Option<String>,
    #[schema(required = true)]
    pub error: Option<String>,
}

/// A parse job as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    pub document_id: String,
    pub status: JobStatus,
    pub retry_count: i64,
    pub max_retries: i64,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub run_after: String,
    pub attempts: Vec<Attempt>,
    pub created_at: String,
    pub updated_at: String,
}

/// A job a worker holds: what it needs to run it and to fence its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub job_id: String,
    pub document_id: String,
    pub user_id: String,
    /// The fencing token of this attempt (also its number).
    pub attempt: i64,
    /// When it was claimed (ms since the epoch), for the attempt's duration.
    pub claimed_at: i64,
}

/// What a job has used up, for deciding how a failed attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub retry_count: i64,
    pub max_retries: i64,
    pub crash_count: i64,
}

/// How an attempt ends (decided by `worker::policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Succeeded,
    /// Back to the queue: the attempt failed with `error`; `retry_count`
    /// becomes `retry`, and `crashed` counts towards the crash loop.
    Retry {
        error: String,
        retry: i64,
        crashed: bool,
        run_after: i64,
    },
    /// Back to the queue without using up a retry (disk full).
    Wait {
        error: String,
        run_after: i64,
    },
    /// For good: `attempt_error` closes the attempt, `error` is the job's.
    Fail {
        attempt_error: String,
        error: String,
        crashed: bool,
    },
}

const COLUMNS: &str =
    "id, document_id, status, retry_count, max_retries, last_error, run_after, created_at, updated_at";

fn job(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: row.get(0)?,
        document_id: row.get(1)?,
        status: row.get(2)?,
        retry_count: row.get(3)?,
        max_retries: row.get(4)?,
        last_error: row.get(5)?,
        run_after: format_ms(row.get(6)?),
        attempts: Vec::new(),
        created_at: format_ms(row.get(7)?),
        updated_at: format_ms(row.get(8)?),
    })
}

/// An attempt from `n, started_at, finished_at, error` at column `first`.
fn attempt(row: &Row<'_>, first: usize) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        n: row.get(first)?,
        started_at: format_ms(row.get(first + 1)?),
        finished_at: row.get::<_, Option<i64>>(first + 2)?.map(format_ms),
        error: row.get(first + 3)?,
    })
}

fn with_attempts(conn: &Connection, mut job: Job) -> Result<Job> {
    job.attempts = conn
        .prepare_cached(
            "SELECT n, started_at, finished_at, error FROM job_attempts WHERE job_id = ?1 ORDER BY n",
        )?
        .query_map([&job.id], |r| attempt(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(job)
}

/// The job as stored now, with its attempts.
pub fn get(conn: &Connection, id: &str) -> Result<Job> {
    let job = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job)?;
    with_attempts(conn, job)
}

/// Events about a job are grouped under its document, so deleting the
/// document rewrites them too.
pub fn subject(job: &Job) -> Subject<'_> {
    Subject {
        id: &job.id,
        scope: Some(&job.document_id),
    }
}

/// The `job.status_updated` event of `job` (for bulk changes).
pub fn status_event<'a>(user_id: &'a str, job: &'a Job) -> Result<NewEvent<'a>> {
    NewEvent::new(user_id, EventType::JobStatusUpdated, subject(job), job)
}

fn emit(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<Job> {
    let job = get(tx, id)?;
    tx.emit(user_id, EventType::JobStatusUpdated, subject(&job), &job, now)?;
    Ok(job)
}

/// Inserts a queued job for the document, with its event.
#[instrument(skip_all)]
pub fn enqueue(tx: &mut Tx<'_>, user_id: &str, document_id: &str, max_retries: u32, now: i64) -> Result<Job> {
    let id = super::new_id();
    tx.prepare_cached(
        "INSERT INTO jobs (id, document_id, user_id, status, max_retries, run_after, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5, ?5)",
    )?
    .execute(params![id, document_id, user_id, max_retries, now])?;
    emit(tx, user_id, &id, now)
}

/// A document's jobs, newest first (the caller checks the document is the
/// user's).
#[instrument(skip_all)]
pub fn for_document(conn: &Connection, document_id: &str) -> Result<Vec<Job>> {
    let jobs = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE document_id = ?1 ORDER BY created_at DESC, id DESC"
        ))?
        .query_map([document_id], job)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    jobs.into_iter().map(|j| with_attempts(conn, j)).collect()
}

/// Whether the document has a job queued or running.
pub fn busy(conn: &Connection, document_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE document_id = ?1 AND status IN ('queued', 'running'))",
        )?
        .query_row([document_id], |r| r.get(0))?)
}

/// Claims the queued job that is due first: marks it running with a lease,
/// bumps its fencing token and opens an attempt, with its event.
#[instrument(skip_all)]
pub fn claim(tx: &mut Tx<'_>, now: i64, lease_ms: i64) -> Result<Option<Claimed>> {
    let claimed = tx
        .prepare_cached(
            "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_until = ?2, updated_at = ?1
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= ?1
                         ORDER BY run_after, id LIMIT 1)
             RETURNING id, document_id, user_id, attempt",
        )?
        .query_row(params![now, now + lease_ms], |r| {
            Ok(Claimed {
                job_id: r.get(0)?,
                document_id: r.get(1)?,
                user_id: r.get(2)?,
                attempt: r.get(3)?,
                claimed_at: now,
            })
        })
        .optional()?;
    let Some(claimed) = claimed else {
        return Ok(None);
    };
    tx.prepare_cached("INSERT INTO job_attempts (job_id, n, started_at) VALUES (?1, ?2, ?3)")?
        .execute(params![claimed.job_id, claimed.attempt, now])?;
    emit(tx, &claimed.user_id, &claimed.job_id, now)?;
    Ok(Some(claimed))
}

/// When the next queued job becomes due, if any.
pub fn next_due(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(run_after) FROM jobs WHERE status = 'queued'")?
        .query_row([], |r| r.get(0))?)
}

/// Jobs waiting and running now, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub queued: i64,
    pub running: i64,
    /// The earliest `run_after` among queued jobs that are due at `now`.
    pub oldest_due: Option<i64>,
}

/// Counts queued and running jobs and finds the longest-due one; each part
/// reads only its partial index, so the cost follows the queue, not the
/// history of jobs.
#[instrument(skip_all)]
pub fn queue(conn: &Connection, now: i64) -> Result<Queue> {
    Ok(conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM jobs WHERE status = 'queued'),
                    (SELECT count(*) FROM jobs WHERE status = 'running'),
                    (SELECT min(run_after) FROM jobs WHERE status = 'queued' AND run_after <= ?1)",
        )?
        .query_row([now], |r| {
            Ok(Queue {
                queued: r.get(0)?,
                running: r.get(1)?,
                oldest_due: r.get(2)?,
            })
        })?)
}

/// What the attempt's job has used up; `None` when the attempt lost the
/// job (its lease expired and it was taken back, or it was deleted).
pub fn counts(conn: &Connection, claimed: &Claimed) -> Result<Option<Counts>> {
    Ok(conn
        .prepare_cached(
            "SELECT retry_count, max_retries, crash_count FROM jobs
             WHERE id = ?1 AND status = 'running' AND attempt = ?2",
        )?
        .query_row(params![claimed.job_id, claimed.attempt], |r| {
            Ok(Counts {
                retry_count: r.get(0)?,
                max_retries: r.get(1)?,
                crash_count: r.get(2)?,
            })
        })
        .optional()?)
}

/// Whether this attempt still holds the job.
pub fn holds(conn: &Connection, claimed: &Claimed) -> Result<bool> {
    Ok(counts(conn, claimed)?.is_some())
}

/// Extends the lease; `false` when the attempt lost the job.
#[instrument(skip_all)]
pub fn renew(conn: &Connection, claimed: &Claimed, lease_until: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND status = 'running' AND attempt = ?2",
        params![claimed.job_id, claimed.attempt, lease_until],
    )? == 1)
}

/// Closes the attempt and moves the job as `end` says, with the job's
/// event; fenced like every write of an attempt: `Conflict` (and nothing
/// changes) when the attempt no longer holds the job.
#[instrument(skip_all)]
pub fn end_attempt(tx: &mut Tx<'_>, claimed: &Claimed, end: &End, now: i64) -> Result<Job> {
    if !holds(tx, claimed)? {
        return Err(super::Error::Conflict("the attempt no longer holds its job"));
    }
    let attempt_error = match end {
        End::Succeeded => None,
        End::Retry { error, .. } | End::Wait { error, .. } => Some(error.as_str()),
        End::Fail { attempt_error, .. } => Some(attempt_error.as_str()),
    };
    tx.prepare_cached("UPDATE job_attempts SET finished_at = ?3, error = ?4 WHERE job_id = ?1 AND n = ?2")?
        .execute(params![claimed.job_id, claimed.attempt, now, attempt_error])?;
    let id = &claimed.job_id;
    match end {
        End::Succeeded => tx.execute(
            "UPDATE jobs SET status = 'succeeded', lease_until = NULL, last_error = NULL, updated_at = ?2
             WHERE id = ?1",
            params![id, now],
        )?,
        End::Retry {
            error,
            retry,
            crashed,
            run_after,
        } => tx.execute(
            "UPDATE jobs SET status = 'queued', retry_count = ?2, crash_count = crash_count + ?3,
             last_error = ?4, run_after = ?5, lease_until = NULL, updated_at = ?6 WHERE id = ?1",
            params![id, retry, i64::from(*crashed), error, run_after, now],
        )?,
        End::Wait { error, run_after } => tx.execute(
            "UPDATE jobs SET status = 'queued', last_error = ?2, run_after = ?3, lease_until = NULL,
             updated_at = ?4 WHERE id = ?1",
            params![id, error, run_after, now],
        )?,
        End::Fail { error, crashed, .. } => tx.execute(
            "UPDATE jobs SET status = 'failed', crash_count = crash_count + ?2, last_error = ?3,
             lease_until = NULL, updated_at = ?4 WHERE id = ?1",
            params![id, i64::from(*crashed), error, now],
        )?,
    };
    emit(tx, &claimed.user_id, id, now)
}
