//! Storage tests of `jobs`: what a rescue changes (and that it emits
//! nothing itself: the worker's transitions emit, cause first), and that
//! finding the jobs to rescue reads only the running ones.

use rusqlite::Connection;

use super::rescue::{SLICE, TAKEN};
use super::*;
use crate::db::testing::{job_in, migrated as open, user};

/// Runs `rescue` in a transaction as the writer would; returns the count,
/// the slices handed over, and how many events the storage emitted.
fn run_rescue(conn: &Connection, which: Rescue, now: i64) -> (usize, Vec<Vec<Rescued>>, usize) {
    let mut tx = Tx::new(conn);
    conn.execute_batch("BEGIN").expect("begin");
    let mut slices = Vec::new();
    let count = rescue(&mut tx, which, now, |_, slice| {
        slices.push(slice);
        Ok(())
    })
    .expect("rescue");
    conn.execute_batch("COMMIT").expect("commit");
    (count, slices, tx.events.len())
}

#[test]
fn rescue_at_start_up_requeues_or_fails_every_running_job() {
    let (_dir, conn) = open();
    let u = user(&conn);
    let retry = job_in(&conn, &u, "running", 0, 10_000);
    let out_of_retries = job_in(&conn, &u, "running", 3, 10_000);
    let queued = job_in(&conn, &u, "queued", 0, 0);

    let (count, slices, emitted) = run_rescue(&conn, Rescue::All, 5_000);

    assert_eq!(count, 2);
    assert_eq!(emitted, 0, "the storage emits nothing: the caller does");
    let handed: Vec<(&str, bool)> = slices[0].iter().map(|r| (r.job.id.as_str(), r.failed)).collect();
    assert_eq!(handed, [(retry.as_str(), false), (out_of_retries.as_str(), true)]);
    let requeued = get(&conn, &retry).expect("job");
    assert_eq!(requeued.status, JobStatus::Queued);
    assert_eq!(requeued.retry_count, 1);
    assert_eq!(requeued.last_error.as_deref(), Some("interrupted"));
    assert_eq!(requeued.run_after, format_ms(5_000));
    assert_eq!(requeued.attempts[0].finished_at, Some(format_ms(5_000)));
    assert_eq!(requeued.attempts[0].error.as_deref(), Some("interrupted"));
    assert_eq!(
        slices[0][0].job, requeued,
        "handed over as stored, attempts included"
    );
    let failed = get(&conn, &out_of_retries).expect("job");
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.retry_count, 3);
    assert_eq!(failed.last_error.as_deref(), Some(OUT_OF_RETRIES));
    assert_eq!(failed.run_after, format_ms(0));
    assert_eq!(get(&conn, &queued).expect("job").updated_at, format_ms(0));
}

#[test]
fn rescue_while_serving_takes_only_expired_leases_and_at_shutdown_costs_no_retry() {
    let (_dir, conn) = open();
    let u = user(&conn);
    let expired = job_in(&conn, &u, "running", 3, 4_000);
    let held = job_in(&conn, &u, "running", 0, 6_000);

    let (count, _, _) = run_rescue(&conn, Rescue::Expired, 5_000);
    assert_eq!(count, 1);
    assert_eq!(get(&conn, &expired).expect("job").status, JobStatus::Failed);
    assert_eq!(get(&conn, &held).expect("job").status, JobStatus::Running);

    let last_retry = job_in(&conn, &u, "running", 3, 10_000);
    let (count, _, _) = run_rescue(&conn, Rescue::Shutdown, 7_000);
    assert_eq!(count, 2);
    for id in [&held, &last_retry] {
        let job = get(&conn, id).expect("job");
        assert_eq!(job.status, JobStatus::Queued, "{id}");
        assert_eq!(job.retry_count, if *id == held { 0 } else { 3 }, "{id}");
    }
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
        running.push(job_in(&conn, owner, "running", 0, 10_000));
    }
    conn.execute_batch("COMMIT").expect("commit");

    let (count, slices, _) = run_rescue(&conn, Rescue::All, 5_000);

    assert_eq!(count, running.len());
    assert_eq!(slices.len(), 3);
    let handed: Vec<String> = slices.into_iter().flatten().map(|r| r.job.id).collect();
    assert_eq!(handed, running, "each job once, in creation order");
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
