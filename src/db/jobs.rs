//! Parse jobs: enqueue, claim with a lease and a fencing `attempt` token,
//! renew, and end an attempt. Every write of an attempt is fenced by
//! `WHERE id = ? AND status = 'running' AND attempt = ?`, and every change
//! commits with its events.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tracing::instrument;

use super::documents::{self, Document, emit_status};
use super::events::{NewEvent, Subject};
use super::{Error, Result, Tx, format_ms};

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
fn subject(job: &Job) -> Subject<'_> {
    Subject {
        id: &job.id,
        scope: Some(&job.document_id),
    }
}

fn emit_job(tx: &mut Tx<'_>, user_id: &str, id: &str, now: i64) -> Result<Job> {
    let job = get(tx, id)?;
    tx.emit(user_id, STATUS_UPDATED, subject(&job), &job, now)?;
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
    set_document(tx, &claimed.document_id, "parsing", None, now)?;
    emit_job_then_document(tx, &claimed, now)?;
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
    set_document(tx, &claimed.document_id, "ingesting", None, now)?;
    emit_status(tx, &claimed.user_id, &claimed.document_id, now)?;
    Ok(true)
}

/// One chunk of extracted text.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChunkText {
    pub text: String,
    /// Character offsets in the extracted text.
    pub start: i64,
    pub end: i64,
    /// Indexed with the text but not part of it: the document's title
    /// (`ingest::chunk`), or empty.
    #[serde(default)]
    pub context: String,
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
            "INSERT INTO chunks (document_id, user_id, ordinal, start_char, end_char, text, context)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (ordinal, chunk) in chunks.iter().enumerate() {
            let ordinal = i64::try_from(ordinal).unwrap_or(i64::MAX);
            insert.execute(params![
                claimed.document_id,
                claimed.user_id,
                ordinal,
                chunk.start,
                chunk.end,
                chunk.text,
                chunk.context
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
    set_document(tx, &claimed.document_id, "ready", None, now)?;
    emit_job_then_document(tx, claimed, now)?;
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
            set_document(tx, &claimed.document_id, "queued", None, now)?;
        }
        Verdict::Wait => {
            tx.execute(
                "UPDATE jobs SET status = 'queued', last_error = ?2, run_after = ?3, lease_until = NULL,
                 updated_at = ?4 WHERE id = ?1",
                params![claimed.job_id, message, now + disk_full_wait_ms, now],
            )?;
            set_document(tx, &claimed.document_id, "queued", None, now)?;
        }
        Verdict::Fail(error) => {
            tx.execute(
                "UPDATE jobs SET status = 'failed', crash_count = crash_count + ?2, last_error = ?3,
                 lease_until = NULL, updated_at = ?4 WHERE id = ?1",
                params![claimed.job_id, crashed, error, now],
            )?;
            set_document(tx, &claimed.document_id, "failed", Some(&error), now)?;
        }
    }
    emit_job_then_document(tx, claimed, now)?;
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

/// Moves the document of a job; its event is the caller's to emit, after
/// the job's (see `emit_job_then_document`).
fn set_document(conn: &Connection, id: &str, status: &str, error: Option<&str>, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE documents SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, status, error, now])?;
    Ok(())
}

/// The events of a change to a job and the document status it causes,
/// cause first (API.md): a client applying events in id order never sees
/// the document `ready` (or `failed`, `queued`, `parsing`) while the job it
/// holds still says otherwise.
fn emit_job_then_document(tx: &mut Tx<'_>, claimed: &Claimed, now: i64) -> Result<()> {
    emit_job(tx, &claimed.user_id, &claimed.job_id, now)?;
    emit_status(tx, &claimed.user_id, &claimed.document_id, now)?;
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

/// The running jobs a rescue takes: all, or with `:expired_only` those whose
/// lease ended before `:now`. Through the partial index of running jobs;
/// an `ORDER BY rowid` would make SQLite scan the whole table instead.
const TAKEN: &str = "SELECT rowid FROM jobs
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
const SLICE: usize = 1000;

/// The error of a job (and its document) interrupted once too often.
const OUT_OF_RETRIES: &str = "interrupted: the job was interrupted more often than it may be retried";

/// Closes the open attempt of running jobs with "interrupted" and requeues
/// them (`retry_count + 1`, or failed when out of retries), with events:
/// per job its `job.status_updated`, then its document's
/// `document.status_updated` (cause first), in job (creation) order. Set-based, since the
/// start-up sweep may find a crashed server's whole queue running, and a
/// slice of jobs at a time, so that only one slice's rows and events are
/// held in memory.
#[instrument(skip_all)]
pub fn rescue(tx: &mut Tx<'_>, which: Rescue, now: i64) -> Result<usize> {
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
        rescue_slice(tx, &scope)?;
    }
    Ok(jobs.len())
}

/// `rescue` for the jobs of one slice.
fn rescue_slice(tx: &mut Tx<'_>, scope: &Scope) -> Result<()> {
    // The jobs go last: updating them takes them out of `RESCUED`.
    let mut attempts = close_attempts(tx, scope)?;
    let documents = requeue_documents(tx, scope)?;
    let mut jobs = requeue_jobs(tx, scope)?;
    // RETURNING has no order.
    jobs.sort_unstable_by_key(|(rowid, _, _)| *rowid);
    let mut events = Vec::with_capacity(2 * jobs.len());
    for (_, user_id, job) in &mut jobs {
        job.attempts = attempts.remove(&job.id).unwrap_or_default();
        let doc = documents.get(&job.document_id).ok_or(Error::NotFound)?;
        events.push(NewEvent::new(user_id, STATUS_UPDATED, subject(job), &*job)?);
        events.push(NewEvent::new(
            user_id,
            documents::STATUS_UPDATED,
            documents::subject(&doc.id),
            doc,
        )?);
    }
    tx.emit_all(events, scope.now)
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

/// Moves the rescued jobs' documents to `queued` (or `failed`); returns
/// them by id.
#[instrument(skip_all)]
fn requeue_documents(conn: &Connection, scope: &Scope) -> Result<HashMap<String, Document>> {
    Ok(conn
        .prepare_cached(&format!(
            "WITH {RESCUED}
             UPDATE documents SET status = iif(rescued.failed, 'failed', 'queued'),
                 error = iif(rescued.failed, rescued.error, NULL), updated_at = :now
             FROM rescued WHERE documents.id = rescued.document_id
             RETURNING {}",
            documents::COLUMNS
        ))?
        .query_map(&scope.params()[..], |row| {
            documents::document(row).map(|(doc, _)| (doc.id.clone(), doc))
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// Requeues (or fails) the rescued jobs; returns them (without attempts)
/// with their rowids and users.
#[instrument(skip_all)]
fn requeue_jobs(conn: &Connection, scope: &Scope) -> Result<Vec<(i64, String, Job)>> {
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
            Ok((row.get::<_, i64>(10)?, row.get::<_, String>(9)?, job(row)?))
        })?
        .collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::db::new_id;
    use crate::db::testing::{insert_user, migrated as open};

    fn user(conn: &Connection) -> String {
        let id = new_id();
        insert_user(conn, &id);
        id
    }

    /// A job of `user` in `status` with attempt 1 (open when running) and
    /// its document; returns the job id.
    fn job_in(conn: &Connection, user: &str, status: &str, retry_count: i64, lease_until: i64) -> String {
        let (doc, job) = (new_id(), new_id());
        let doc_status = if status == "running" { "parsing" } else { "queued" };
        conn.execute(
            "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256, status, created_at, updated_at)
             VALUES (?1, ?2, 'a.txt', 'text/plain', 'txt', 1, 'x', ?3, 0, 0)",
            params![doc, user, doc_status],
        )
        .expect("document");
        conn.execute(
            "INSERT INTO jobs (id, document_id, user_id, status, attempt, retry_count, max_retries, run_after, lease_until, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, 3, 0, ?6, 0, 0)",
            params![job, doc, user, status, retry_count, lease_until],
        )
        .expect("job");
        conn.execute(
            "INSERT INTO job_attempts (job_id, n, started_at) VALUES (?1, 1, 0)",
            [&job],
        )
        .expect("attempt");
        job
    }

    /// Runs `rescue` in a transaction; returns the count and the frames.
    fn run_rescue(conn: &Connection, which: Rescue, now: i64) -> (usize, Vec<Value>) {
        let mut tx = Tx::new(conn);
        // In one transaction, as the writer runs it.
        conn.execute_batch("BEGIN").expect("begin");
        let count = rescue(&mut tx, which, now).expect("rescue");
        conn.execute_batch("COMMIT").expect("commit");
        let frames = tx
            .events
            .iter()
            .map(|f| serde_json::from_str(&f.text).expect("frame JSON"))
            .collect();
        (count, frames)
    }

    /// What each rescued job must emit: itself, then its document (cause
    /// first), as stored after the rescue.
    fn expected_events(conn: &Connection, user: &str, jobs: &[&str]) -> Vec<(String, Value)> {
        jobs.iter()
            .flat_map(|id| {
                let job = get(conn, id).expect("job");
                let doc = documents::get(conn, user, &job.document_id).expect("document");
                [
                    (STATUS_UPDATED.to_owned(), json!(job)),
                    (documents::STATUS_UPDATED.to_owned(), json!(doc)),
                ]
            })
            .collect()
    }

    fn kinds_and_data(frames: &[Value]) -> Vec<(String, Value)> {
        frames
            .iter()
            .map(|f| {
                (
                    f["type"].as_str().unwrap_or_default().to_owned(),
                    f["data"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn rescue_at_start_up_requeues_or_fails_every_running_job_with_its_events() {
        let (_dir, conn) = open();
        let u = user(&conn);
        let retry = job_in(&conn, &u, "running", 0, 10_000);
        let out_of_retries = job_in(&conn, &u, "running", 3, 10_000);
        let queued = job_in(&conn, &u, "queued", 0, 0);

        let (count, frames) = run_rescue(&conn, Rescue::All, 5_000);

        assert_eq!(count, 2);
        let requeued = get(&conn, &retry).expect("job");
        assert_eq!(requeued.status, "queued");
        assert_eq!(requeued.retry_count, 1);
        assert_eq!(requeued.last_error.as_deref(), Some("interrupted"));
        assert_eq!(requeued.run_after, format_ms(5_000));
        assert_eq!(requeued.attempts[0].finished_at, Some(format_ms(5_000)));
        assert_eq!(requeued.attempts[0].error.as_deref(), Some("interrupted"));
        let failed = get(&conn, &out_of_retries).expect("job");
        assert_eq!(failed.status, "failed");
        assert_eq!(failed.retry_count, 3);
        assert_eq!(failed.last_error.as_deref(), Some(OUT_OF_RETRIES));
        assert_eq!(failed.run_after, format_ms(0));
        let doc = documents::get(&conn, &u, &failed.document_id).expect("document");
        assert_eq!(
            (doc.status.as_str(), doc.error.as_deref()),
            ("failed", Some(OUT_OF_RETRIES))
        );
        assert_eq!(get(&conn, &queued).expect("job").updated_at, format_ms(0));

        assert_eq!(
            kinds_and_data(&frames),
            expected_events(&conn, &u, &[&retry, &out_of_retries])
        );
        let ids: Vec<i64> = frames.iter().map(|f| f["id"].as_i64().unwrap_or(0)).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(frames.iter().all(|f| f["ts"] == json!(format_ms(5_000))));
    }

    #[test]
    fn rescue_while_serving_takes_only_expired_leases_and_at_shutdown_costs_no_retry() {
        let (_dir, conn) = open();
        let u = user(&conn);
        let expired = job_in(&conn, &u, "running", 3, 4_000);
        let held = job_in(&conn, &u, "running", 0, 6_000);

        let (count, frames) = run_rescue(&conn, Rescue::Expired, 5_000);
        assert_eq!(count, 1);
        assert_eq!(get(&conn, &expired).expect("job").status, "failed");
        assert_eq!(get(&conn, &held).expect("job").status, "running");
        assert_eq!(kinds_and_data(&frames), expected_events(&conn, &u, &[&expired]));

        let last_retry = job_in(&conn, &u, "running", 3, 10_000);
        let (count, frames) = run_rescue(&conn, Rescue::Shutdown, 7_000);
        assert_eq!(count, 2);
        for id in [&held, &last_retry] {
            let job = get(&conn, id).expect("job");
            assert_eq!(job.status, "queued", "{id}");
            assert_eq!(job.retry_count, if *id == held { 0 } else { 3 }, "{id}");
        }
        let mut in_order = [held.as_str(), last_retry.as_str()];
        in_order.sort_unstable();
        assert_eq!(kinds_and_data(&frames), expected_events(&conn, &u, &in_order));
        let ids: Vec<i64> = frames.iter().map(|f| f["id"].as_i64().unwrap_or(0)).collect();
        assert_eq!(ids, [3, 4, 5, 6], "the user's sequence continues without a gap");
    }

    #[test]
    fn a_rescue_larger_than_a_slice_takes_every_job_once_in_creation_order() {
        let (_dir, conn) = open();
        let users = [user(&conn), user(&conn)];
        conn.execute_batch("BEGIN").expect("begin");
        let mut running = Vec::new();
        for n in 0..(2 * SLICE + 500) {
            let owner = &users[n % 2];
            // Jobs that are not running sit between the running ones, inside
            // the slices' rowid ranges, and must be left alone.
            if n % 7 == 0 {
                job_in(&conn, owner, "queued", 0, 0);
            }
            running.push((owner.clone(), job_in(&conn, owner, "running", 0, 10_000)));
        }
        conn.execute_batch("COMMIT").expect("commit");

        let (count, frames) = run_rescue(&conn, Rescue::All, 5_000);

        assert_eq!(count, running.len());
        let left: i64 = conn
            .query_row("SELECT count(*) FROM jobs WHERE status = 'running'", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(left, 0);
        let untouched: i64 = conn
            .query_row(
                "SELECT count(*) FROM jobs WHERE status = 'queued' AND updated_at = 0",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(untouched, (2 * SLICE as i64 + 500 + 6) / 7);
        // Per job, its own event then its document's, in creation order;
        // each user's ids gap-free from 1.
        assert_eq!(frames.len(), 2 * running.len());
        let mut next = [1, 1];
        for ((owner, job), pair) in running.iter().zip(frames.chunks(2)) {
            assert_eq!(pair[0]["type"], json!(STATUS_UPDATED));
            assert_eq!(pair[1]["type"], json!(documents::STATUS_UPDATED));
            assert_eq!(pair[0]["data"]["id"], json!(job));
            assert_eq!(pair[0]["data"]["retry_count"], json!(1));
            let u = usize::from(owner == &users[1]);
            assert_eq!(pair[0]["id"], json!(next[u]), "{job}");
            assert_eq!(pair[1]["id"], json!(next[u] + 1), "{job}");
            next[u] += 2;
        }
    }

    #[test]
    fn a_store_only_write_stores_its_events_and_keeps_no_frames() {
        let (_dir, conn) = open();
        let u = user(&conn);
        job_in(&conn, &u, "running", 0, 10_000);
        let mut tx = Tx::new(&conn);
        tx.store_only();
        assert_eq!(rescue(&mut tx, Rescue::All, 5_000).expect("rescue"), 1);
        assert!(tx.events.is_empty(), "nothing to publish");
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM events WHERE user_id = ?1", [&u], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(stored, 2, "the events are in the log");
    }

    #[test]
    fn finding_the_jobs_to_rescue_reads_only_the_running_ones() {
        // The periodic sweep runs every 15 s on the writer thread, and the
        // jobs table keeps every finished job: it must not be scanned.
        let (_dir, conn) = open();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {TAKEN}"))
            .expect("prepare")
            .query_map(rusqlite::named_params! {":expired_only": true, ":now": 0}, |r| {
                r.get(3)
            })
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert!(plan.iter().all(|step| step.contains("jobs_running")), "{plan:?}");
    }
}
