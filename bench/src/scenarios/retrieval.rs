//! `retrieval`: search quality on a BEIR-layout test collection (by
//! default ../shared/datasets/scifact, which is for evaluation only: it is
//! read at run time, never shipped). Every corpus document is uploaded as
//! `<_id>.txt` holding `title\n\ntext`; each test query goes through
//! `GET /api/search` (limit 50, the most the API allows); documents are
//! ranked by their best chunk (the first hit of each filename) and scored
//! against the qrels: nDCG@10 (binary gains, log2 discount, as trec_eval)
//! and Recall@100.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;
use serde_json::json;

use super::{Doc, EventStream, upload_and_wait};
use crate::api::Api;
use crate::report::Report;
use crate::server::{Spec, Target};
use crate::stats::Samples;
use crate::{Ctx, Result, err};

#[derive(Args, Debug, Clone)]
pub struct RetrievalArgs {
    /// Directory of the collection: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    #[arg(long, default_value = "../shared/datasets/scifact")]
    pub dataset: PathBuf,
    /// Which qrels file holds the evaluated queries.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Uploads in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// `limit` of each search (the API allows at most 50).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Deserialize)]
struct CorpusDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Query {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

pub async fn run(ctx: &Ctx, args: &RetrievalArgs) -> Result<Report> {
    let (corpus, queries, qrels) = load(&args.dataset, &args.split)?;
    let target = Target::start(&ctx.common, ctx.sync, Spec::new(&[])).await?;
    let api = Api::new(&target.base)?;
    let account = api
        .register(&format!("bench-{}-retrieval@example.com", ctx.run_id))
        .await?;
    let token = account.token.clone();
    let mut events = EventStream::open(&target.base, &token).await?;
    let docs: Vec<Doc> = corpus
        .iter()
        .map(|d| Doc {
            filename: format!("{}.txt", d.id),
            bytes: format!("{}\n\n{}", d.title, d.text).into_bytes(),
        })
        .collect();
    crate::progress(format!("uploading {} documents", corpus.len()));
    let loaded = upload_and_wait(&api, &token, docs, args.concurrency, &mut events, ctx.deadline).await?;

    crate::progress(format!("documents settled; {} queries", qrels.len()));
    let mut latencies = Samples::new();
    let (mut ndcg_sum, mut recall100_sum, mut recall10_sum, mut mrr_sum) = (0.0, 0.0, 0.0, 0.0);
    let mut errors = 0u64;
    let mut evaluated = 0usize;
    let mut per_query = Vec::new();
    for query in &queries {
        let Some(relevant) = qrels.get(&query.id) else {
            continue;
        };
        evaluated += 1;
        let sent = std::time::Instant::now();
        let hits = match api.search(&token, &query.text, args.limit).await {
            Ok(hits) => hits,
            Err(_) => {
                errors += 1;
                Vec::new()
            }
        };
        latencies.push(sent.elapsed());
        let ranking = rank_documents(&hits);
        let ndcg = ndcg_at(&ranking, relevant, 10);
        ndcg_sum += ndcg;
        recall100_sum += recall_at(&ranking, relevant, 100);
        recall10_sum += recall_at(&ranking, relevant, 10);
        mrr_sum += ranking
            .iter()
            .take(10)
            .position(|d| relevant.contains(d))
            .map_or(0.0, |p| 1.0 / (p as f64 + 1.0));
        per_query.push(json!([query.id, crate::stats::round3(ndcg)]));
    }
    let n = evaluated.max(1) as f64;
    let head = super::final_head(&target.base, &token).await?;
    let (verdict, _) = events.finish(head).await?;

    let mut report = Report::new("retrieval", ctx.sync);
    report.param("dataset", args.dataset.display().to_string());
    report.param("split", args.split.clone());
    report.param("limit", args.limit);
    report.count("corpus_docs", corpus.len() as u64);
    report.must_equal("docs_ready", loaded.ready as u64, corpus.len() as u64);
    report.must_be_zero("docs_failed", loaded.failed.len() as u64);
    report.count("chunks", loaded.chunks);
    report.metric(
        "upload_to_ready_s",
        loaded.all_settled.unwrap_or_default().as_secs_f64(),
        "s",
    );
    report.count("queries", evaluated as u64);
    report.must_be_zero("search_errors", errors);
    report.metric("ndcg_at_10", ndcg_sum / n, "");
    report.metric("recall_at_100", recall100_sum / n, "");
    report.metric("recall_at_10", recall10_sum / n, "");
    report.metric("mrr_at_10", mrr_sum / n, "");
    report.latency("search", latencies.summary());
    report.must_be_zero("socket_lost", verdict.lost);
    report.json("ndcg_by_query", json!(per_query));
    report.note(format!(
        "documents ranked by their best chunk among the {} chunks one search may return, so Recall@100 \
         counts at most {} documents (a search cannot return more): it is a lower bound of the true Recall@100",
        args.limit, args.limit
    ));
    target.stop().await;
    Ok(report)
}

type Qrels = HashMap<String, HashSet<String>>;

fn load(dir: &Path, split: &str) -> Result<(Vec<CorpusDoc>, Vec<Query>, Qrels)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| err(format!("read {}: {e}", path.display())))
    };
    let corpus: Vec<CorpusDoc> = read("corpus.jsonl")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| err(format!("corpus.jsonl: {e}"))))
        .collect::<Result<_>>()?;
    let mut qrels: Qrels = HashMap::new();
    for (i, line) in read(&format!("qrels/{split}.tsv"))?.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if i == 0 && fields.first() == Some(&"query-id") {
            continue;
        }
        if let [query, doc, score, ..] = fields[..]
            && score.trim().parse::<f64>().is_ok_and(|s| s > 0.0)
        {
            qrels.entry(query.to_owned()).or_default().insert(doc.to_owned());
        }
    }
    let mut queries: Vec<Query> = read("queries.jsonl")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| err(format!("queries.jsonl: {e}"))))
        .collect::<Result<Vec<Query>>>()?
        .into_iter()
        .filter(|q| qrels.contains_key(&q.id))
        .collect();
    queries.sort_by(|a, b| a.id.cmp(&b.id));
    if queries.len() != qrels.len() {
        return Err(err(format!(
            "{} queries of the qrels are missing from queries.jsonl",
            qrels.len() - queries.len()
        )));
    }
    Ok((corpus, queries, qrels))
}

/// Corpus ids in rank order: hits come best first, so the first hit of a
/// document is its best chunk.
fn rank_documents(hits: &[serde_json::Value]) -> Vec<String> {
    let mut seen = HashSet::new();
    hits.iter()
        .filter_map(|h| h["filename"].as_str())
        .map(|f| f.strip_suffix(".txt").unwrap_or(f).to_owned())
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// nDCG@k with binary gains and a log2(rank + 1) discount.
fn ndcg_at(ranking: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, d)| relevant.contains(*d))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(k))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    if ideal > 0.0 { dcg / ideal } else { 0.0 }
}

fn recall_at(ranking: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranking.iter().take(k).filter(|d| relevant.contains(*d)).count();
    found as f64 / relevant.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_trec_eval_definitions() {
        let ranking: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let relevant: HashSet<String> = ["b", "z"].iter().map(|s| (*s).to_owned()).collect();
        // DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
        let expected = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&ranking, &relevant, 10) - expected).abs() < 1e-12);
        assert!((recall_at(&ranking, &relevant, 100) - 0.5).abs() < 1e-12);
        let hits = vec![
            json!({"filename": "7.txt"}),
            json!({"filename": "7.txt"}),
            json!({"filename": "3.txt"}),
        ];
        assert_eq!(rank_documents(&hits), vec!["7".to_owned(), "3".to_owned()]);
    }
}
