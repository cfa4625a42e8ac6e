//! Parse jobs: enqueue, claim with a lease and a fencing `attempt` token,
//! renew, and end an attempt. Every write of an attempt is fenced by
//! `WHERE id = ? AND status = 'running' AND attempt = ?`, and every change
//! commits with its events.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

use super::documents::{self, emit_status};
use super::{Result, Tx, format_ms};

pub const STATUS_UPDATED: &str = "job.status_updated";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    pub n: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Job {
    pub id: String,
    pub document_id: String,
    pub status: String,
    pub retry_count: i64,
    pub max_retries: i64,
    pub last_error: Option<String>,
    pub run_after: String,
    pub attempts: Vec<Attempt>,
    pub created_at: String,
    pub updated_at: String,
}

/// A job a worker holds: what it needs to run it and to fence its writes.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job_id: String,
    pub document_id: String,
    pub user_id: String,
    pub kind: String,
    /// The fencing token of this attempt (also its number).
    pub attempt: i64,
}

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// May work later: retried with backoff while retries remain.
    Transient(String),
    /// Can never work (corrupt, encrypted, no text, too large): fails now.
    Permanent(String),
    /// The parser process died or ran out of time: retried once, then the
    /// job fails as `crash_loop`.
    Crash(String),
    /// No space left: the job waits without using up an attempt.
    DiskFull(String),
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

fn with_attempts(conn: &Connection, mut job: Job) -> Result<Job> {
    job.attempts = conn
        .prepare_cached(
            "SELECT n, started_at, finished_at, error FROM job_attempts WHERE job_id = ?1 ORDER BY n",
        )?
        .query_map([&job.id], |r| {
            Ok(Attempt {
                n: r.get(0)?,
                started_at: format_ms(r.get(1)?),
                finished_at: r.get::<_, Option<i64>>(2)?.map(format_ms),
                error: r.get(3)?,
            })
        })?
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

fn emit_job(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<Job> {
    let job = get(tx, id)?;
    let subject = super::events::Subject {
        id,
        conversation_id: Some(&job.document_id),
    };
    tx.emit(user_id, STATUS_UPDATED, subject, &job, now)?;
    Ok(job)
}

/// Inserts a queued job for the document, with its event.
pub fn enqueue(tx: &mut Tx<'_>, user_id: &str, document_id: &str, max_retries: u32, now: i64) -> Result<Job> {
    let id = super::new_id();
    tx.prepare_cached(
        "INSERT INTO jobs (id, document_id, user_id, status, max_retries, run_after, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5, ?5)",
    )?
    .execute(params![id, document_id, user_id, max_retries, now])?;
    emit_job(tx, user_id, &id, now)
}

/// A document's jobs, newest first (owner-scoped).
#[instrument(skip_all)]
pub fn for_document(conn: &Connection, user_id: &str, document_id: &str) -> Result<Vec<Job>> {
    documents::get(conn, user_id, document_id)?;
    let jobs = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE document_id = ?1 ORDER BY created_at DESC, id DESC"
        ))?
        .query_map([document_id], job)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    jobs.into_iter().map(|j| with_attempts(conn, j)).collect()
}

/// Claims the queued job that is due first: marks it running with a lease,
/// bumps its fencing token, opens an attempt, and sets the document
/// `parsing`, all with events.
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
                kind: String::new(),
            })
        })
        .optional()?;
    let Some(mut claimed) = claimed else {
        return Ok(None);
    };
    claimed.kind = documents::kind(tx, &claimed.user_id, &claimed.document_id)?;
    tx.prepare_cached("INSERT INTO job_attempts (job_id, n, started_at) VALUES (?1, ?2, ?3)")?
        .execute(params![claimed.job_id, claimed.attempt, now])?;
    set_document(tx, &claimed.user_id, &claimed.document_id, "parsing", None, now)?;
    emit_job(tx, &claimed.user_id, &claimed.job_id, now)?;
    Ok(Some(claimed))
}

/// When the next queued job becomes due, if any.
pub fn next_due(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(run_after) FROM jobs WHERE status = 'queued'")?
        .query_row([], |r| r.get(0))?)
}

/// Whether this attempt still holds the job.
fn holds(conn: &Connection, claimed: &Claimed) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND status = 'running' AND attempt = ?2)",
        )?
        .query_row(params![claimed.job_id, claimed.attempt], |r| r.get(0))?)
}

/// Extends the lease; `false` when the attempt lost the job.
#[instrument(skip_all)]
pub fn renew(conn: &Connection, claimed: &Claimed, lease_until: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND status = 'running' AND attempt = ?2",
        params![claimed.job_id, claimed.attempt, lease_until],
    )? == 1)
}

/// Marks the document `ingesting` (fenced); `false` when the attempt lost
/// the job.
#[instrument(skip_all)]
pub fn start_ingesting(tx: &mut Tx<'_>, claimed: &Claimed, now: i64) -> Result<bool> {
    if !holds(tx, claimed)? {
        return Ok(false);
    }
    set_document(tx, &claimed.user_id, &claimed.document_id, "ingesting", None, now)?;
    Ok(true)
}

/// One chunk of extracted text.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChunkText {
    pub text: String,
    /// Character offsets in the extracted text.
    pub start: i64,
    pub end: i64,
}

/// Swaps in the new chunk set in one transaction, marks the document
/// `ready` and the job `succeeded` (fenced); `false` when the attempt lost
/// the job (then nothing changes).
#[instrument(skip_all)]
pub fn succeed(tx: &mut Tx<'_>, claimed: &Claimed, chunks: &[ChunkText], now: i64) -> Result<bool> {
    if !holds(tx, claimed)? {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM chunks WHERE document_id = ?1",
        [&claimed.document_id],
    )?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (ordinal, chunk) in chunks.iter().enumerate() {
            let ordinal = i64::try_from(ordinal).unwrap_or(i64::MAX);
            insert.execute(params![
                claimed.document_id,
                claimed.user_id,
                ordinal,
                chunk.start,
                chunk.end,
                chunk.text
            ])?;
        }
    }
    let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
    tx.execute(
        "UPDATE documents SET chunk_count = ?2 WHERE id = ?1",
        params![claimed.document_id, count],
    )?;
    close_attempt(tx, claimed, None, now)?;
    tx.execute(
        "UPDATE jobs SET status = 'succeeded', lease_until = NULL, last_error = NULL, updated_at = ?2 WHERE id = ?1",
        params![claimed.job_id, now],
    )?;
    set_document(tx, &claimed.user_id, &claimed.document_id, "ready", None, now)?;
    emit_job(tx, &claimed.user_id, &claimed.job_id, now)?;
    Ok(true)
}

/// Ends a failed attempt (fenced): retries with backoff, fails the job, or
/// (disk full) waits without using up an attempt. `backoff(n)` is the delay
/// before retry `n`. Returns `false` when the attempt lost the job.
#[instrument(skip_all)]
pub fn fail(
    tx: &mut Tx<'_>,
    claimed: &Claimed,
    failure: &Failure,
    backoff: impl Fn(i64) -> i64,
    disk_full_wait_ms: i64,
    now: i64,
) -> Result<bool> {
    let Some((retry_count, max_retries, crash_count)) = tx
        .prepare_cached(
            "SELECT retry_count, max_retries, crash_count FROM jobs
             WHERE id = ?1 AND status = 'running' AND attempt = ?2",
        )?
        .query_row(params![claimed.job_id, claimed.attempt], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .optional()?
    else {
        return Ok(false);
    };
    let (message, verdict) = match failure {
        Failure::Permanent(m) => (m.clone(), Verdict::Fail(m.clone())),
        Failure::DiskFull(m) => (m.clone(), Verdict::Wait),
        Failure::Crash(m) if crash_count + 1 >= 2 => (m.clone(), Verdict::Fail(format!("crash_loop: {m}"))),
        Failure::Transient(m) | Failure::Crash(m) if retry_count < max_retries => {
            (m.clone(), Verdict::Retry(retry_count + 1))
        }
        Failure::Transient(m) | Failure::Crash(m) => (m.clone(), Verdict::Fail(m.clone())),
    };
    close_attempt(tx, claimed, Some(&message), now)?;
    let crashed = i64::from(matches!(failure, Failure::Crash(_)));
    match verdict {
        Verdict::Retry(n) => {
            tx.execute(
                "UPDATE jobs SET status = 'queued', retry_count = ?2, crash_count = crash_count + ?3,
                 last_error = ?4, run_after = ?5, lease_until = NULL, updated_at = ?6 WHERE id = ?1",
                params![claimed.job_id, n, crashed, message, now + backoff(n), now],
            )?;
            set_document(tx, &claimed.user_id, &claimed.document_id, "queued", None, now)?;
        }
        Verdict::Wait => {
            tx.execute(
                "UPDATE jobs SET status = 'queued', last_error = ?2, run_after = ?3, lease_until = NULL,
                 updated_at = ?4 WHERE id = ?1",
                params![claimed.job_id, message, now + disk_full_wait_ms, now],
            )?;
            set_document(tx, &claimed.user_id, &claimed.document_id, "queued", None, now)?;
        }
        Verdict::Fail(error) => {
            tx.execute(
                "UPDATE jobs SET status = 'failed', crash_count = crash_count + ?2, last_error = ?3,
                 lease_until = NULL, updated_at = ?4 WHERE id = ?1",
                params![claimed.job_id, crashed, error, now],
            )?;
            set_document(
                tx,
                &claimed.user_id,
                &claimed.document_id,
                "failed",
                Some(&error),
                now,
            )?;
        }
    }
    emit_job(tx, &claimed.user_id, &claimed.job_id, now)?;
    Ok(true)
}

enum Verdict {
    Retry(i64),
    Wait,
    Fail(String),
}

fn close_attempt(conn: &Connection, claimed: &Claimed, error: Option<&str>, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE job_attempts SET finished_at = ?3, error = ?4 WHERE job_id = ?1 AND n = ?2")?
        .execute(params![claimed.job_id, claimed.attempt, now, error])?;
    Ok(())
}

fn set_document(
    tx: &mut Tx<'_>,
    user_id: &str,
    id: &str,
    status: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    tx.prepare_cached("UPDATE documents SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, status, error, now])?;
    emit_status(tx, user_id, id, now)?;
    Ok(())
}

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

/// Closes the open attempt of running jobs with "interrupted" and requeues
/// them (`retry_count + 1`, or failed when out of retries), with events.
#[instrument(skip_all)]
pub fn rescue(tx: &mut Tx<'_>, which: Rescue, now: i64) -> Result<usize> {
    let rows: Vec<(Claimed, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, document_id, user_id, attempt, retry_count, max_retries FROM jobs
             WHERE status = 'running' AND (?1 = 0 OR lease_until < ?2)",
        )?
        .query_map(params![i64::from(which == Rescue::Expired), now], |r| {
            Ok((
                Claimed {
                    job_id: r.get(0)?,
                    document_id: r.get(1)?,
                    user_id: r.get(2)?,
                    attempt: r.get(3)?,
                    kind: String::new(),
                },
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (claimed, retry_count, max_retries) in &rows {
        close_attempt(tx, claimed, Some("interrupted"), now)?;
        let cost = i64::from(which != Rescue::Shutdown);
        if retry_count + cost > *max_retries {
            let error = "interrupted: the job was interrupted more often than it may be retried";
            tx.execute(
                "UPDATE jobs SET status = 'failed', last_error = ?2, lease_until = NULL, updated_at = ?3 WHERE id = ?1",
                params![claimed.job_id, error, now],
            )?;
            set_document(
                tx,
                &claimed.user_id,
                &claimed.document_id,
                "failed",
                Some(error),
                now,
            )?;
        } else {
            tx.execute(
                "UPDATE jobs SET status = 'queued', retry_count = retry_count + ?2, last_error = 'interrupted',
                 run_after = ?3, lease_until = NULL, updated_at = ?3 WHERE id = ?1",
                params![claimed.job_id, cost, now],
            )?;
            set_document(tx, &claimed.user_id, &claimed.document_id, "queued", None, now)?;
        }
        emit_job(tx, &claimed.user_id, &claimed.job_id, now)?;
    }
    Ok(rows.len())
}
