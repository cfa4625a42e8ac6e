//! `idle`: open N authenticated sockets (spread over U users and over
//! source addresses 127.0.0.1 ..= 127.0.0.K) and hold them idle; the
//! server's resident memory per socket, the time to open them, and the
//! server's idle memory before any socket.

use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::report::Report;
use crate::server::{Spec, Target};
use crate::stats::{Samples, per_second};
use crate::ws::{self, Frame, Ws};
use crate::{Ctx, Result, err};

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Sockets to open.
    #[arg(long, default_value_t = 20_000)]
    pub sockets: usize,
    /// Users the sockets belong to (the server's --max-sockets-per-user
    /// is raised to fit).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Spread the sockets over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    pub sources: usize,
    /// Connects in flight while opening.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds to wait after opening before reading the server's memory.
    #[arg(long, default_value_t = 2)]
    pub settle_s: u64,
    /// Seconds to hold the sockets open (all must stay open).
    #[arg(long, default_value_t = 5)]
    pub hold_s: u64,
}

pub async fn run(ctx: &Ctx, args: &IdleArgs) -> Result<Report> {
    let (n, users) = (args.sockets.max(1), args.users.max(1));
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    let needed = n as u64 + 200;
    if needed > soft {
        return Err(err(format!(
            "{n} sockets need about {needed} open files in this process and in the server; \
             RLIMIT_NOFILE is {soft} here (the hard limit could not be raised): use --sockets {}",
            soft.saturating_sub(200)
        )));
    }
    let per_user = n.div_ceil(users);
    // The idle sockets plus one warm-up socket per user.
    let limit = (per_user + 1).max(16);
    let server_args = vec!["--max-sockets-per-user".to_owned(), limit.to_string()];
    let target = Target::start(&ctx.common, ctx.sync, Spec::new(&server_args)).await?;
    // Idle memory: a fresh server that has served nothing but /healthz.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = target.reading();
    let api = Api::new(&target.base)?;
    let accounts = api.register_many(&ctx.run_id, users).await?;
    // One socket per user first, so per-user state (the hub entry) is not
    // counted as per-socket memory.
    let mut warm = Vec::new();
    for account in &accounts {
        warm.push(
            ws::connect(&target.base, &account.token, "", std::net::Ipv4Addr::LOCALHOST)
                .await
                .map_err(|e| err(format!("warm-up socket: {e}")))?,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.reading();

    crate::progress(format!("opening {n} sockets"));
    let stop = CancellationToken::new();
    let phase = target.phase();
    let opening = Instant::now();
    // In two halves, reading the server's memory in between: the increment
    // of the second half cannot be hidden by memory the server had freed
    // before (e.g. after hashing passwords) and reuses for the first.
    let half = n / 2;
    let mut connects = Samples::new();
    let mut failures = Vec::new();
    let mut holders = Vec::with_capacity(n);
    let mut middle = None;
    for range in [0..half, half..n] {
        let opened: Vec<std::result::Result<Ws, String>> = futures_util::stream::iter(range.clone())
            .map(|i| {
                let (base, token) = (target.base.clone(), accounts[i / per_user].token.clone());
                let source = ws::source_address(i, args.sources);
                async move {
                    ws::connect(&base, &token, "", source)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .buffer_unordered(args.connect_concurrency.max(1))
            .collect()
            .await;
        for result in opened {
            match result {
                Ok(socket) => {
                    connects.push(socket.connect_time);
                    holders.push(tokio::spawn(hold(socket, stop.clone())));
                }
                Err(e) => failures.push(e),
            }
        }
        if middle.is_none() {
            let paused = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
            middle = Some((target.reading(), holders.len(), paused.elapsed()));
        }
    }
    let (middle, middle_open, paused) = middle.unwrap_or_default();
    let open_time = opening.elapsed() - paused;
    let open_usage = target.end_phase(&phase);
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let after = target.reading();
    crate::progress("all sockets open; holding");
    let hold_phase = target.phase();
    tokio::time::sleep(Duration::from_secs(args.hold_s)).await;
    let hold_usage = target.end_phase(&hold_phase);
    stop.cancel();
    let mut ended = Vec::new();
    for holder in holders {
        if let Some(why) = holder.await.map_err(|e| err(format!("socket task: {e}")))? {
            ended.push(why);
        }
    }
    for socket in warm {
        drop(socket);
    }
    // Give the server a moment to drop the closed sockets.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closed = target.reading();

    let open = connects.len() as u64;
    let per_socket_kib = if open > 0 {
        (after.rss_kb as f64 - before.rss_kb as f64) / open as f64
    } else {
        0.0
    };
    let second_half = open.saturating_sub(middle_open as u64);
    let second_half_kib = if second_half > 0 {
        (after.rss_kb as f64 - middle.rss_kb as f64) / second_half as f64
    } else {
        0.0
    };
    let mut report = Report::new("idle", ctx.sync);
    report.param("sockets", n);
    report.param("users", users);
    report.param("sources", args.sources);
    report.param("connect_concurrency", args.connect_concurrency);
    report.param("hold_s", args.hold_s);
    report.metric("server_rss_fresh_mib", fresh.rss_kb as f64 / 1024.0, "MiB");
    report.must_equal("opened", open, n as u64);
    report.must_be_zero("open_failures", failures.len() as u64);
    report.metric("open_s", open_time.as_secs_f64(), "s");
    report.metric("opens_per_s", per_second(open as f64, open_time), "/s");
    report.latency("connect_to_hello", connects.summary());
    report.metric("server_rss_before_mib", before.rss_kb as f64 / 1024.0, "MiB");
    report.metric("server_rss_open_mib", after.rss_kb as f64 / 1024.0, "MiB");
    report.metric("server_rss_per_socket_kib", per_socket_kib, "KiB");
    report.metric("server_rss_half_mib", middle.rss_kb as f64 / 1024.0, "MiB");
    report.metric("server_rss_per_socket_second_half_kib", second_half_kib, "KiB");
    report.metric("server_rss_after_close_mib", closed.rss_kb as f64 / 1024.0, "MiB");
    report.must_be_zero("closed_while_idle", ended.len() as u64);
    report.usage("server_while_opening", open_usage);
    report.usage("server_while_idle", hold_usage);
    report.json(
        "bench_rss_mib",
        json!(crate::stats::round3(
            crate::server::Reading::of(std::process::id()).rss_kb as f64 / 1024.0
        )),
    );
    if !failures.is_empty() {
        report.json(
            "open_failure_samples",
            json!(failures.iter().take(5).collect::<Vec<_>>()),
        );
    }
    if !ended.is_empty() {
        report.json("closed_samples", json!(ended.iter().take(5).collect::<Vec<_>>()));
    }
    report.note(format!(
        "per socket = (server RSS with the sockets open after {} s - RSS with one socket per user) / sockets; \
         second half = (RSS at N - RSS at N/2) / (N/2); open_s excludes the settle pause at N/2; \
         the server ran with --max-sockets-per-user {}",
        args.settle_s, limit
    ));
    target.stop().await;
    Ok(report)
}

/// Keeps a socket read (pings answered) until `stop`; returns why it
/// ended if the server ended it first.
async fn hold(mut socket: Ws, stop: CancellationToken) -> Option<String> {
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return None,
            frame = socket.next_frame(Duration::from_secs(3600)) => frame,
        };
        match frame {
            None | Some(Frame::Text { .. }) => {}
            Some(Frame::Closed(code)) => return Some(format!("closed by the server with {code:?}")),
            Some(Frame::Ended(why)) => return Some(why),
        }
    }
}
