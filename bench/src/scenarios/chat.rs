//! `chat`: C concurrent chat users post messages in sync mode (each waits
//! for its extractive answer before the next), against a corpus of
//! documents uploaded first and waited for (ready). The users are C
//! sessions of the one account that owns the corpus (each with its own
//! conversation and HTTP connection), because search covers the caller's
//! own documents; one socket of that account sees every event, so the
//! POST-to-socket delivery of each turn is measured on it, and its event
//! ids are checked for gaps and duplicates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use super::{EventStream, synthetic_docs, upload_and_wait};
use crate::api::Api;
use crate::report::Report;
use crate::server::{Spec, Target};
use crate::stats::{Samples, per_second};
use crate::text::Vocabulary;
use crate::{Ctx, Result, err};

#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// Concurrent chat users (sessions of the account owning the corpus).
    #[arg(long, default_value_t = 32)]
    pub users: usize,
    /// Measured messages per user.
    #[arg(long, default_value_t = 60)]
    pub messages: usize,
    /// Unmeasured messages per user first (warm caches).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Documents in the corpus.
    #[arg(long, default_value_t = 1_000)]
    pub docs: usize,
    /// Size of each document in KiB (10 KiB is about 12 chunks).
    #[arg(long, default_value_t = 10)]
    pub doc_kb: usize,
    /// Uploads in flight while loading the corpus.
    #[arg(long, default_value_t = 8)]
    pub upload_concurrency: usize,
    /// Distinct words of the synthetic corpus.
    #[arg(long, default_value_t = 50_000)]
    pub vocabulary: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One measured turn.
struct Turn {
    reply_id: String,
    sent: Instant,
}

pub async fn run(ctx: &Ctx, args: &ChatArgs) -> Result<Report> {
    let users = args.users.max(1);
    let target = Target::start(&ctx.common, ctx.sync, Spec::new(&[])).await?;
    let api = Api::new(&target.base)?;
    let account = api
        .register(&format!("bench-{}-chat@example.com", ctx.run_id))
        .await?;
    let token = account.token.clone();
    let mut events = EventStream::open(&target.base, &token).await?;

    let vocabulary = Arc::new(Vocabulary::new(args.vocabulary));
    let docs = synthetic_docs(
        vocabulary.clone(),
        "chat",
        args.docs,
        args.doc_kb * 1024,
        args.seed,
    )
    .await?;
    crate::progress(format!("uploading {} documents", args.docs));
    let loaded = upload_and_wait(
        &api,
        &token,
        docs,
        args.upload_concurrency,
        &mut events,
        ctx.deadline,
    )
    .await?;

    let mut conversations = Vec::with_capacity(users);
    for u in 0..users {
        conversations.push(api.create_conversation(&token, &format!("chat user {u}")).await?);
    }

    // Warm-up, then the measured turns: every user in a closed loop.
    let run_turns = |count: usize, salt: u64| {
        let clients: Vec<_> = conversations
            .iter()
            .enumerate()
            .map(|(u, conversation)| {
                let (api, token, conversation) = (api.clone(), token.clone(), conversation.clone());
                let vocabulary = vocabulary.clone();
                let seed = args.seed.wrapping_mul(7_919).wrapping_add(salt + u as u64);
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed);
                    let mut latencies = Samples::new();
                    let mut turns = Vec::with_capacity(count);
                    let mut errors = Vec::new();
                    let mut cited = 0u64;
                    for _ in 0..count {
                        let question = vocabulary.question(&mut rng);
                        let sent = Instant::now();
                        match api.post_message(&token, &conversation, &question).await {
                            Ok(reply) => {
                                latencies.push(sent.elapsed());
                                if reply["status"] != json!("done") {
                                    errors.push(format!("reply not done: {}", reply["status"]));
                                }
                                if reply["sources"].as_array().is_some_and(|s| !s.is_empty()) {
                                    cited += 1;
                                }
                                let reply_id = reply["id"].as_str().unwrap_or_default().to_owned();
                                turns.push(Turn { reply_id, sent });
                            }
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                    (latencies, turns, errors, cited, Instant::now())
                })
            })
            .collect::<Vec<_>>();
        async move {
            let mut latencies = Samples::new();
            let mut turns = Vec::new();
            let mut errors = Vec::new();
            let mut cited = 0;
            let mut last = Instant::now();
            for client in clients {
                let (l, t, e, c, done) = client.await.map_err(|e| err(format!("chat client: {e}")))?;
                latencies.extend(l);
                turns.extend(t);
                errors.extend(e);
                cited += c;
                last = last.max(done);
            }
            Ok::<_, crate::Error>((latencies, turns, errors, cited, last))
        }
    };
    if args.warmup > 0 {
        crate::ws::within(ctx.deadline, "the warm-up", run_turns(args.warmup, 1_000_000)).await?;
    }
    crate::progress("corpus ready, warm-up done; measured turns");
    let phase = target.phase();
    let started = Instant::now();
    let (latencies, turns, errors, cited, last_response) =
        crate::ws::within(ctx.deadline, "the chat turns", run_turns(args.messages, 0)).await?;
    let usage = target.end_phase(&phase);

    // The socket's view of each measured turn: when the pending reply was
    // announced (message.created) and when it was done.
    let wanted: HashMap<&str, Instant> = turns.iter().map(|t| (t.reply_id.as_str(), t.sent)).collect();
    let (mut created, mut done) = (Samples::new(), Samples::new());
    let mut seen_done = 0usize;
    let drain_until = Instant::now() + Duration::from_secs(10);
    while seen_done < wanted.len() && Instant::now() < drain_until {
        let Some(event) = events.next(Duration::from_millis(200)).await else {
            continue;
        };
        let Some(sent) = event.data["id"].as_str().and_then(|id| wanted.get(id)) else {
            continue;
        };
        match (event.kind.as_str(), event.data["status"].as_str()) {
            ("message.created", _) => created.push(event.at.saturating_duration_since(*sent)),
            ("message.status_updated", Some("done" | "error" | "cancelled")) => {
                done.push(event.at.saturating_duration_since(*sent));
                seen_done += 1;
            }
            _ => {}
        }
    }
    let head = super::final_head(&target.base, &token).await?;
    let (verdict, ended) = events.finish(head).await?;

    let mut report = Report::new("chat", ctx.sync);
    report.param("users", users);
    report.param("messages_per_user", args.messages);
    report.param("warmup_per_user", args.warmup);
    report.param("docs", args.docs);
    report.param("doc_kb", args.doc_kb);
    report.count("corpus_docs_ready", loaded.ready as u64);
    report.must_be_zero("corpus_docs_failed", loaded.failed.len() as u64);
    report.count("corpus_chunks", loaded.chunks);
    report.metric(
        "corpus_load_s",
        loaded.all_settled.unwrap_or_default().as_secs_f64(),
        "s",
    );
    let requests = latencies.len() as u64;
    report.must_equal("requests", requests, (users * args.messages) as u64);
    report.must_be_zero("errors", errors.len() as u64);
    report.metric(
        "requests_per_s",
        per_second(requests as f64, last_response - started),
        "/s",
    );
    report.latency("latency", latencies.summary());
    report.latency("post_to_socket_created", created.summary());
    report.latency("post_to_socket_done", done.summary());
    report.count("replies_citing_sources", cited);
    report.must_equal("replies_seen_on_socket", seen_done as u64, requests);
    report.must_be_zero("socket_lost", verdict.lost);
    report.must_be_zero("socket_duplicates", verdict.duplicates + verdict.out_of_order);
    report.must_be_zero("socket_ended_early", u64::from(ended.is_some()));
    report.usage("server_during_turns", usage);
    if !errors.is_empty() {
        report.json("error_samples", json!(errors.iter().take(5).collect::<Vec<_>>()));
    }
    report.note(
        "post_to_socket_created: POST sent -> the pending reply's message.created on the account's socket; \
         post_to_socket_done: -> its message.status_updated (done)",
    );
    target.stop().await;
    Ok(report)
}
