//! `ragd-bench`: the load tool of ragd (docs/BENCHMARKS.md).
//!
//! It starts a fresh `ragd serve` on a temp data dir (the `ragd` binary
//! next to this one, or `--ragd`), or targets a running server with
//! `--url`, drives it over real HTTP and WebSocket connections on
//! 127.0.0.0/8, samples the server's memory and CPU from `/proc`, and
//! prints a table plus one JSON line per scenario run. Every loop is
//! bounded in count and time; the tool stops by itself.
//!
//! Exit status: 0 when every check passed, 3 when a correctness check
//! failed (lost, duplicated or out-of-order events, failed requests,
//! unhealed work), 1 when the run itself could not be done, 2 for bad flags.

mod api;
mod report;
mod scenarios;
mod server;
mod stats;
mod text;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::report::Report;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// A progress line on stderr (stdout holds the table and the JSON line).
pub fn progress(message: impl std::fmt::Display) {
    eprintln!("ragd-bench: {message}");
}

/// An error from a message.
pub fn err(message: impl Into<String>) -> Error {
    message.into().into()
}

/// Load tool for ragd: starts a fresh server (or targets --url) and
/// measures one scenario over real HTTP and WebSocket connections.
#[derive(Parser, Debug)]
#[command(
    name = "ragd-bench",
    version,
    about = "Load tool for ragd: starts a fresh `ragd serve` (or targets --url) and measures one scenario \
             over real HTTP and WebSocket connections on 127.0.0.0/8 (docs/BENCHMARKS.md)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Flags of every scenario.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Common options")]
pub struct Common {
    /// Target a server already running at this loopback URL
    /// (http://127.0.0.1:8080) instead of starting one.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// With --url: the server's pid, to sample its memory and CPU.
    #[arg(long, global = true, value_name = "PID", requires = "url")]
    pub pid: Option<u32>,

    /// The ragd binary to start (default: `ragd` next to this executable,
    /// e.g. target/release/ragd).
    #[arg(long, global = true, value_name = "PATH")]
    pub ragd: Option<PathBuf>,

    /// The server's `--sync` mode; `both` runs the scenario twice.
    #[arg(long, global = true, value_enum, default_value_t = SyncArg::Full)]
    pub sync: SyncArg,

    /// Print only the JSON line of each run (no table).
    #[arg(long, global = true)]
    pub json: bool,

    /// An extra flag for the started server (repeatable), e.g.
    /// `--server-arg=--workers=4`.
    #[arg(long, global = true, value_name = "ARG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,

    /// Keep the temp data dir and server log after the run.
    #[arg(long, global = true)]
    pub keep_data: bool,

    /// Upper bound of a whole scenario run, in seconds.
    #[arg(long, global = true, default_value_t = 900, value_name = "SECS")]
    pub timeout: u64,

    /// Test seam: the client discards one received event frame, so the
    /// loss detector must report exactly one lost event.
    #[arg(long, global = true, hide = true)]
    pub drop_one_frame_for_test: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncArg {
    Full,
    Normal,
    Both,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// C users post chat messages (sync mode) against a corpus of documents.
    Chat(scenarios::chat::ChatArgs),
    /// U users x S sockets each; writes fan out to every socket.
    Fanout(scenarios::fanout::FanoutArgs),
    /// Many idle authenticated sockets: server memory per socket.
    Idle(scenarios::idle::IdleArgs),
    /// Upload documents and wait until all are ready; then search them.
    Ingest(scenarios::ingest::IngestArgs),
    /// Sockets drop and reconnect with `since` while writes continue.
    Reconnect(scenarios::reconnect::ReconnectArgs),
    /// Start on a data dir full of stale running jobs and pending replies.
    Sweep(scenarios::sweep::SweepArgs),
    /// Retrieval quality on a BEIR-layout test collection (SciFact).
    Retrieval(scenarios::retrieval::RetrievalArgs),
}

/// What a scenario run gets.
pub struct Ctx {
    pub common: Common,
    /// `full` or `normal`.
    pub sync: &'static str,
    /// Distinguishes accounts of this run (for --url targets).
    pub run_id: String,
    pub deadline: tokio::time::Instant,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let nofile = raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ragd-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let modes: &[&'static str] = match cli.common.sync {
        SyncArg::Full => &["full"],
        SyncArg::Normal => &["normal"],
        SyncArg::Both => &["full", "normal"],
    };
    let mut status = ExitCode::SUCCESS;
    for &sync in modes {
        let ctx = Ctx {
            common: cli.common.clone(),
            sync,
            run_id: run_id(),
            deadline: tokio::time::Instant::now() + Duration::from_secs(cli.common.timeout),
        };
        let load_before = loadavg();
        let result = runtime.block_on(async {
            let limit = Duration::from_secs(cli.common.timeout + 30);
            match tokio::time::timeout(limit, run(&cli.scenario, &ctx)).await {
                Ok(result) => result,
                Err(_) => Err(err(format!("the run did not finish within {limit:?}"))),
            }
        });
        match result {
            Ok(report) => {
                let context = json!({
                    "machine": machine(),
                    "commit": commit(),
                    "load_before": load_before,
                    "load_after": loadavg(),
                    "nofile": nofile,
                    "server_flags": cli.common.server_arg,
                    "target": if cli.common.url.is_some() { "url" } else { "spawned" },
                });
                if !cli.common.json {
                    print!("{}", report.table());
                    println!(
                        "  load: {} -> {}",
                        load_before.as_str().unwrap_or("?"),
                        loadavg().as_str().unwrap_or("?")
                    );
                }
                println!("{}", report.to_json(&context));
                if !report.violations.is_empty() {
                    status = ExitCode::from(3);
                }
            }
            Err(e) => {
                eprintln!("ragd-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Sockets and tasks of the scenario are dropped with the runtime; don't
    // wait for stragglers.
    runtime.shutdown_timeout(Duration::from_secs(2));
    status
}

async fn run(scenario: &Scenario, ctx: &Ctx) -> Result<Report> {
    match scenario {
        Scenario::Chat(args) => Box::pin(scenarios::chat::run(ctx, args)).await,
        Scenario::Fanout(args) => Box::pin(scenarios::fanout::run(ctx, args)).await,
        Scenario::Idle(args) => Box::pin(scenarios::idle::run(ctx, args)).await,
        Scenario::Ingest(args) => Box::pin(scenarios::ingest::run(ctx, args)).await,
        Scenario::Reconnect(args) => Box::pin(scenarios::reconnect::run(ctx, args)).await,
        Scenario::Sweep(args) => Box::pin(scenarios::sweep::run(ctx, args)).await,
        Scenario::Retrieval(args) => Box::pin(scenarios::retrieval::run(ctx, args)).await,
    }
}

/// Raises RLIMIT_NOFILE for this process (and so for the server it
/// starts, which inherits it): the soft limit to the hard one, and the hard
/// one too when the process may (root), to fit tens of thousands of sockets
/// on both ends.
fn raise_nofile_limit() -> Value {
    use rlimit::Resource;
    const WANTED: u64 = 1 << 18;
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return Value::Null;
    };
    let raised_hard = hard < WANTED && Resource::NOFILE.set(WANTED, WANTED).is_ok();
    if !raised_hard {
        let _ = Resource::NOFILE.set(hard, hard);
    }
    let (new_soft, new_hard) = Resource::NOFILE.get().unwrap_or((soft, hard));
    json!({"soft_before": soft, "hard_before": hard, "soft": new_soft, "hard": new_hard})
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos % 0xff_ffff)
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Cores, memory and kernel of this machine.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .ok();
    json!({"cores": cores, "cpu": model, "mem_total_kb": mem_kb, "kernel": kernel})
}

/// `git rev-parse --short HEAD` and whether the tree has changes.
fn commit() -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=normal"]).is_some_and(|s| !s.is_empty());
            json!({"head": head, "dirty": dirty})
        }
        None => Value::Null,
    }
}
