//! What each step of a parse job writes, each in one transaction, cause
//! first: a job's `job.status_updated` before the `document.status_updated`
//! it causes (docs/API.md "Event order"). Claim; a success in two halves,
//! `stage` (chunks stored beside the live ones) and `finish` (made live,
//! once the index holds them); fail (as `policy` decides); and the rescue
//! of running jobs.

use crate::db::jobs::{self, Claimed, End, OUT_OF_RETRIES, Rescue};
use crate::db::{self, Tx, chunks, documents};
use crate::types::{ChunkText, DocumentStatus};

use super::policy::{self, Failure, Timing};

/// A claimed job and what its parser needs to know.
#[derive(Debug, Clone)]
pub struct Task {
    pub claimed: Claimed,
    /// The parser kind of its document.
    pub kind: String,
}

/// Claims the queued job that is due first: the job `running`, then its
/// document `parsing`.
pub fn claim(tx: &mut Tx<'_>, now: i64, lease_ms: i64) -> db::Result<Option<Task>> {
    let Some(claimed) = jobs::claim(tx, now, lease_ms)? else {
        return Ok(None);
    };
    let (user, doc) = (&claimed.user_id, &claimed.document_id);
    let kind = documents::kind(tx, user, doc)?;
    documents::set_status(tx, user, doc, DocumentStatus::Parsing, None, now)?;
    Ok(Some(Task { claimed, kind }))
}

/// A chunk set written beside the live one, waiting for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub claimed: Claimed,
    pub set: chunks::Set,
    pub count: usize,
}

/// What `stage` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The attempt no longer holds the job: nothing changed.
    Lost,
    /// The document had no chunks: it is `ready` already (`finish` ran).
    Done,
    /// The chunks are stored; once the index has them, `finish`.
    Staged(Staged),
}

/// The first half of a success: the document `ingesting`, its new chunks
/// stored beside its live ones (which searches keep serving), and the
/// lease extended for the wait for the index (`worker::indexer`).
pub fn stage(tx: &mut Tx<'_>, c: &Claimed, new: &[ChunkText], now: i64, lease_ms: i64) -> db::Result<Stage> {
    if !jobs::holds(tx, c)? {
        return Ok(Stage::Lost);
    }
    let (user, doc) = (&c.user_id, &c.document_id);
    documents::set_status(tx, user, doc, DocumentStatus::Ingesting, None, now)?;
    let live = documents::live_chunks(tx, doc)?;
    let Some(set) = chunks::stage(tx, doc, user, live, new)? else {
        finish(tx, c, None, 0, now)?;
        return Ok(Stage::Done);
    };
    jobs::renew(tx, c, now + lease_ms)?;
    Ok(Stage::Staged(Staged {
        claimed: c.clone(),
        set,
        count: new.len(),
    }))
}

/// The second half, once the index holds the staged set: the set made
/// live and the old one deleted, the job `succeeded`, then the document
/// `ready`. `false` (and nothing changes) when the attempt lost the job.
pub fn finish(
    tx: &mut Tx<'_>,
    c: &Claimed,
    set: Option<chunks::Set>,
    count: usize,
    now: i64,
) -> db::Result<bool> {
    if !jobs::holds(tx, c)? {
        return Ok(false);
    }
    chunks::keep_only(tx, &c.document_id, set)?;
    documents::set_live_chunks(tx, &c.document_id, set, count)?;
    jobs::end_attempt(tx, c, &End::Succeeded, now)?;
    documents::set_status(tx, &c.user_id, &c.document_id, DocumentStatus::Ready, None, now)?;
    Ok(true)
}

/// Ends a failed attempt as `policy` decides: the job first (queued again,
/// waiting, or failed), then its document. Returns how it ended (`None`
/// when the attempt lost the job).
pub fn fail<B: Fn(i64) -> i64>(
    tx: &mut Tx<'_>,
    c: &Claimed,
    failure: &Failure,
    timing: &Timing<B>,
) -> db::Result<Option<End>> {
    let Some(counts) = jobs::counts(tx, c)? else {
        return Ok(None);
    };
    let end = policy::decide(failure, counts, timing);
    jobs::end_attempt(tx, c, &end, timing.now)?;
    let (status, error) = match &end {
        End::Fail { error, .. } => (DocumentStatus::Failed, Some(error.as_str())),
        End::Retry { .. } | End::Wait { .. } => (DocumentStatus::Queued, None),
        End::Succeeded => (DocumentStatus::Ready, None),
    };
    documents::set_status(tx, &c.user_id, &c.document_id, status, error, timing.now)?;
    Ok(Some(end))
}

/// Takes back the running jobs `which` names: per job its `queued` (or
/// `failed`, out of retries), then its document's, in job order. Returns
/// how many.
pub fn rescue(tx: &mut Tx<'_>, which: Rescue, now: i64) -> db::Result<usize> {
    jobs::rescue(tx, which, now, |tx, slice| {
        let moves: Vec<(&str, DocumentStatus, Option<&str>)> = slice
            .iter()
            .map(|r| match r.failed {
                true => (
                    r.job.document_id.as_str(),
                    DocumentStatus::Failed,
                    Some(OUT_OF_RETRIES),
                ),
                false => (r.job.document_id.as_str(), DocumentStatus::Queued, None),
            })
            .collect();
        let docs = documents::set_statuses(tx, &moves, now)?;
        let mut events = Vec::with_capacity(2 * slice.len());
        for r in &slice {
            let doc = docs.get(&r.job.document_id).ok_or(db::Error::NotFound)?;
            events.push(jobs::status_event(&r.user_id, &r.job)?);
            events.push(documents::status_event(&r.user_id, doc)?);
        }
        tx.emit_all(events, now)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::db::testing::{frames, frames_by_user, job_in, migrated, tx, user};
    use crate::types::EventType;

    /// Runs a rescue in a transaction; returns the count and the frames.
    fn run_rescue(conn: &rusqlite::Connection, which: Rescue, now: i64) -> (usize, Vec<Value>) {
        let mut tx = tx(conn);
        conn.execute_batch("BEGIN").expect("begin");
        let count = rescue(&mut tx, which, now).expect("rescue");
        conn.execute_batch("COMMIT").expect("commit");
        (count, frames(&tx))
    }

    /// What each rescued job must emit: itself, then its document (cause
    /// first), as stored after the rescue.
    fn expected(conn: &rusqlite::Connection, user: &str, jobs: &[&str]) -> Vec<(String, Value)> {
        jobs.iter()
            .flat_map(|id| {
                let job = jobs::get(conn, id).expect("job");
                let doc = documents::get(conn, user, &job.document_id).expect("document");
                [
                    (EventType::JobStatusUpdated.to_string(), json!(job)),
                    (EventType::DocumentStatusUpdated.to_string(), json!(doc)),
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
    fn a_rescue_emits_each_job_then_its_document_with_gap_free_ids() {
        let (_dir, conn) = migrated();
        let u = user(&conn);
        let retry = job_in(&conn, &u, "running", 0, 10_000);
        let out_of_retries = job_in(&conn, &u, "running", 3, 10_000);

        let (count, frames) = run_rescue(&conn, Rescue::All, 5_000);

        assert_eq!(count, 2);
        assert_eq!(
            kinds_and_data(&frames),
            expected(&conn, &u, &[&retry, &out_of_retries])
        );
        let failed = jobs::get(&conn, &out_of_retries).expect("job");
        let doc = documents::get(&conn, &u, &failed.document_id).expect("document");
        assert_eq!(
            (doc.status, doc.error.as_deref()),
            (DocumentStatus::Failed, Some(OUT_OF_RETRIES))
        );
        let requeued = jobs::get(&conn, &retry).expect("job");
        let doc = documents::get(&conn, &u, &requeued.document_id).expect("document");
        assert_eq!((doc.status, doc.error), (DocumentStatus::Queued, None));
        let ids: Vec<i64> = frames.iter().map(|f| f["id"].as_i64().unwrap_or(0)).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(frames.iter().all(|f| f["ts"] == json!(db::format_ms(5_000))));
    }

    #[test]
    fn two_users_rescued_together_each_keep_their_own_sequence() {
        let (_dir, conn) = migrated();
        let (a, b) = (user(&conn), user(&conn));
        for owner in [&a, &b, &a] {
            job_in(&conn, owner, "running", 0, 10_000);
        }
        let mut tx = tx(&conn);
        conn.execute_batch("BEGIN").expect("begin");
        rescue(&mut tx, Rescue::Shutdown, 5_000).expect("rescue");
        conn.execute_batch("COMMIT").expect("commit");
        let ids_of = |who: &str| -> Vec<i64> {
            frames_by_user(&tx)
                .into_iter()
                .filter(|(user, _)| user == who)
                .map(|(_, f)| f["id"].as_i64().unwrap_or(0))
                .collect()
        };
        assert_eq!(ids_of(&a), [1, 2, 3, 4]);
        assert_eq!(ids_of(&b), [1, 2]);
    }

    #[test]
    fn expired_and_shutdown_rescues_emit_the_same_pairs() {
        let (_dir, conn) = migrated();
        let u = user(&conn);
        let expired = job_in(&conn, &u, "running", 3, 4_000);
        let held = job_in(&conn, &u, "running", 0, 6_000);
        let (count, frames) = run_rescue(&conn, Rescue::Expired, 5_000);
        assert_eq!(count, 1);
        assert_eq!(kinds_and_data(&frames), expected(&conn, &u, &[&expired]));

        let last_retry = job_in(&conn, &u, "running", 3, 10_000);
        let (count, frames) = run_rescue(&conn, Rescue::Shutdown, 7_000);
        assert_eq!(count, 2);
        let mut in_order = [held.as_str(), last_retry.as_str()];
        in_order.sort_unstable();
        assert_eq!(kinds_and_data(&frames), expected(&conn, &u, &in_order));
        let ids: Vec<i64> = frames.iter().map(|f| f["id"].as_i64().unwrap_or(0)).collect();
        assert_eq!(ids, [3, 4, 5, 6], "the user's sequence continues without a gap");
    }

    #[test]
    fn a_rescue_of_several_slices_emits_each_job_then_its_document_in_order() {
        let (_dir, conn) = migrated();
        let users = [user(&conn), user(&conn)];
        conn.execute_batch("BEGIN").expect("begin");
        let running: Vec<(usize, String)> = (0..2_500)
            .map(|n| (n % 2, job_in(&conn, &users[n % 2], "running", 0, 10_000)))
            .collect();
        conn.execute_batch("COMMIT").expect("commit");
        let mut tx = tx(&conn);
        conn.execute_batch("BEGIN").expect("begin");
        assert_eq!(
            rescue(&mut tx, Rescue::All, 5_000).expect("rescue"),
            running.len()
        );
        conn.execute_batch("COMMIT").expect("commit");
        let frames = frames_by_user(&tx);
        assert_eq!(frames.len(), 2 * running.len());
        let mut next = [1, 1];
        for ((owner, job), pair) in running.iter().zip(frames.chunks(2)) {
            let (user, job_frame) = &pair[0];
            let (_, doc_frame) = &pair[1];
            assert_eq!(user, &users[*owner]);
            assert_eq!(job_frame["type"], json!("job.status_updated"), "{job}");
            assert_eq!(job_frame["data"]["id"], json!(job));
            assert_eq!(doc_frame["type"], json!("document.status_updated"), "{job}");
            assert_eq!(doc_frame["data"]["id"], job_frame["data"]["document_id"]);
            assert_eq!(job_frame["id"], json!(next[*owner]), "{job}");
            assert_eq!(doc_frame["id"], json!(next[*owner] + 1), "{job}");
            next[*owner] += 2;
        }
    }

    #[test]
    fn a_store_only_write_stores_its_events_and_keeps_no_frames() {
        let (_dir, conn) = migrated();
        let u = user(&conn);
        job_in(&conn, &u, "running", 0, 10_000);
        let mut tx = tx(&conn);
        tx.store_only();
        assert_eq!(rescue(&mut tx, Rescue::All, 5_000).expect("rescue"), 1);
        assert!(frames(&tx).is_empty(), "nothing to publish");
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM events WHERE user_id = ?1", [&u], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(stored, 2, "the events are in the log");
    }
}
