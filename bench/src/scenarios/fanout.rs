//! `fanout`: U users with S sockets each; every user makes W writes
//! (`POST /api/conversations`: one `conversation.created` event each), and
//! every socket of the user must receive every one of them exactly once, in
//! order. Reports deliveries per second, commit-to-receive latency, and
//! lost / duplicated / out-of-order events (all must be 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::SendTimes;
use crate::api::Api;
use crate::report::Report;
use crate::server::{Spec, Target};
use crate::stats::{Samples, per_second};
use crate::ws::{self, Frame, SeqTracker, Verdict, Ws};
use crate::{Ctx, Result, err};

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Users, each with its own sockets and writes.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Sockets per user (the server's --max-sockets-per-user is raised to fit).
    #[arg(long, default_value_t = 100)]
    pub sockets: usize,
    /// Writes per user; each creates a conversation (one event).
    #[arg(long, default_value_t = 20)]
    pub writes: usize,
    /// Total writes per second; 0: each user writes again as soon as its
    /// previous write is answered (closed loop, all users at once).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long sockets may still wait for frames after the last write was
    /// answered, in ms.
    #[arg(long, default_value_t = 5_000)]
    pub grace_ms: u64,
    /// Spread the sockets over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    pub sources: usize,
    /// Socket connects in flight while opening them.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
}

/// What one socket saw.
struct SocketOut {
    verdict: Verdict,
    /// POST sent -> frame received.
    post_to_recv: Samples,
    /// The event's `ts` (stamped by the server when it prepared the write,
    /// before the commit) -> frame received, by the wall clock.
    ts_to_recv: Samples,
    delivered: u64,
    last_recv: Option<Instant>,
    ended: Option<String>,
}

pub async fn run(ctx: &Ctx, args: &FanoutArgs) -> Result<Report> {
    let (users, per_user, writes) = (args.users.max(1), args.sockets.max(1), args.writes);
    let mut server_args = Vec::new();
    if per_user > 16 {
        server_args.extend(["--max-sockets-per-user".to_owned(), per_user.to_string()]);
    }
    let target = Target::start(&ctx.common, ctx.sync, Spec::new(&server_args)).await?;
    let api = Api::new(&target.base)?;
    let accounts = api.register_many(&ctx.run_id, users).await?;

    // Open every socket before the first write.
    let opening = Instant::now();
    let plan: Vec<(usize, usize)> = (0..users)
        .flat_map(|u| (0..per_user).map(move |s| (u, s)))
        .collect();
    let opened: Vec<std::result::Result<(usize, Ws), String>> =
        futures_util::stream::iter(plan.into_iter().enumerate())
            .map(|(i, (u, _))| {
                let (base, token) = (target.base.clone(), accounts[u].token.clone());
                let source = ws::source_address(i, args.sources);
                async move {
                    ws::connect(&base, &token, "", source)
                        .await
                        .map(|ws| (u, ws))
                        .map_err(|e| e.to_string())
                }
            })
            .buffer_unordered(args.connect_concurrency.max(1))
            .collect()
            .await;
    let open_time = opening.elapsed();
    let mut sockets = Vec::with_capacity(opened.len());
    for result in opened {
        sockets.push(result.map_err(|e| err(format!("open a socket: {e}")))?);
    }
    let connects: Vec<Duration> = sockets.iter().map(|(_, ws)| ws.connect_time).collect();

    let base_instant = Instant::now();
    let send_times: Vec<Arc<SendTimes>> = (0..users).map(|_| SendTimes::new(base_instant, writes)).collect();
    let stop = CancellationToken::new();
    let mut drop_one = ctx.common.drop_one_frame_for_test;
    let mut tasks = Vec::with_capacity(sockets.len());
    for (u, socket) in sockets {
        let times = send_times[u].clone();
        let discard = std::mem::take(&mut drop_one);
        let stop = stop.clone();
        tasks.push(tokio::spawn(receive(socket, writes, times, discard, stop)));
    }

    crate::progress(format!(
        "{} sockets open in {:.1} s; writing",
        users * per_user,
        open_time.as_secs_f64()
    ));
    let phase = target.phase();
    let started = Instant::now();
    let per_user_interval = (args.rate > 0).then(|| Duration::from_secs_f64(users as f64 / args.rate as f64));
    let writers: Vec<_> = accounts
        .iter()
        .enumerate()
        .map(|(u, account)| {
            let (api, token, times) = (api.clone(), account.token.clone(), send_times[u].clone());
            tokio::spawn(async move {
                let mut acks = Samples::new();
                let mut errors = Vec::new();
                for k in 0..writes {
                    if let Some(interval) = per_user_interval {
                        // Users start spread over one interval, then keep pace.
                        let offset = interval.mul_f64(u as f64 / users as f64);
                        tokio::time::sleep_until((started + offset + interval * k as u32).into()).await;
                    }
                    times.mark(k);
                    let sent = Instant::now();
                    match api.create_conversation(&token, &format!("fanout {u}/{k}")).await {
                        Ok(_) => acks.push(sent.elapsed()),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (acks, errors, Instant::now())
            })
        })
        .collect();
    let mut acks = Samples::new();
    let mut errors = Vec::new();
    let mut last_ack = started;
    for writer in writers {
        let (a, e, done) = crate::ws::within(ctx.deadline, "the writes", async {
            writer.await.map_err(|e| err(format!("writer: {e}")))
        })
        .await?;
        acks.extend(a);
        errors.extend(e);
        last_ack = last_ack.max(done);
    }
    let writes_done = Instant::now();
    crate::progress("writes done; waiting for the last frames");

    // Sockets finish when they have every event; the rest get a grace period.
    let grace = Duration::from_millis(args.grace_ms);
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            stop.cancel();
        })
    };
    let mut verdict = Verdict::default();
    let (mut post_to_recv, mut ts_to_recv) = (Samples::new(), Samples::new());
    let mut delivered = 0u64;
    let mut last_recv = started;
    let mut ended = Vec::new();
    let mut open_streams = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (out, ws) = task.await.map_err(|e| err(format!("socket task: {e}")))?;
        verdict.add(out.verdict);
        post_to_recv.extend(out.post_to_recv);
        ts_to_recv.extend(out.ts_to_recv);
        delivered += out.delivered;
        if let Some(at) = out.last_recv {
            last_recv = last_recv.max(at);
        }
        if let Some(why) = out.ended {
            ended.push(why);
        }
        open_streams.push(ws);
    }
    stopper.abort();
    let usage = target.end_phase(&phase);
    let waited_for_late = writes_done.elapsed();
    drop(open_streams);

    let mut report = Report::new("fanout", ctx.sync);
    report.param("users", users);
    report.param("sockets_per_user", per_user);
    report.param("writes_per_user", writes);
    report.param("rate", args.rate);
    report.param("sources", args.sources);
    let sockets_total = (users * per_user) as u64;
    report.count("sockets", sockets_total);
    report.metric("open_sockets_s", open_time.as_secs_f64(), "s");
    let mut connect_samples = Samples::new();
    connects.into_iter().for_each(|d| connect_samples.push(d));
    report.latency("connect_to_hello", connect_samples.summary());
    report.count("writes", acks.len() as u64);
    report.must_be_zero("write_errors", errors.len() as u64);
    report.metric(
        "writes_per_s",
        per_second(acks.len() as f64, last_ack - started),
        "/s",
    );
    report.latency("write_latency", acks.summary());
    report.must_equal("deliveries", delivered, sockets_total * writes as u64);
    report.metric(
        "deliveries_per_s",
        per_second(delivered as f64, last_recv - started),
        "/s",
    );
    report.latency("commit_to_receive", ts_to_recv.summary());
    report.latency("post_to_receive", post_to_recv.summary());
    report.must_be_zero("lost", verdict.lost);
    report.must_be_zero("duplicates", verdict.duplicates);
    report.must_be_zero("out_of_order", verdict.out_of_order);
    report.must_be_zero("unexpected", verdict.unexpected);
    report.must_be_zero("sockets_ended_early", ended.len() as u64);
    report.usage("server_during_writes", usage);
    if !errors.is_empty() {
        report.json(
            "write_error_samples",
            json!(errors.iter().take(5).collect::<Vec<_>>()),
        );
    }
    if !ended.is_empty() {
        report.json("ended_samples", json!(ended.iter().take(5).collect::<Vec<_>>()));
    }
    report.note(format!(
        "commit_to_receive = receive time minus the event's ts (stamped when the server prepares the write, \
         before queueing and commit; ms resolution, same host clock): an upper bound. Waited {:.1} s after the last ack.",
        waited_for_late.as_secs_f64()
    ));
    if per_user > 16 {
        report.note(format!("the server ran with --max-sockets-per-user {per_user}"));
    }
    if ctx.common.drop_one_frame_for_test {
        report.note("test seam: one received event frame was discarded on purpose");
    }
    target.stop().await;
    Ok(report)
}

/// Reads one socket until it has all `writes` events of its user (or
/// `stop`); with `discard`, drops the first event frame unread.
async fn receive(
    mut ws: Ws,
    writes: usize,
    times: Arc<SendTimes>,
    mut discard: bool,
    stop: CancellationToken,
) -> (SocketOut, Ws) {
    let first = ws.hello.head + 1;
    let last = ws.hello.head + writes as i64;
    let mut tracker = SeqTracker::new(first);
    let mut out = SocketOut {
        verdict: Verdict::default(),
        post_to_recv: Samples::new(),
        ts_to_recv: Samples::new(),
        delivered: 0,
        last_recv: None,
        ended: None,
    };
    let mut have = 0usize;
    while have < writes {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            frame = ws.next_frame(Duration::from_secs(3600)) => frame,
        };
        let (head, _text) = match frame {
            None => continue,
            Some(Frame::Text { head, text }) => (head, text),
            Some(Frame::Closed(code)) => {
                out.ended = Some(format!("closed by the server with {code:?}"));
                break;
            }
            Some(Frame::Ended(why)) => {
                out.ended = Some(why);
                break;
            }
        };
        let Some(id) = head.id else { continue };
        if discard {
            discard = false;
            continue;
        }
        let now = Instant::now();
        if !tracker.on_event(id) || id > last {
            continue;
        }
        have += 1;
        out.delivered += 1;
        out.last_recv = Some(now);
        let k = usize::try_from(id - first).unwrap_or(usize::MAX);
        if let Some(latency) = times.since(k, now) {
            out.post_to_recv.push(latency);
        }
        if let Some(ts) = head.ts.as_deref().and_then(ws::parse_ts_ms) {
            out.ts_to_recv.push_ms(ws::now_unix_ms() - ts);
        }
    }
    out.verdict = tracker.verdict(last);
    (out, ws)
}
