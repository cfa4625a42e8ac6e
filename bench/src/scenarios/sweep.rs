//! `sweep`: start `ragd serve` on a data dir that a crashed server left
//! with J parse jobs `running` (each with an open attempt, its document
//! `parsing`) and R replies `pending`, and measure the time until the
//! server is ready (its start-up sweep runs before it listens) and check
//! that every one was healed: attempts closed `interrupted`, jobs requeued,
//! replies `error`/"interrupted", each with its event.
//!
//! The data dir is made with ragd's own code: migrated by `Db::open`, then
//! filled through its storage functions (`documents::insert`,
//! `jobs::enqueue`, `worker::transitions::claim`, `messages::insert_turn`),
//! so it is what a crashed server leaves and follows every migration.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ragd::db::{self, Db, conversations, documents, jobs, messages, users};
use ragd::worker::transitions;
use rusqlite::{Connection, OpenFlags};

use crate::report::Report;
use crate::server::{Spec, Target, temp_dir};
use crate::{Ctx, Result, err};

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// Stale `running` jobs (one document each).
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Stale `pending` replies.
    #[arg(long, default_value_t = 10_000)]
    pub replies: usize,
    /// Users the jobs and replies are spread over.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
}

pub async fn run(ctx: &Ctx, args: &SweepArgs) -> Result<Report> {
    if ctx.common.url.is_some() {
        return Err(err(
            "sweep starts its own server on a prepared data dir: --url does not apply",
        ));
    }
    // For comparison: the start-up time on an empty data dir.
    let empty = Target::start(&ctx.common, ctx.sync, Spec::new(&[])).await?;
    let empty_ready = empty.server.as_ref().map(|s| s.healthy_after).unwrap_or_default();
    empty.stop().await;

    let dir = temp_dir("sweep")?;
    let building = Instant::now();
    let (jobs, replies, users) = (args.jobs, args.replies, args.users.max(1));
    let seeded_events = build(&dir, jobs, replies, users).await?;
    let build_time = building.elapsed();
    crate::progress(format!(
        "built a data dir with {jobs} running jobs and {replies} pending replies"
    ));
    let db_bytes = std::fs::metadata(dir.join("ragd.db"))
        .map(|m| m.len())
        .unwrap_or(0);

    let spec = Spec {
        args: Vec::new(),
        data_dir: Some(dir.clone()),
        start_timeout: Duration::from_secs(ctx.common.timeout),
    };
    let target = Target::start(&ctx.common, ctx.sync, spec).await?;
    let (listening, healthy) = target
        .server
        .as_ref()
        .map(|s| (s.listening_after, s.healthy_after))
        .unwrap_or_default();
    let reading = target.reading();
    let counts = {
        let db = dir.join("ragd.db");
        tokio::task::spawn_blocking(move || count(&db))
            .await
            .map_err(|e| err(format!("count: {e}")))??
    };
    target.stop().await;
    if !ctx.common.keep_data {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(dir.with_extension("log"));
    }

    let mut report = Report::new("sweep", ctx.sync);
    report.param("jobs", jobs);
    report.param("replies", replies);
    report.param("users", users);
    report.metric("build_data_dir_s", build_time.as_secs_f64(), "s");
    report.metric("db_mib", db_bytes as f64 / (1 << 20) as f64, "MiB");
    report.metric("ready_empty_dir_s", empty_ready.as_secs_f64(), "s");
    report.metric("listening_s", listening.as_secs_f64(), "s");
    report.metric("ready_s", healthy.as_secs_f64(), "s");
    report.must_be_zero("attempts_left_open", counts.open_attempts);
    report.must_equal("attempts_interrupted", counts.interrupted_attempts, jobs as u64);
    report.must_equal("jobs_requeued_or_failed", counts.jobs_healed, jobs as u64);
    report.must_be_zero("replies_left_pending", counts.pending_replies);
    report.must_equal("replies_interrupted", counts.interrupted_replies, replies as u64);
    report.count("events_emitted", counts.events.saturating_sub(seeded_events));
    report.metric(
        "server_rss_after_ready_mib",
        reading.rss_kb as f64 / 1024.0,
        "MiB",
    );
    report.metric("server_rss_peak_mib", reading.hwm_kb as f64 / 1024.0, "MiB");
    report.note(
        "ready = spawn to the first /healthz 200 (the server listens only after its start-up sweep); \
         counts read from the database right after ready; the documents have no files, so the requeued \
         jobs fail `missing:` afterwards (not measured)",
    );
    Ok(report)
}

/// Jobs (or turns) written per write while building.
const BUILD_BATCH: usize = 2_000;

/// Creates `<dir>/ragd.db` as a crashed server would leave it; returns how
/// many events it holds (the sweep's own are counted after it).
async fn build(dir: &Path, jobs: usize, replies: usize, users: usize) -> Result<u64> {
    let path = dir.join("ragd.db");
    let publish: db::Publisher = Arc::new(|_| {});
    let db = tokio::task::spawn_blocking(move || Db::open(&path, ragd::config::SyncMode::Normal, publish))
        .await
        .map_err(|e| err(format!("open the data dir: {e}")))?
        .map_err(|e| err(format!("migrate the data dir: {e}")))?;
    let failed = |e: db::Error| err(format!("build the data dir: {e}"));
    let now = db::now_ms();
    let user_ids: Arc<Vec<String>> = Arc::new(
        db.write(move |tx| {
            (0..users)
                .map(|u| {
                    users::create(tx, &format!("sweep-{u}@example.com"), "x", now)?
                        .map(|account| account.user.id)
                        .ok_or(db::Error::Other("a sweep user exists already".into()))
                })
                .collect()
        })
        .await
        .map_err(failed)?,
    );
    // Each job's document, the job, then its claim: running with an open
    // attempt, its document parsing, as the dead worker left them.
    for start in (0..jobs).step_by(BUILD_BATCH) {
        let (n, ids) = ((jobs - start).min(BUILD_BATCH), Arc::clone(&user_ids));
        db.write(move |tx| {
            // Nobody listens to a data dir being built.
            tx.store_only();
            for i in start..start + n {
                let user = &ids[i % ids.len()];
                let doc = documents::NewDocument {
                    id: db::new_id(),
                    user_id: user.clone(),
                    filename: format!("stale-{i}.txt"),
                    content_type: "text/plain".into(),
                    kind: "txt".into(),
                    size_bytes: 1000,
                    sha256: "0".repeat(64),
                };
                documents::insert(tx, &doc, now)?;
                jobs::enqueue(tx, user, &doc.id, 3, now)?;
            }
            for _ in 0..n {
                transitions::claim(tx, now, 60_000)?;
            }
            Ok(())
        })
        .await
        .map_err(failed)?;
    }
    // One conversation per user; each turn a question and its pending reply.
    let ids = Arc::clone(&user_ids);
    let conversation_ids: Arc<Vec<String>> = Arc::new(
        db.write(move |tx| {
            ids.iter()
                .map(|user| conversations::create(tx, user, "stale", now).map(|c| c.id))
                .collect()
        })
        .await
        .map_err(failed)?,
    );
    for start in (0..replies).step_by(BUILD_BATCH) {
        let n = (replies - start).min(BUILD_BATCH);
        let (ids, conversations) = (Arc::clone(&user_ids), Arc::clone(&conversation_ids));
        db.write(move |tx| {
            tx.store_only();
            for i in start..start + n {
                let at = i % ids.len();
                messages::insert_turn(tx, &ids[at], &conversations[at], "a question", now)?;
            }
            Ok(())
        })
        .await
        .map_err(failed)?;
    }
    let events: i64 = db
        .read(|conn| Ok(conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?))
        .await
        .map_err(failed)?;
    db.checkpoint().await;
    db.close().await;
    Ok(u64::try_from(events).unwrap_or(0))
}

struct Counts {
    open_attempts: u64,
    interrupted_attempts: u64,
    jobs_healed: u64,
    pending_replies: u64,
    interrupted_replies: u64,
    events: u64,
}

/// Reads the healed state (read-only, beside the running server).
fn count(path: &Path) -> Result<Counts> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let one = |sql: &str| -> Result<u64> {
        let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    // Read in one transaction: a consistent snapshot while workers run.
    conn.execute_batch("BEGIN")?;
    let counts = Counts {
        open_attempts: one("SELECT count(*) FROM job_attempts WHERE n = 1 AND finished_at IS NULL")?,
        interrupted_attempts: one("SELECT count(*) FROM job_attempts WHERE n = 1 AND error = 'interrupted'")?,
        // Requeued (retry_count 1) or since picked up again by a worker
        // (attempt 2 and later): no job is still held by the dead process.
        jobs_healed: one("SELECT count(*) FROM jobs WHERE retry_count >= 1")?,
        pending_replies: one(
            "SELECT count(*) FROM messages WHERE status IN ('pending', 'streaming') AND role = 'assistant'",
        )?,
        interrupted_replies: one(
            "SELECT count(*) FROM messages WHERE status = 'error' AND error = 'interrupted'",
        )?,
        events: one("SELECT count(*) FROM events")?,
    };
    conn.execute_batch("COMMIT")?;
    Ok(counts)
}
