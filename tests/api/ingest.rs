//! API.md "Documents" and "Parse jobs", end to end for each supported
//! format: upload a real file, see it become `ready` over `/ws`, find its
//! words with `/api/search`, and get it cited in a chat reply. Also the
//! order of the events one upload produces.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::ask;
use crate::doc_helpers::{
    Api, assert_cause_first, assert_document, assert_job, fixture, id, snippets_contain,
};
use crate::helpers::TestApp;
use crate::ws_helpers::{assert_consecutive, connect, types};

/// What a fixture must give once ingested.
struct Expect<'a> {
    fixture: &'a str,
    content_type: &'a str,
    /// Phrases whose words search finds in this document, each shown in a
    /// snippet.
    found: &'a [&'a str],
    /// Words that must not be indexed.
    absent: &'a [&'a str],
    /// A chat question whose answer cites the document first.
    question: &'a str,
}

async fn ingest_and_cite(expect: Expect<'_>) {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("formats@example.com").await;
    let bytes = fixture(expect.fixture);
    let doc = api.upload_ok(&token, expect.fixture, &bytes).await;
    assert_eq!(doc["content_type"], json!(expect.content_type), "{doc}");

    let ready = api.wait_for_status(&token, id(&doc), "ready").await;
    assert_eq!(ready["error"], Value::Null, "{ready}");
    let chunks = ready["chunk_count"].as_u64().unwrap_or_default();
    assert!(chunks >= 1, "a ready document has chunks: {ready}");
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");

    for phrase in expect.found {
        let hits = api.hits_for(&token, phrase, id(&doc)).await;
        assert!(
            !hits.is_empty(),
            "{}: search for {phrase:?} finds the document",
            expect.fixture
        );
        assert!(
            snippets_contain(&hits, phrase),
            "{}: a snippet shows {phrase:?}: {hits:?}",
            expect.fixture
        );
        for hit in &hits {
            assert_eq!(hit["filename"], json!(expect.fixture));
            let snippet = hit["snippet"].as_str().unwrap_or_default();
            assert!(
                !snippet.contains('<') && !snippet.contains("**"),
                "snippets are plain text: {snippet:?}"
            );
        }
    }
    for word in expect.absent {
        let hits = api.search(&token, word).await;
        assert!(
            hits.is_empty(),
            "{}: {word:?} must not be indexed, found {hits:?}",
            expect.fixture
        );
    }

    let conversation = app.create_conversation(&token, None).await;
    let reply = ask(&app, &token, &conversation, expect.question).await;
    assert_eq!(reply["status"], json!("done"), "{reply}");
    let content = reply["content"].as_str().unwrap_or_default();
    assert!(content.contains("[1]"), "the reply cites [1]: {content}");
    let source = &reply["sources"][0];
    assert_eq!(source["document_id"], doc["id"], "[1] is the document: {reply}");
    assert_eq!(source["filename"], json!(expect.fixture), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_1252_text_file_is_decoded_and_searchable() {
    ingest_and_cite(Expect {
        fixture: "latin1.txt",
        content_type: "text/plain",
        found: &["Société"],
        absent: &[],
        question: "Where is the Société Générale office?",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_markdown_file_is_searchable_and_cited() {
    ingest_and_cite(Expect {
        fixture: "notes.md",
        content_type: "text/markdown",
        found: &["stampede guard"],
        absent: &[],
        question: "What does the stampede guard do?",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_is_indexed_without_its_scripts() {
    ingest_and_cite(Expect {
        fixture: "page.html",
        content_type: "text/html",
        found: &["timezone bug"],
        absent: &["SHOULD-NOT-BE-INDEXED", "ALSO-NOT-INDEXED"],
        question: "Which version fixes the timezone bug?",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_is_searchable_with_its_numbers_and_accents() {
    ingest_and_cite(Expect {
        fixture: "report.pdf",
        content_type: "application/pdf",
        found: &["840 ms to 120 ms", "Zürich"],
        absent: &[],
        question: "How did latency go from 840 ms to 120 ms?",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docx_is_searchable_with_table_cells_and_japanese() {
    ingest_and_cite(Expect {
        fixture: "guide.docx",
        content_type: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        found: &["platform-oncall@example.com", "日本語"],
        absent: &[],
        question: "Who is platform-oncall@example.com?",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_is_searchable_with_its_quoted_cells() {
    ingest_and_cite(Expect {
        fixture: "inventory.csv",
        content_type: "text/csv",
        found: &["Teapot, ceramic"],
        absent: &[],
        question: "How many ceramic teapots are in stock?",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_file_is_searchable_by_its_values() {
    ingest_and_cite(Expect {
        fixture: "service.json",
        content_type: "application/json",
        found: &["Amara Okafor", "99.95%"],
        absent: &[],
        question: "Who is Amara Okafor?",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_emits_its_events_in_order() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("events@example.com").await;
    let mut ws = connect(&app, &token).await;
    let head = ws.head();

    let doc = api.upload_ok(&token, "notes.md", &fixture("notes.md")).await;
    let events = ws.next_events(7).await;
    assert_consecutive(&events, head + 1);
    ws.expect_quiet().await;

    assert_eq!(types(&events[..2]), ["document.created", "job.status_updated"]);
    assert_eq!(events[0]["data"], doc, "document.created carries the 201 body");
    let queued = &events[1]["data"];
    assert_job(queued);
    assert_eq!(queued["status"], json!("queued"), "{queued}");
    assert_eq!(queued["document_id"], doc["id"]);
    assert_eq!(queued["attempts"], json!([]));

    let mut doc_statuses = Vec::new();
    let mut job_statuses = Vec::new();
    let mut order = Vec::new();
    for event in &events[2..] {
        let data = &event["data"];
        match event["type"].as_str().unwrap_or_default() {
            "document.status_updated" => {
                assert_document(data);
                assert_eq!(data["id"], doc["id"]);
                let status = data["status"].as_str().unwrap_or_default().to_owned();
                order.push(format!("document {status}"));
                doc_statuses.push(status);
            }
            "job.status_updated" => {
                assert_job(data);
                assert_eq!(data["id"], queued["id"], "the same job");
                let status = data["status"].as_str().unwrap_or_default().to_owned();
                order.push(format!("job {status}"));
                job_statuses.push(status);
            }
            other => panic!("unexpected event {other}: {event}"),
        }
    }
    assert_eq!(doc_statuses, ["parsing", "ingesting", "ready"], "{order:?}");
    assert_eq!(job_statuses, ["running", "succeeded"], "{order:?}");
    // Cause first: the job's event, then the document's it causes.
    assert_eq!(
        order,
        [
            "job running",
            "document parsing",
            "document ingesting",
            "job succeeded",
            "document ready"
        ]
    );
    assert_eq!(assert_cause_first(&events), 3);

    let last_doc = events
        .iter()
        .rev()
        .find(|e| e["type"] == json!("document.status_updated"))
        .expect("a document event");
    let fetched = api.document(&token, id(&doc)).await;
    assert_eq!(last_doc["data"], fetched, "the last event is the stored state");
    let last_job = events
        .iter()
        .rev()
        .find(|e| e["type"] == json!("job.status_updated"))
        .expect("a job event");
    let job = api.only_job(&token, id(&doc)).await;
    assert_eq!(last_job["data"], job);
    assert_eq!(
        job["attempts"].as_array().map(Vec::len),
        Some(1),
        "one attempt: {job}"
    );
    assert_eq!(
        api.get("/api/documents", &token).await.expect(StatusCode::OK)["items"][0],
        fetched
    );
}
