//! `ingest`: upload D synthetic text/markdown documents with a few uploads
//! in flight, and wait over `/ws` until every one is `ready`; then search
//! the result with queries of rare, mid-frequency and common terms and
//! "typical" questions, one at a time.

use std::sync::Arc;

use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use super::{EventStream, synthetic_docs, upload_and_wait};
use crate::api::Api;
use crate::report::Report;
use crate::server::{Spec, Target};
use crate::stats::{Samples, per_second};
use crate::text::{Term, Vocabulary};
use crate::{Ctx, Result};

#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Documents to upload (alternately .txt and .md).
    #[arg(long, default_value_t = 2_000)]
    pub docs: usize,
    /// Size of each document in KiB.
    #[arg(long, default_value_t = 20)]
    pub doc_kb: usize,
    /// Uploads in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Searches per kind of query (common, mid, rare, typical) afterwards.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// `limit` of each search.
    #[arg(long, default_value_t = 10)]
    pub search_limit: usize,
    /// Distinct words of the synthetic corpus.
    #[arg(long, default_value_t = 50_000)]
    pub vocabulary: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub async fn run(ctx: &Ctx, args: &IngestArgs) -> Result<Report> {
    let target = Target::start(&ctx.common, ctx.sync, Spec::new(&[])).await?;
    let api = Api::new(&target.base)?;
    let account = api
        .register(&format!("bench-{}-ingest@example.com", ctx.run_id))
        .await?;
    let token = account.token.clone();
    let mut events = EventStream::open(&target.base, &token).await?;

    let vocabulary = Arc::new(Vocabulary::new(args.vocabulary));
    let docs = synthetic_docs(
        vocabulary.clone(),
        "ingest",
        args.docs,
        args.doc_kb * 1024,
        args.seed,
    )
    .await?;
    crate::progress(format!("uploading {} documents", args.docs));
    let idle = target.reading();
    let phase = target.phase();
    let loaded = upload_and_wait(&api, &token, docs, args.concurrency, &mut events, ctx.deadline).await?;
    let usage = target.end_phase(&phase);

    crate::progress("all documents settled; searching");
    // Searches, one at a time, per kind of query.
    let search_phase = target.phase();
    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(99));
    let mut all = Samples::new();
    let mut by_kind = Vec::new();
    let kinds: [(&str, Option<Term>); 4] = [
        ("common", Some(Term::Common)),
        ("mid", Some(Term::Mid)),
        ("rare", Some(Term::Rare)),
        ("typical", None),
    ];
    let mut search_errors = 0u64;
    for (name, term) in kinds {
        let mut samples = Samples::new();
        let mut hits = 0usize;
        for _ in 0..args.queries {
            let q = match term {
                Some(term) => vocabulary.query(term, 2, &mut rng),
                None => vocabulary.question(&mut rng),
            };
            let sent = std::time::Instant::now();
            match api.search(&token, &q, args.search_limit).await {
                Ok(items) => {
                    samples.push(sent.elapsed());
                    hits += items.len();
                }
                Err(_) => search_errors += 1,
            }
        }
        let mean_hits = if samples.is_empty() {
            0.0
        } else {
            hits as f64 / samples.len() as f64
        };
        by_kind.push((name, samples.clone(), mean_hits));
        all.extend(samples);
    }
    let search_usage = target.end_phase(&search_phase);
    let head = super::final_head(&target.base, &token).await?;
    let (verdict, ended) = events.finish(head).await?;

    let mut report = Report::new("ingest", ctx.sync);
    report.param("docs", args.docs);
    report.param("doc_kb", args.doc_kb);
    report.param("concurrency", args.concurrency);
    report.param("queries_per_kind", args.queries);
    report.param("search_limit", args.search_limit);
    report.must_equal("ready", loaded.ready as u64, args.docs as u64);
    report.must_be_zero("failed", loaded.failed.len() as u64);
    report.count("chunks", loaded.chunks);
    let mb = loaded.bytes as f64 / 1e6;
    report.metric("megabytes", mb, "MB");
    let settled = loaded.all_settled.unwrap_or_default();
    report.metric("upload_to_ready_s", settled.as_secs_f64(), "s");
    report.metric("docs_per_s", per_second(loaded.ready as f64, settled), "/s");
    report.metric("mb_per_s", per_second(mb, settled), "MB/s");
    report.metric(
        "time_to_first_ready_s",
        loaded.first_ready.unwrap_or_default().as_secs_f64(),
        "s",
    );
    report.metric("upload_phase_s", loaded.upload_phase.as_secs_f64(), "s");
    report.metric("upload_mb_per_s", per_second(mb, loaded.upload_phase), "MB/s");
    report.latency("upload_latency", loaded.upload.summary());
    report.usage("server_during_ingest", usage);
    report.metric("server_rss_idle_mib", idle.rss_kb as f64 / 1024.0, "MiB");
    report.must_be_zero("search_errors", search_errors);
    report.latency("search", all.summary());
    for (name, samples, mean_hits) in &by_kind {
        report.latency(&format!("search_{name}"), samples.summary());
        report.json(
            &format!("search_{name}_mean_hits"),
            json!(crate::stats::round3(*mean_hits)),
        );
    }
    report.usage("server_during_search", search_usage);
    report.must_be_zero("socket_lost", verdict.lost);
    report.must_be_zero("socket_duplicates", verdict.duplicates + verdict.out_of_order);
    report.must_be_zero("socket_ended_early", u64::from(ended.is_some()));
    if !loaded.failed.is_empty() {
        report.json(
            "failed_samples",
            json!(loaded.failed.iter().take(5).collect::<Vec<_>>()),
        );
    }
    report.note(
        "MB = 10^6 bytes of file content; upload_to_ready runs from the first upload to the last \
         document.status_updated ready on the socket; search kinds: 2 common (ranks 10-99), 2 mid \
         (1,000-4,999) or 2 rare (last 40% of the vocabulary) terms, or a typical question (1 common, \
         2 mid, 1 rare term among stop-words)",
    );
    target.stop().await;
    Ok(report)
}
