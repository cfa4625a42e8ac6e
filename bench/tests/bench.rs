//! The load tool is tested too, so that it cannot silently rot: each
//! scenario runs tiny (a few users, sockets and documents) with the built
//! `ragd-bench` against the built `ragd`, and its counters are asserted,
//! never its timings. Its loss detector is proven by a run in which the
//! client drops one frame on purpose and exactly one loss is reported.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// What a run printed and how it ended.
struct Run {
    code: i32,
    /// The JSON lines of stdout (one per scenario run).
    lines: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The only JSON line.
    #[track_caller]
    fn json(&self) -> &Value {
        assert_eq!(self.lines.len(), 1, "one JSON line; stderr: {}", self.stderr);
        &self.lines[0]
    }

    /// A result counter of the only JSON line.
    #[track_caller]
    fn result(&self, name: &str) -> u64 {
        let value = &self.json()["results"][name];
        value
            .as_u64()
            .unwrap_or_else(|| panic!("results.{name} is a count, got {value}: {}", self.json()))
    }

    #[track_caller]
    fn expect_ok(&self) {
        assert_eq!(
            self.code, 0,
            "ragd-bench failed; stderr: {}; stdout JSON: {:?}",
            self.stderr, self.lines
        );
        for line in &self.lines {
            assert_eq!(line["ok"], json!(true), "{line}");
            assert_eq!(line["violations"], json!([]), "{line}");
        }
    }
}

/// The `ragd` binary to drive: `$RAGD_BIN`, or else the one of this build
/// (another package of the workspace, so cargo names no path for it: it is
/// built beside this test's directory, `target/<profile>/ragd`, by `cargo
/// test` at the workspace root; `cargo test -p ragd-bench` alone does not
/// build it).
fn ragd() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("RAGD_BIN") {
        return path.into();
    }
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_ragd-bench"))
        .parent()
        .expect("the bench binary has a directory")
        .to_path_buf();
    let ragd = profile_dir.join("ragd");
    assert!(
        ragd.exists(),
        "no ragd binary at {} (run the tests from the workspace root, or `cargo build --bins` first)",
        ragd.display()
    );
    ragd
}

/// Runs `ragd-bench --json --ragd <ragd> <args...>`.
fn bench(args: &[&str]) -> Run {
    let ragd = ragd();
    let output = Command::new(env!("CARGO_BIN_EXE_ragd-bench"))
        .args(["--json", "--timeout", "120", "--ragd"])
        .arg(&ragd)
        .args(args)
        .output()
        .expect("run ragd-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines = stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("every stdout line of --json is JSON ({e}): {line}"))
        })
        .collect();
    Run {
        code: output.status.code().unwrap_or(-1),
        lines,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn fanout_delivers_every_write_to_every_socket_once() {
    let run = bench(&["fanout", "--users", "2", "--sockets", "3", "--writes", "5"]);
    run.expect_ok();
    let line = run.json();
    assert_eq!(line["scenario"], json!("fanout"));
    assert_eq!(line["sync"], json!("full"));
    assert_eq!(run.result("sockets"), 6);
    assert_eq!(run.result("writes"), 10);
    assert_eq!(run.result("deliveries"), 30);
    for zero in [
        "lost",
        "duplicates",
        "out_of_order",
        "unexpected",
        "write_errors",
        "sockets_ended_early",
    ] {
        assert_eq!(run.result(zero), 0, "{zero}");
    }
    assert_eq!(line["results"]["commit_to_receive"]["count"], json!(30));
    assert!(
        line["context"]["machine"]["cores"]
            .as_u64()
            .is_some_and(|c| c > 0),
        "{line}"
    );
}

#[test]
fn the_loss_detector_reports_a_dropped_frame_as_exactly_one_loss() {
    let run = bench(&[
        "fanout",
        "--users",
        "2",
        "--sockets",
        "2",
        "--writes",
        "4",
        "--grace-ms",
        "300",
        "--drop-one-frame-for-test",
    ]);
    assert_eq!(run.code, 3, "a failed check exits 3; stderr: {}", run.stderr);
    let line = run.json();
    assert_eq!(line["ok"], json!(false));
    assert_eq!(run.result("lost"), 1, "{line}");
    assert_eq!(run.result("duplicates"), 0, "{line}");
    assert_eq!(run.result("deliveries"), 15, "{line}");
    let violations: Vec<&str> = line["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        violations.iter().any(|v| v.starts_with("lost = 1")),
        "{violations:?}"
    );
}

#[test]
fn reconnecting_clients_miss_nothing_and_see_nothing_twice() {
    let run = bench(&[
        "reconnect",
        "--users",
        "2",
        "--sockets",
        "2",
        "--writes",
        "30",
        "--write-interval-ms",
        "10",
        "--reconnects",
        "2",
        "--connected-ms",
        "100",
        "--offline-ms",
        "30",
    ]);
    run.expect_ok();
    assert_eq!(run.result("clients"), 4);
    assert_eq!(run.result("reconnects"), 8);
    assert_eq!(run.result("events_written"), 60);
    // Every client saw all 30 events of its user exactly once.
    assert_eq!(run.result("events_received"), 4 * 30);
    for zero in [
        "gaps_lost",
        "duplicates",
        "out_of_order",
        "resync_required",
        "client_failures",
    ] {
        assert_eq!(run.result(zero), 0, "{zero}");
    }
    assert_eq!(run.json()["results"]["reconnect_to_hello"]["count"], json!(8));
}

#[test]
fn chat_turns_are_answered_and_seen_on_the_socket() {
    let run = bench(&[
        "chat",
        "--users",
        "2",
        "--messages",
        "3",
        "--warmup",
        "1",
        "--docs",
        "4",
        "--doc-kb",
        "3",
    ]);
    run.expect_ok();
    assert_eq!(run.result("corpus_docs_ready"), 4);
    assert_eq!(run.result("requests"), 6);
    assert_eq!(run.result("errors"), 0);
    assert_eq!(run.result("replies_seen_on_socket"), 6);
    assert_eq!(run.result("socket_lost"), 0);
    assert_eq!(run.result("socket_duplicates"), 0);
    assert_eq!(run.json()["results"]["post_to_socket_done"]["count"], json!(6));
}

#[test]
fn idle_sockets_stay_open() {
    let run = bench(&[
        "idle",
        "--sockets",
        "30",
        "--users",
        "3",
        "--sources",
        "4",
        "--settle-s",
        "0",
        "--hold-s",
        "1",
    ]);
    run.expect_ok();
    assert_eq!(run.result("opened"), 30);
    assert_eq!(run.result("open_failures"), 0);
    assert_eq!(run.result("closed_while_idle"), 0);
    assert!(
        run.json()["results"]["server_rss_fresh_mib"]
            .as_f64()
            .is_some_and(|m| m > 0.0)
    );
}

#[test]
fn ingest_makes_every_document_ready_in_both_sync_modes() {
    let run = bench(&[
        "--sync",
        "both",
        "ingest",
        "--docs",
        "6",
        "--doc-kb",
        "4",
        "--queries",
        "3",
    ]);
    run.expect_ok();
    assert_eq!(run.lines.len(), 2, "one JSON line per sync mode");
    for (line, sync) in run.lines.iter().zip(["full", "normal"]) {
        assert_eq!(line["sync"], json!(sync));
        let results = &line["results"];
        assert_eq!(results["ready"], json!(6), "{line}");
        assert_eq!(results["failed"], json!(0), "{line}");
        assert!(results["chunks"].as_u64().is_some_and(|c| c >= 6), "{line}");
        assert_eq!(results["search"]["count"], json!(12), "{line}");
        assert_eq!(results["search_errors"], json!(0), "{line}");
        assert_eq!(results["socket_lost"], json!(0), "{line}");
    }
}

#[test]
fn the_start_up_sweep_heals_every_stale_job_and_reply() {
    let run = bench(&["sweep", "--jobs", "120", "--replies", "25", "--users", "3"]);
    run.expect_ok();
    assert_eq!(run.result("attempts_left_open"), 0);
    assert_eq!(run.result("attempts_interrupted"), 120);
    assert_eq!(run.result("jobs_requeued_or_failed"), 120);
    assert_eq!(run.result("replies_left_pending"), 0);
    assert_eq!(run.result("replies_interrupted"), 25);
    assert!(run.result("events_emitted") >= 120 * 2 + 25);
}

/// A tiny BEIR-layout collection where each query's words are in its one
/// relevant document only.
fn tiny_collection(dir: &Path) {
    std::fs::create_dir_all(dir.join("qrels")).expect("create the collection dir");
    std::fs::write(
        dir.join("corpus.jsonl"),
        r#"{"_id": "10", "title": "Zebrafish heart", "text": "Zebrafish regenerate cardiac muscle after injury."}
{"_id": "20", "title": "Kinase inhibitors", "text": "Tyrosine kinase inhibitors slow leukemia progression."}
{"_id": "30", "title": "Soil bacteria", "text": "Nitrogen fixing bacteria enrich farmland soil."}
"#,
    )
    .expect("write the corpus");
    std::fs::write(
        dir.join("queries.jsonl"),
        r#"{"_id": "1", "text": "zebrafish cardiac regeneration"}
{"_id": "2", "text": "leukemia tyrosine kinase"}
{"_id": "3", "text": "a query without judgments"}
"#,
    )
    .expect("write the queries");
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\n1\t10\t1\n2\t20\t1\n",
    )
    .expect("write the qrels");
}

#[test]
fn retrieval_scores_a_collection_against_its_judgments() {
    let dir = tempfile::tempdir().expect("temp dir");
    tiny_collection(dir.path());
    let dataset = dir.path().to_str().expect("a UTF-8 path");
    let run = bench(&["retrieval", "--dataset", dataset]);
    run.expect_ok();
    assert_eq!(run.result("corpus_docs"), 3);
    assert_eq!(run.result("docs_ready"), 3);
    assert_eq!(run.result("queries"), 2);
    let results = &run.json()["results"];
    assert_eq!(results["ndcg_at_10"], json!(1.0), "{results}");
    assert_eq!(results["recall_at_100"], json!(1.0), "{results}");
    assert_eq!(results["search"]["count"], json!(2));
}

#[test]
fn bad_flags_exit_2_and_a_missing_dataset_exits_1() {
    assert_eq!(bench(&["fanout", "--users", "many"]).code, 2);
    let run = bench(&["retrieval", "--dataset", "/nonexistent/ragd-bench-dataset"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("corpus.jsonl"), "{}", run.stderr);
}
