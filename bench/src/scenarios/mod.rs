//! The scenarios, one file each, and what several of them share: an
//! observing socket that hands over every event (with the loss detector
//! running on it), and uploading a corpus while waiting for it to be ready.

pub mod chat;
pub mod fanout;
pub mod idle;
pub mod ingest;
pub mod reconnect;
pub mod retrieval;
pub mod sweep;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::ws::{self, Frame, SeqTracker, Verdict};
use crate::{Result, err};

/// An event as the observer saw it.
#[derive(Debug)]
pub struct Event {
    pub kind: String,
    pub data: Value,
    /// When it came off the socket.
    pub at: Instant,
}

/// One socket that passes every event on, with the loss detector on it.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
    stop: CancellationToken,
    task: JoinHandle<(SeqTracker, Option<String>)>,
}

impl EventStream {
    /// Opens a socket for `token` (live events after its `hello.head`).
    pub async fn open(base: &str, token: &str) -> Result<EventStream> {
        let mut socket = ws::connect(base, token, "", Ipv4Addr::LOCALHOST)
            .await
            .map_err(|e| err(format!("observer socket: {e}")))?;
        let head = socket.hello.head;
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut tracker = SeqTracker::new(head + 1);
            let ended = loop {
                let frame = tokio::select! {
                    () = stopped.cancelled() => break None,
                    frame = socket.next_frame(Duration::from_secs(3600)) => frame,
                };
                match frame {
                    None => {}
                    Some(Frame::Text { head: h, text }) => {
                        let Some(id) = h.id else { continue };
                        tracker.on_event(id);
                        let data = serde_json::from_str::<Value>(&text)
                            .map(|mut v| v["data"].take())
                            .unwrap_or(Value::Null);
                        let _ = tx.send(Event {
                            kind: h.kind,
                            data,
                            at: Instant::now(),
                        });
                    }
                    Some(Frame::Closed(code)) => break Some(format!("closed by the server ({code:?})")),
                    Some(Frame::Ended(why)) => break Some(why),
                }
            };
            (tracker, ended)
        });
        Ok(EventStream { rx, stop, task })
    }

    /// The next event, `None` after `timeout` (or when the socket ended).
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.rx.recv()).await.ok().flatten()
    }

    /// Stops the socket; the loss detector's verdict over the user's
    /// events up to `last` (the user's head at the end), and why the
    /// socket ended early, if it did.
    pub async fn finish(self, last: i64) -> Result<(Verdict, Option<String>)> {
        self.stop.cancel();
        let (tracker, ended) = self.task.await.map_err(|e| err(format!("observer task: {e}")))?;
        Ok((tracker.verdict(last), ended))
    }
}

/// The user's latest event id, from the `hello` of a fresh socket.
pub async fn final_head(base: &str, token: &str) -> Result<i64> {
    let socket = ws::connect(base, token, "", Ipv4Addr::LOCALHOST)
        .await
        .map_err(|e| err(format!("socket for the final head: {e}")))?;
    let head = socket.hello.head;
    socket.close().await;
    Ok(head)
}

/// A document to upload.
pub struct Doc {
    pub filename: String,
    pub bytes: Vec<u8>,
}

/// `n` synthetic documents of `size` bytes, alternately `.txt` and `.md`,
/// named `<prefix>-<i>`; generated off the async workers.
pub async fn synthetic_docs(
    vocabulary: Arc<crate::text::Vocabulary>,
    prefix: &'static str,
    n: usize,
    size: usize,
    seed: u64,
) -> Result<Vec<Doc>> {
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| Doc {
                filename: format!("{prefix}-{i:06}.{}", if i % 2 == 0 { "txt" } else { "md" }),
                bytes: vocabulary
                    .document(seed ^ (i as u64 + 1), size, i % 2 == 1)
                    .into_bytes(),
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| err(format!("generate documents: {e}")))
}

/// What uploading a corpus and waiting for it measured.
#[derive(Debug, Default)]
pub struct Loaded {
    pub bytes: u64,
    pub ready: usize,
    pub failed: Vec<String>,
    pub chunks: u64,
    /// Upload latencies (request to 201).
    pub upload: crate::stats::Samples,
    /// From the first upload to the last 201.
    pub upload_phase: Duration,
    /// From the first upload to the first and to the last ready document.
    pub first_ready: Option<Duration>,
    pub all_settled: Option<Duration>,
    /// Document ids by filename.
    pub ids: HashMap<String, String>,
}

/// Uploads `docs` with `concurrency` requests in flight and waits, on
/// `events`, until every document is `ready` or `failed` (or `deadline`).
pub async fn upload_and_wait(
    api: &Api,
    token: &str,
    docs: Vec<Doc>,
    concurrency: usize,
    events: &mut EventStream,
    deadline: tokio::time::Instant,
) -> Result<Loaded> {
    let count = docs.len();
    let bytes: u64 = docs.iter().map(|d| d.bytes.len() as u64).sum();
    let started = Instant::now();
    let uploader = {
        let (api, token) = (api.clone(), token.to_owned());
        tokio::spawn(async move {
            let results: Vec<Result<(String, String, Duration)>> = futures_util::stream::iter(docs)
                .map(|doc| {
                    let (api, token) = (api.clone(), token.clone());
                    async move {
                        let sent = Instant::now();
                        let created = api.upload(&token, &doc.filename, &doc.bytes).await?;
                        let id = created["id"]
                            .as_str()
                            .ok_or_else(|| err(format!("upload: no id in {created}")))?
                            .to_owned();
                        Ok((doc.filename, id, sent.elapsed()))
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            (results, started.elapsed())
        })
    };
    // Settled documents, by id: ready (with chunk count) or failed (with why).
    let mut settled: HashMap<String, std::result::Result<u64, String>> = HashMap::new();
    let mut first_ready = None;
    let mut last_settled = None;
    let mut uploader = Some(uploader);
    let mut uploaded: Option<HashSet<String>> = None;
    let mut loaded = Loaded {
        bytes,
        ..Loaded::default()
    };
    loop {
        if let Some(ids) = &uploaded
            && ids.iter().all(|id| settled.contains_key(id))
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(err(format!(
                "documents not settled in time: {} of {count} ready or failed",
                settled.len()
            )));
        }
        if let Some(handle) = uploader.as_mut().filter(|h| h.is_finished()) {
            let (results, phase) = handle.await.map_err(|e| err(format!("uploader: {e}")))?;
            uploader = None;
            loaded.upload_phase = phase;
            let mut ids = HashSet::new();
            for result in results {
                let (filename, id, latency) = result?;
                loaded.upload.push(latency);
                ids.insert(id.clone());
                loaded.ids.insert(filename, id);
            }
            uploaded = Some(ids);
            continue;
        }
        let Some(event) = events.next(Duration::from_millis(50)).await else {
            continue;
        };
        if event.kind != "document.status_updated" {
            continue;
        }
        let Some(id) = event.data["id"].as_str() else {
            continue;
        };
        match event.data["status"].as_str() {
            Some("ready") => {
                let chunks = event.data["chunk_count"].as_u64().unwrap_or(0);
                first_ready.get_or_insert(event.at.duration_since(started));
                settled.insert(id.to_owned(), Ok(chunks));
                last_settled = Some(event.at.duration_since(started));
            }
            Some("failed") => {
                let why = event.data["error"].as_str().unwrap_or("?").to_owned();
                settled.insert(id.to_owned(), Err(why));
                last_settled = Some(event.at.duration_since(started));
            }
            _ => {}
        }
    }
    for id in loaded.ids.values() {
        match settled.get(id) {
            Some(Ok(chunks)) => {
                loaded.ready += 1;
                loaded.chunks += chunks;
            }
            Some(Err(why)) => loaded.failed.push(format!("{id}: {why}")),
            None => {}
        }
    }
    loaded.first_ready = first_ready;
    loaded.all_settled = last_settled;
    Ok(loaded)
}

/// Shared, write-once send instants of writes, indexed by write number, as
/// nanoseconds since a base instant (0: not sent yet).
pub struct SendTimes {
    base: Instant,
    nanos: Vec<std::sync::atomic::AtomicU64>,
}

impl SendTimes {
    pub fn new(base: Instant, n: usize) -> Arc<SendTimes> {
        Arc::new(SendTimes {
            base,
            nanos: (0..n).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
        })
    }

    pub fn mark(&self, i: usize) {
        let n = u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(slot) = self.nanos.get(i) {
            slot.store(n, std::sync::atomic::Ordering::Release);
        }
    }

    /// How long before `at` write `i` was sent.
    pub fn since(&self, i: usize, at: Instant) -> Option<Duration> {
        let n = self.nanos.get(i)?.load(std::sync::atomic::Ordering::Acquire);
        if n == 0 {
            return None;
        }
        Some(at.saturating_duration_since(self.base + Duration::from_nanos(n)))
    }
}
