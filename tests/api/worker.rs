//! API.md "Parse jobs": retries with backoff, permanent failures, parser
//! processes that abort, loop or eat memory, reprocess and delete while a
//! job runs, and fencing of an attempt whose lease expired. Uses the
//! parser child's `RAGD-TEST:<directive>` first line (feature `test-hooks`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::doc_helpers::{
    Api, about, assert_cause_first, assert_document, assert_files_are, assert_job, directed, events_until,
    id, statuses_of, summary, until_document, until_settled,
};
use crate::helpers::TestApp;
use crate::ws_helpers::{assert_consecutive, connect, connect_since, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_with_backoff_until_it_succeeds() {
    let app = TestApp::spawn_with(&["--job-retry-base", "50ms"]).await;
    let api = Api::of(&app);
    let token = api.register("retry@example.com").await;
    let mut ws = connect(&app, &token).await;
    let doc = api
        .upload_ok(
            &token,
            "flaky.txt",
            &directed("fail-transient-until:3", "The wombat digs burrows at night."),
        )
        .await;
    let events = until_settled(&mut ws, id(&doc), "ready", "succeeded").await;
    assert_eq!(
        statuses_of(&events, "document.status_updated"),
        [
            "parsing",
            "queued",
            "parsing",
            "queued",
            "parsing",
            "ingesting",
            "ready"
        ],
        "the document is queued while its job waits for a retry: {:?}",
        summary(&events)
    );
    assert_eq!(
        statuses_of(&events, "job.status_updated"),
        [
            "queued",
            "running",
            "queued",
            "running",
            "queued",
            "running",
            "succeeded"
        ],
        "{:?}",
        summary(&events)
    );
    // Each retry wait: the job's `queued` before the document's.
    assert_eq!(assert_cause_first(&events), 7);
    let retries: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == json!("job.status_updated") && e["data"]["status"] == json!("queued"))
        .skip(1)
        .map(|e| &e["data"])
        .collect();
    for (n, job) in (1..).zip(&retries) {
        assert_eq!(job["retry_count"], json!(n), "{job}");
        let error = job["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("transient"), "the retry says why: {job}");
        let (run_after, updated) = (
            job["run_after"].as_str().unwrap_or_default(),
            job["updated_at"].as_str().unwrap_or_default(),
        );
        assert!(run_after > updated, "a retry waits (backoff): {job}");
    }

    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    assert_eq!(job["retry_count"], json!(2), "{job}");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "three attempts: {job}");
    for attempt in &attempts[..2] {
        let error = attempt["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("transient"),
            "a failed attempt records its error: {job}"
        );
        assert!(!attempt["finished_at"].is_null(), "{job}");
    }
    assert_eq!(attempts[2]["error"], Value::Null, "{job}");
    assert!(!attempts[2]["finished_at"].is_null(), "{job}");
    let ready = api.document(&token, id(&doc)).await;
    assert_eq!(ready["status"], json!("ready"));
    assert_eq!(ready["error"], Value::Null);
    assert_eq!(api.hits_for(&token, "wombat", id(&doc)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_fails_after_one_attempt_with_its_error() {
    let app = TestApp::spawn_with(&["--job-retry-base", "50ms"]).await;
    let api = Api::of(&app);
    let token = api.register("permanent@example.com").await;
    let mut ws = connect(&app, &token).await;
    let doc = api
        .upload_ok(&token, "bad.txt", &directed("fail-permanent", "never indexed"))
        .await;
    let events = until_settled(&mut ws, id(&doc), "failed", "failed").await;
    assert_eq!(
        summary(&events),
        [
            "document.created",
            "job queued#0",
            "job running#1",
            "document parsing",
            "job failed#1",
            "document failed"
        ],
        "cause first: the job fails, then the document"
    );
    assert_eq!(assert_cause_first(&events), 2);
    let failed = api.wait_for_status(&token, id(&doc), "failed").await;
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("failed"), "{job}");
    assert_eq!(job["retry_count"], json!(0), "no retries: {job}");
    assert_eq!(job["attempts"].as_array().map(Vec::len), Some(1), "{job}");
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("corrupt:"), "a clear error: {job}");
    assert_eq!(job["attempts"][0]["error"], json!(error));
    assert_eq!(failed["error"], json!(error), "the document shows the error");
    assert_eq!(failed["chunk_count"], json!(0));
    assert!(api.search(&token, "indexed").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parser_panic_is_a_permanent_corrupt_failure() {
    let app = TestApp::spawn_with(&["--job-retry-base", "50ms"]).await;
    let api = Api::of(&app);
    let token = api.register("panic@example.com").await;
    let doc = api
        .upload_ok(&token, "panic.txt", &directed("panic", "boom"))
        .await;
    let failed = api.wait_for_status(&token, id(&doc), "failed").await;
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["attempts"].as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(job["retry_count"], json!(0), "{job}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("corrupt"), "{failed}");
    // The same child (or a new one) still parses the next file.
    let ok = api
        .upload_ready(&token, "fine.txt", b"the panda eats bamboo")
        .await;
    assert_eq!(api.hits_for(&token, "panda", id(&ok)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_stays_transient_fails_after_max_retries() {
    let app = TestApp::spawn_with(&["--job-retry-base", "50ms", "--job-max-retries", "2"]).await;
    let api = Api::of(&app);
    let token = api.register("exhausted@example.com").await;
    let doc = api
        .upload_ok(&token, "always.txt", &directed("fail-transient", "never indexed"))
        .await;
    let failed = api.wait_for_status(&token, id(&doc), "failed").await;
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("failed"), "{job}");
    assert_eq!(job["max_retries"], json!(2), "{job}");
    assert_eq!(job["retry_count"], json!(2), "{job}");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "1 + 2 retries: {job}");
    for attempt in attempts {
        assert!(
            attempt["error"].as_str().is_some_and(|e| e.contains("transient")),
            "{job}"
        );
        assert!(!attempt["finished_at"].is_null(), "{job}");
    }
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("transient"), "{job}");
    assert_eq!(failed["error"], json!(error), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parser_processes_that_abort_loop_or_eat_memory_end_as_crash_loops() {
    let app = TestApp::spawn_with(&[
        "--job-timeout",
        "2s",
        "--parse-memory-mb",
        "256",
        "--job-retry-base",
        "50ms",
        "--workers",
        "2",
    ])
    .await;
    let api = Api::of(&app);
    let token = api.register("crashloop@example.com").await;
    let mut poison = Vec::new();
    let mut good = Vec::new();
    for (n, directive) in ["abort", "loop", "alloc"].into_iter().enumerate() {
        let doc = api
            .upload_ok(
                &token,
                &format!("{directive}.txt"),
                &directed(directive, "poison"),
            )
            .await;
        poison.push((directive, doc));
        let ok = api
            .upload_ok(
                &token,
                &format!("good{n}.txt"),
                format!("healthy document number{n} about lemurs").as_bytes(),
            )
            .await;
        good.push(ok);
    }
    for ok in &good {
        api.wait_for_status(&token, id(ok), "ready").await;
    }
    for (directive, doc) in &poison {
        let failed = api.wait_for_status(&token, id(doc), "failed").await;
        let job = api.only_job(&token, id(doc)).await;
        let error = job["last_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("crash_loop:"),
            "{directive}: two crashes fail the job as crash_loop: {job}"
        );
        assert_eq!(failed["error"], json!(error), "{failed}");
        let attempts = job["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 2, "{directive}: fails after two crashes: {job}");
        assert!(attempts.iter().all(|a| a["error"].is_string()), "{job}");
        if *directive == "loop" {
            assert!(error.contains("time"), "a parser past --job-timeout: {job}");
        }
    }
    // The server kept serving, and still parses.
    app.get("/healthz", None).await.expect(StatusCode::OK);
    let after = api
        .upload_ready(&token, "after.txt", b"lemurs after the storm")
        .await;
    assert_eq!(api.hits_for(&token, "storm", id(&after)).await.len(), 1);
    assert_eq!(api.search(&token, "lemurs").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_is_409_while_the_job_runs() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("running@example.com").await;
    let doc = api
        .upload_ok(&token, "slow.txt", &directed("sleep:1500", "a slow sloth"))
        .await;
    api.wait_for_status(&token, id(&doc), "parsing").await;
    let path = format!("/api/documents/{}/reprocess", id(&doc));
    api.post_empty(&path, &token)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    api.wait_for_status(&token, id(&doc), "ready").await;
    assert_eq!(api.jobs(&token, id(&doc)).await.len(), 1);
    api.post_empty(&path, &token).await.expect(StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_chunks_stay_searchable_until_the_reprocess_replaces_them() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("swap-running@example.com").await;
    let doc = api
        .upload_ok(
            &token,
            "okapi.txt",
            &directed("sleep:1500", "The okapi lives in the forest."),
        )
        .await;
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    let old = api.hits_for(&token, "okapi", id(&doc)).await;
    assert_eq!(old.len(), 1, "{old:?}");

    let mut ws = connect(&app, &token).await;
    api.post_empty(&format!("/api/documents/{}/reprocess", id(&doc)), &token)
        .await
        .expect(StatusCode::ACCEPTED);
    let started = until_document(&mut ws, id(&doc), "parsing").await;
    let during = api.hits_for(&token, "okapi", id(&doc)).await;
    assert_eq!(during, old, "while the new job runs, the old chunk is found");
    let events = until_document(&mut ws, id(&doc), "ready").await;
    assert_eq!(
        statuses_of(&events, "document.status_updated"),
        ["ingesting", "ready"],
        "{:?}",
        summary(&events)
    );
    let all = [started, events].concat();
    assert_eq!(
        summary(&all),
        [
            "job queued#0",
            "document queued",
            "job running#1",
            "document parsing",
            "document ingesting",
            "job succeeded#1",
            "document ready"
        ],
        "a reprocess's events, cause first"
    );
    assert_eq!(assert_cause_first(&all), 4);
    let new = api.hits_for(&token, "okapi", id(&doc)).await;
    assert_eq!(new.len(), 1, "one chunk set: {new:?}");
    assert_ne!(
        new[0]["chunk_id"], old[0]["chunk_id"],
        "the new set replaced the old"
    );
    let doc_now = api.document(&token, id(&doc)).await;
    assert_eq!(doc_now["chunk_count"], ready["chunk_count"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reprocess_keeps_the_old_chunks() {
    let app = TestApp::spawn_with(&["--job-retry-base", "50ms", "--job-max-retries", "2"]).await;
    let api = Api::of(&app);
    let token = api.register("keep-old@example.com").await;
    // Attempts 1 and 2 fail: with 2 retries the first job succeeds on 3.
    let doc = api
        .upload_ok(
            &token,
            "quokka.txt",
            &directed("fail-transient-until:3", "The quokka smiles for photos."),
        )
        .await;
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    let old = api.hits_for(&token, "quokka", id(&doc)).await;
    assert_eq!(old.len(), 1);

    // With one retry, the reprocess job runs out on attempt 2.
    let app = app
        .restart_with(&["--job-retry-base", "50ms", "--job-max-retries", "1"])
        .await;
    let api = Api::of(&app);
    let mut ws = connect(&app, &token).await;
    let response = api
        .post_empty(&format!("/api/documents/{}/reprocess", id(&doc)), &token)
        .await;
    let job = response.expect(StatusCode::ACCEPTED).clone();
    assert_eq!(job["max_retries"], json!(1), "{job}");
    let events = until_settled(&mut ws, id(&doc), "failed", "failed").await;
    assert_eq!(
        summary(&events),
        [
            "job queued#0",
            "document queued",
            "job running#1",
            "document parsing",
            "job queued#1",
            "document queued",
            "job running#2",
            "document parsing",
            "job failed#2",
            "document failed"
        ],
        "a failed reprocess's events, cause first"
    );
    assert_eq!(assert_cause_first(&events), 5);
    let failed = api.wait_for_status(&token, id(&doc), "failed").await;
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert_eq!(failed["chunk_count"], ready["chunk_count"], "the old set's count");
    assert_eq!(
        api.hits_for(&token, "quokka", id(&doc)).await,
        old,
        "the old chunks are still searchable"
    );
    let jobs = api.jobs(&token, id(&doc)).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["id"], job["id"], "newest first");
    assert_eq!(jobs[0]["status"], json!("failed"));
    assert_eq!(jobs[0]["retry_count"], json!(1));
    assert_eq!(jobs[0]["last_error"], failed["error"]);
    assert_eq!(jobs[1]["status"], json!("succeeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_document_cancels_its_running_job() {
    // One worker: the next upload can only be parsed once the deleted
    // document's 30-second parse was stopped.
    let app = TestApp::spawn_with(&["--workers", "1"]).await;
    let api = Api::of(&app);
    let token = api.register("cancel@example.com").await;
    let doc = api
        .upload_ok(&token, "slow.txt", &directed("sleep:30000", "the capybara swims"))
        .await;
    api.wait_for_status(&token, id(&doc), "parsing").await;
    let mut ws = connect(&app, &token).await;
    let response = api.delete(&format!("/api/documents/{}", id(&doc)), &token).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    let deleted = ws.next_event().await;
    assert_eq!(deleted["type"], json!("document.deleted"));

    let next = api
        .upload_ok(&token, "next.txt", b"the next file about ibis")
        .await;
    let events = until_document(&mut ws, id(&next), "ready").await;
    assert!(!events.is_empty());
    let mut replay = connect_since(&app, &token, id_of(&deleted)).await;
    let after = replay
        .next_events(usize::try_from(replay.head() - id_of(&deleted)).expect("fits"))
        .await;
    assert_consecutive(&after, id_of(&deleted) + 1);
    for event in &after {
        assert!(
            !about(event, id(&doc)),
            "nothing about the deleted document after its deletion: {event}"
        );
    }
    assert!(api.search(&token, "capybara").await.is_empty());
    assert_files_are(app.data_dir(), &[id(&next)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_lease_expired_cannot_overwrite_its_replacement() {
    // The heartbeat is longer than the lease: every attempt that runs
    // longer than 1 s loses its lease to the sweep while it still works.
    let phase_one = [
        "--job-lease",
        "1s",
        "--job-heartbeat",
        "10s",
        "--sweep-interval",
        "200ms",
        "--workers",
        "2",
        "--job-max-retries",
        "10",
        "--chunk-size",
        "200",
        "--chunk-overlap",
        "0",
    ];
    let app = TestApp::spawn_with(&phase_one).await;
    let api = Api::of(&app);
    let token = api.register("fencing@example.com").await;
    let text: String = (1..=5)
        .map(|n| {
            format!(
                "Paragraph {n}: the quokka number {n} hops across Rottnest Island at dawn, \
                 looking for leaves and shade before the heat of the day arrives.\n\n"
            )
        })
        .collect();
    let mut ws = connect(&app, &token).await;
    let doc = api
        .upload_ok(&token, "fenced.txt", &directed("sleep:2500", &text))
        .await;

    // Attempt 1 runs, its lease expires, the sweep requeues it, another
    // worker claims attempt 2; attempt 3 can only be claimed by a worker
    // that finished a stale attempt (and so tried to commit it).
    let events = events_until(&mut ws, id(&doc), "the third claim", |e| {
        e["type"] == json!("job.status_updated")
            && e["data"]["status"] == json!("running")
            && e["data"]["attempts"].as_array().map_or(0, Vec::len) == 3
    })
    .await;
    let jobs: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == json!("job.status_updated"))
        .map(|e| &e["data"])
        .collect();
    let requeued = jobs
        .iter()
        .find(|j| j["status"] == json!("queued") && j["retry_count"] == json!(1))
        .unwrap_or_else(|| panic!("the sweep requeued attempt 1: {:?}", summary(&events)));
    assert_eq!(
        requeued["attempts"][0]["error"],
        json!("interrupted"),
        "{requeued}"
    );
    assert!(!requeued["attempts"][0]["finished_at"].is_null(), "{requeued}");
    assert!(
        jobs.iter()
            .any(|j| j["status"] == json!("running") && j["attempts"].as_array().map_or(0, Vec::len) == 2),
        "claimed again as attempt 2: {:?}",
        summary(&events)
    );
    let doc_statuses = statuses_of(&events, "document.status_updated");
    assert!(
        !doc_statuses.iter().any(|s| s == "ingesting" || s == "ready"),
        "a stale attempt committed nothing: {:?}",
        summary(&events)
    );
    let now = api.document(&token, id(&doc)).await;
    assert_eq!(now["chunk_count"], json!(0), "{now}");
    assert!(
        api.search(&token, "quokka").await.is_empty(),
        "no stale chunk set"
    );
    drop(ws);

    // With a normal lease, whichever attempt holds the job last finishes
    // it (possibly while the first server drains).
    let phase_two = [
        "--workers",
        "2",
        "--job-max-retries",
        "10",
        "--chunk-size",
        "200",
        "--chunk-overlap",
        "0",
    ];
    let app = app.restart_with(&phase_two).await;
    let api = Api::of(&app);
    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert!(attempts.len() >= 3, "three claims were seen: {job}");
    let (last, earlier) = attempts.split_last().expect("attempts");
    assert_eq!(last["error"], Value::Null, "the last attempt succeeded: {job}");
    for attempt in earlier {
        assert_eq!(attempt["error"], json!("interrupted"), "{job}");
        assert!(
            !attempt["finished_at"].is_null(),
            "every attempt is closed: {job}"
        );
    }
    assert!(!last["finished_at"].is_null(), "{job}");
    let retries = job["retry_count"].as_u64().unwrap_or_default();
    assert!(
        retries >= 2 && retries < attempts.len() as u64,
        "each lease expiry cost a retry: {job}"
    );

    // One chunk set: every chunk found once, as many as chunk_count.
    let hits = api.hits_for(&token, "quokka", id(&doc)).await;
    let count = ready["chunk_count"].as_u64().unwrap_or_default();
    assert!(count >= 2, "the text spans several chunks: {ready}");
    assert_eq!(
        hits.len() as u64,
        count,
        "chunk_count matches the chunks found: {hits:?}"
    );
    let mut chunk_ids: Vec<&str> = hits.iter().filter_map(|h| h["chunk_id"].as_str()).collect();
    chunk_ids.sort_unstable();
    chunk_ids.dedup();
    assert_eq!(chunk_ids.len(), hits.len(), "no chunk twice");

    // The log agrees: exactly one success, one ingest, one ready.
    let mut replay = connect_since(&app, &token, 0).await;
    let head = usize::try_from(replay.head()).expect("fits");
    let all = replay.next_events(head).await;
    assert_consecutive(&all, 1);
    let mine: Vec<Value> = all.into_iter().filter(|e| about(e, id(&doc))).collect();
    let count_of = |kind: &str, status: &str| {
        mine.iter()
            .filter(|e| e["type"] == json!(kind) && e["data"]["status"] == json!(status))
            .count()
    };
    assert_eq!(
        count_of("job.status_updated", "succeeded"),
        1,
        "{:?}",
        summary(&mine)
    );
    assert_eq!(
        count_of("document.status_updated", "ingesting"),
        1,
        "{:?}",
        summary(&mine)
    );
    assert_eq!(
        count_of("document.status_updated", "ready"),
        1,
        "{:?}",
        summary(&mine)
    );
    let final_doc = &mine
        .iter()
        .rev()
        .find(|e| e["type"] == json!("document.status_updated"))
        .expect("a document event")["data"];
    assert_document(final_doc);
    assert_eq!(final_doc["status"], json!("ready"));
    let final_job = &mine
        .iter()
        .rev()
        .find(|e| e["type"] == json!("job.status_updated"))
        .expect("a job event")["data"];
    assert_job(final_job);
    assert_eq!(final_job, &job, "the last job event is the stored job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_requeues_a_running_job_without_waiting_for_its_parser() {
    let app = TestApp::spawn_with(&["--shutdown-timeout", "1s"]).await;
    let api = Api::of(&app);
    let token = api.register("drain@example.com").await;
    let doc = api
        .upload_ok(
            &token,
            "slow.txt",
            &directed("sleep:20000", "the armadillo rolls"),
        )
        .await;
    api.wait_for_status(&token, id(&doc), "parsing").await;

    let started = tokio::time::Instant::now();
    let limit = Duration::from_secs(5);
    let (dir, _) = tokio::time::timeout(limit, app.stop()).await.unwrap_or_else(|_| {
        panic!(
            "with a 20 s parse running, the server did not stop within {limit:?} \
                 (--shutdown-timeout 1s): API.md says stop, then requeue running jobs"
        )
    });
    assert!(started.elapsed() < limit);

    // No worker on the next start: the job is seen as the stop left it.
    let app = TestApp::spawn_in(dir, vec!["--workers".into(), "0".into()]).await;
    let api = Api::of(&app);
    let now = api.document(&token, id(&doc)).await;
    assert_eq!(
        now["status"],
        json!("queued"),
        "requeued, not left parsing: {now}"
    );
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("queued"), "{job}");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{job}");
    assert_eq!(attempts[0]["error"], json!("interrupted"), "{job}");
    assert!(!attempts[0]["finished_at"].is_null(), "{job}");
}
