//! `sweep`: start `ragd serve` on a data dir that a crashed server left
//! with J parse jobs `running` (each with an open attempt, its document
//! `parsing`) and R replies `pending`, and measure the time until the
//! server is ready (its start-up sweep runs before it listens) and check
//! that every one was healed: attempts closed `interrupted`, jobs requeued,
//! replies `error`/"interrupted", each with its event.
//!
//! The data dir is migrated by `ragd::db::Db::open` (the server's own
//! migrations), then filled with rusqlite in one transaction.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use rusqlite::{Connection, OpenFlags, params};

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
    {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || build(&dir, jobs, replies, users))
            .await
            .map_err(|e| err(format!("build the data dir: {e}")))??;
    }
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
    report.count("events_emitted", counts.events);
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

/// Creates `<dir>/ragd.db` as a crashed server would leave it.
fn build(dir: &Path, jobs: usize, replies: usize, users: usize) -> Result<()> {
    let path = dir.join("ragd.db");
    // Migrate with the server's own code, then close it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("runtime: {e}")))?;
    runtime.block_on(async {
        let publish: ragd::db::Publisher = std::sync::Arc::new(|_| {});
        let db = ragd::db::Db::open(&path, ragd::config::SyncMode::Normal, publish)
            .map_err(|e| err(format!("migrate {}: {e}", path.display())))?;
        db.close().await;
        Ok::<_, crate::Error>(())
    })?;
    let mut conn = Connection::open(&path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    let now = ragd::db::now_ms();
    let started = now - 60_000;
    let user_ids: Vec<String> = (0..users).map(|_| ragd::db::new_id()).collect();
    for (u, id) in user_ids.iter().enumerate() {
        tx.execute(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?2, 'x', ?3)",
            params![id, format!("sweep-{u}@example.com"), now],
        )?;
    }
    {
        let mut document = tx.prepare(
            "INSERT INTO documents (id, user_id, filename, content_type, kind, size_bytes, sha256, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'text/plain', 'txt', 1000, ?4, 'parsing', ?5, ?5)",
        )?;
        let mut job = tx.prepare(
            "INSERT INTO jobs (id, document_id, user_id, status, attempt, retry_count, max_retries, run_after, lease_until, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'running', 1, 0, 3, ?4, ?5, ?4, ?4)",
        )?;
        let mut attempt =
            tx.prepare("INSERT INTO job_attempts (job_id, n, started_at) VALUES (?1, 1, ?2)")?;
        let sha = "0".repeat(64);
        for i in 0..jobs {
            let user = &user_ids[i % users];
            let (doc_id, job_id) = (ragd::db::new_id(), ragd::db::new_id());
            document.execute(params![doc_id, user, format!("stale-{i}.txt"), sha, started])?;
            job.execute(params![job_id, doc_id, user, started, now + 60_000])?;
            attempt.execute(params![job_id, started])?;
        }
        let mut conversation = tx.prepare(
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at) VALUES (?1, ?2, 'stale', ?3, ?3)",
        )?;
        let mut message = tx.prepare(
            "INSERT INTO messages (id, conversation_id, user_id, role, content, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )?;
        let conversations: Vec<String> = user_ids
            .iter()
            .map(|user| {
                let id = ragd::db::new_id();
                conversation.execute(params![id, user, started]).map(|_| id)
            })
            .collect::<rusqlite::Result<_>>()?;
        for i in 0..replies {
            let (user, conv) = (&user_ids[i % users], &conversations[i % users]);
            let at = started + i as i64;
            message.execute(params![
                ragd::db::new_id(),
                conv,
                user,
                "user",
                "a question",
                "done",
                at
            ])?;
            message.execute(params![
                ragd::db::new_id(),
                conv,
                user,
                "assistant",
                "",
                "pending",
                at
            ])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
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
