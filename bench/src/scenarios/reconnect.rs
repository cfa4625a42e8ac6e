//! `reconnect`: U users with S clients each; while every user keeps writing,
//! each client drops its socket (closes the TCP connection without a close
//! handshake) R times at random moments and reconnects with `since=<last
//! id>&epoch=<epoch>`. Across all its connections, each client must see every
//! event of its user exactly once, in order: replayed events, gaps (lost)
//! and duplicates are counted (gaps and duplicates must be 0).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::report::Report;
use crate::server::{Spec, Target};
use crate::stats::Samples;
use crate::ws::{self, ConnectError, Frame, SeqTracker, Verdict, Ws};
use crate::{Ctx, Result, err};

#[derive(Args, Debug, Clone)]
pub struct ReconnectArgs {
    /// Users, each writing.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Clients (sockets) per user.
    #[arg(long, default_value_t = 10)]
    pub sockets: usize,
    /// Writes per user (one event each).
    #[arg(long, default_value_t = 200)]
    pub writes: usize,
    /// Pause between two writes of one user, in ms.
    #[arg(long, default_value_t = 20)]
    pub write_interval_ms: u64,
    /// Drops and reconnects per client.
    #[arg(long, default_value_t = 5)]
    pub reconnects: usize,
    /// A client stays connected for a random time up to this, in ms,
    /// before it drops.
    #[arg(long, default_value_t = 400)]
    pub connected_ms: u64,
    /// And stays away for a random time up to this, in ms.
    #[arg(long, default_value_t = 100)]
    pub offline_ms: u64,
    /// Close with a WebSocket close handshake instead of dropping the TCP
    /// connection.
    #[arg(long)]
    pub graceful: bool,
    /// How long clients may still catch up after the last write, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Spread the sockets over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    pub sources: usize,
    /// Seed of the random drop moments.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Default)]
struct ClientOut {
    verdict: Verdict,
    reconnects: u64,
    replayed: u64,
    resyncs: u64,
    refused: u64,
    reconnect_latency: Samples,
    failure: Option<String>,
}

struct Client {
    base: String,
    token: String,
    epoch: String,
    index: usize,
    final_head: Arc<AtomicI64>,
    stop: CancellationToken,
}

pub async fn run(ctx: &Ctx, args: &ReconnectArgs) -> Result<Report> {
    let (users, per_user) = (args.users.max(1), args.sockets.max(1));
    // Room for sockets the server has not yet seen close.
    let limit = (per_user * 2 + 4).max(16);
    let server_args = vec!["--max-sockets-per-user".to_owned(), limit.to_string()];
    let target = Target::start(&ctx.common, ctx.sync, Spec::new(&server_args)).await?;
    let api = Api::new(&target.base)?;
    let accounts = api.register_many(&ctx.run_id, users).await?;

    let mut initial: Vec<(usize, Ws)> = Vec::new();
    for (u, account) in accounts.iter().enumerate() {
        for s in 0..per_user {
            let i = u * per_user + s;
            let socket = ws::connect(
                &target.base,
                &account.token,
                "",
                ws::source_address(i, args.sources),
            )
            .await
            .map_err(|e| err(format!("open a socket: {e}")))?;
            initial.push((u, socket));
        }
    }
    let heads: Vec<i64> = (0..users)
        .map(|u| {
            initial
                .iter()
                .find(|(v, _)| *v == u)
                .map_or(0, |(_, ws)| ws.hello.head)
        })
        .collect();
    let final_heads: Vec<Arc<AtomicI64>> = (0..users).map(|_| Arc::new(AtomicI64::new(i64::MAX))).collect();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for (i, (u, socket)) in initial.into_iter().enumerate() {
        let client = Client {
            base: target.base.clone(),
            token: accounts[u].token.clone(),
            epoch: socket.hello.epoch.clone(),
            index: i,
            final_head: final_heads[u].clone(),
            stop: stop.clone(),
        };
        let (args, seed) = (
            args.clone(),
            args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
        );
        tasks.push(tokio::spawn(async move { client.run(socket, &args, seed).await }));
    }

    crate::progress("sockets open; writing while clients drop and reconnect");
    let phase = target.phase();
    let started = Instant::now();
    let interval = Duration::from_millis(args.write_interval_ms);
    let writers: Vec<_> = accounts
        .iter()
        .enumerate()
        .map(|(u, account)| {
            let (api, token, writes) = (api.clone(), account.token.clone(), args.writes);
            tokio::spawn(async move {
                let mut errors = Vec::new();
                for k in 0..writes {
                    tokio::time::sleep_until((started + interval * k as u32).into()).await;
                    if let Err(e) = api
                        .create_conversation(&token, &format!("reconnect {u}/{k}"))
                        .await
                    {
                        errors.push(e.to_string());
                    }
                }
                errors
            })
        })
        .collect();
    let mut write_errors = Vec::new();
    for writer in writers {
        let errors = ws::within(ctx.deadline, "the writes", async {
            writer.await.map_err(|e| err(format!("writer: {e}")))
        })
        .await?;
        write_errors.extend(errors);
    }
    let writes_done = started.elapsed();
    for (u, account) in accounts.iter().enumerate() {
        let head = super::final_head(&target.base, &account.token).await?;
        final_heads[u].store(head, Ordering::Release);
    }
    let stopper = {
        let (stop, grace) = (stop.clone(), Duration::from_millis(args.grace_ms));
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            stop.cancel();
        })
    };
    let mut total = ClientOut::default();
    let mut failures = Vec::new();
    for task in tasks {
        let out = task.await.map_err(|e| err(format!("client task: {e}")))?;
        total.verdict.add(out.verdict);
        total.reconnects += out.reconnects;
        total.replayed += out.replayed;
        total.resyncs += out.resyncs;
        total.refused += out.refused;
        total.reconnect_latency.extend(out.reconnect_latency);
        if let Some(why) = out.failure {
            failures.push(why);
        }
    }
    stopper.abort();
    let usage = target.end_phase(&phase);
    let written: i64 = (0..users)
        .map(|u| final_heads[u].load(Ordering::Acquire) - heads[u])
        .sum();

    let mut report = Report::new("reconnect", ctx.sync);
    report.param("users", users);
    report.param("sockets_per_user", per_user);
    report.param("writes_per_user", args.writes);
    report.param("write_interval_ms", args.write_interval_ms);
    report.param("reconnects_per_socket", args.reconnects);
    report.param("graceful", args.graceful);
    report.count("clients", (users * per_user) as u64);
    report.must_equal(
        "events_written",
        u64::try_from(written).unwrap_or(0),
        (users * args.writes) as u64,
    );
    report.must_be_zero("write_errors", write_errors.len() as u64);
    report.metric("write_phase_s", writes_done.as_secs_f64(), "s");
    report.must_equal(
        "reconnects",
        total.reconnects,
        (users * per_user * args.reconnects) as u64,
    );
    report.count("refused_429_retried", total.refused);
    report.latency("reconnect_to_hello", total.reconnect_latency.summary());
    report.count("replayed_events", total.replayed);
    report.count("events_received", total.verdict.received);
    report.must_be_zero("gaps_lost", total.verdict.lost);
    report.must_be_zero("duplicates", total.verdict.duplicates);
    report.must_be_zero("out_of_order", total.verdict.out_of_order);
    report.must_be_zero("unexpected", total.verdict.unexpected);
    report.must_be_zero("resync_required", total.resyncs);
    report.must_be_zero("client_failures", failures.len() as u64);
    report.usage("server_during_writes", usage);
    if !failures.is_empty() {
        report.json(
            "failure_samples",
            json!(failures.iter().take(5).collect::<Vec<_>>()),
        );
    }
    if !write_errors.is_empty() {
        report.json(
            "write_error_samples",
            json!(write_errors.iter().take(5).collect::<Vec<_>>()),
        );
    }
    report.note(format!(
        "the server ran with --max-sockets-per-user {limit} (room for sockets it has not yet seen drop); \
         a 429 on reconnect is retried after 50 ms"
    ));
    target.stop().await;
    Ok(report)
}

impl Client {
    async fn run(self, socket: Ws, args: &ReconnectArgs, seed: u64) -> ClientOut {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = ClientOut::default();
        let mut tracker = SeqTracker::new(socket.hello.head + 1);
        let mut socket = Some(socket);
        // Events at or below this id, on this connection, came from replay.
        let mut replay_upto = i64::MIN;
        for round in 0..=args.reconnects {
            let Some(ws) = socket.as_mut() else { break };
            let last_round = round == args.reconnects;
            let until = if last_round {
                None
            } else {
                Some(
                    tokio::time::Instant::now()
                        + Duration::from_millis(rng.random_range(0..=args.connected_ms)),
                )
            };
            if let Err(why) = self.read(ws, &mut tracker, &mut out, replay_upto, until).await {
                out.failure = Some(why);
                break;
            }
            if last_round {
                break;
            }
            let ws = socket.take().expect("a socket");
            if args.graceful {
                ws.close().await;
            } else {
                drop(ws);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..=args.offline_ms))).await;
            match self.reconnect(tracker.last(), &mut out, args.sources).await {
                Ok(ws) => {
                    replay_upto = ws.hello.head;
                    socket = Some(ws);
                    out.reconnects += 1;
                }
                Err(why) => {
                    out.failure = Some(why);
                    break;
                }
            }
        }
        let last = self.final_head.load(Ordering::Acquire);
        out.verdict = tracker.verdict(if last == i64::MAX { tracker.last() } else { last });
        out
    }

    /// Reads frames until `until` (or, without it, until the client has
    /// every event of its user, once the final head is known, or `stop`).
    async fn read(
        &self,
        ws: &mut Ws,
        tracker: &mut SeqTracker,
        out: &mut ClientOut,
        replay_upto: i64,
        until: Option<tokio::time::Instant>,
    ) -> std::result::Result<(), String> {
        loop {
            if until.is_none() {
                let last = self.final_head.load(Ordering::Acquire);
                if last != i64::MAX && tracker.has_all_through(last) {
                    return Ok(());
                }
            }
            let wait = until.map_or(Duration::from_millis(100), |u| {
                u.saturating_duration_since(tokio::time::Instant::now())
                    .min(Duration::from_millis(100))
            });
            let frame = tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                frame = ws.next_frame(wait) => frame,
            };
            match frame {
                None => {
                    if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                        return Ok(());
                    }
                }
                Some(Frame::Text { head, .. }) => {
                    if let Some(id) = head.id {
                        let new = tracker.on_event(id);
                        if new && id <= replay_upto {
                            out.replayed += 1;
                        }
                    } else if head.kind == "resync_required" {
                        out.resyncs += 1;
                    }
                }
                Some(Frame::Closed(code)) => return Err(format!("closed by the server with {code:?}")),
                Some(Frame::Ended(why)) => return Err(why),
            }
        }
    }

    async fn reconnect(
        &self,
        since: i64,
        out: &mut ClientOut,
        sources: usize,
    ) -> std::result::Result<Ws, String> {
        let query = format!("since={since}&epoch={}", self.epoch);
        let source = ws::source_address(self.index, sources);
        let started = Instant::now();
        for _ in 0..100 {
            match ws::connect(&self.base, &self.token, &query, source).await {
                Ok(ws) => {
                    out.reconnect_latency.push(started.elapsed());
                    return Ok(ws);
                }
                Err(ConnectError::Refused(429)) => {
                    out.refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("reconnect: {e}")),
            }
        }
        Err("reconnect: refused 100 times".into())
    }
}
