//! Prometheus metrics (`GET /metrics`, docs/API.md "Metrics"): what each
//! part of the server counts, as handles registered once, and the text
//! rendered at scrape time.
//!
//! Each server records into a `PrometheusRecorder` of its own (a field of
//! `AppState`), not into the `metrics` facade's process-wide recorder: the
//! integration tests run many servers in one process, and with one global
//! recorder each server's `/metrics` would show the sum of all of them (a
//! test could only assert "at least", never what its own server did). It
//! also keeps the rule of STYLE.md: no globals, everything in the state.
//! The price is that nothing records through the facade's macros; every
//! count goes through a handle taken from here, which is also the cheapest
//! way: a handle is an `Arc` to an atomic, so a frame, a commit or an
//! attempt costs an atomic add, with no lookup and no allocation; a request
//! costs one map lookup under a read lock (`http`).

mod handles;
mod http;

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio_util::sync::CancellationToken;

pub use handles::{Attempt, CloseReason, Jobs, OpenSocket, Replies, ReplyEnd, Sockets};
pub use http::{Requests, UNMATCHED, method_label};

/// Upper bounds (seconds) of every histogram's buckets: from a fast commit
/// (1 ms) to a long parse or generation (10 min).
const BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes (a scrape does it too): they would pile up in memory otherwise.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The server's metrics: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

pub struct Inner {
    handle: PrometheusHandle,
    /// HTTP requests by method, route and status, with their latency.
    pub http: Requests,
    pub sockets: Sockets,
    /// Committed events handed to the hub, whether or not a socket listens.
    pub events_published: Counter,
    /// Time the writer takes for one batch (`BEGIN` .. `COMMIT`, answers).
    pub commit_seconds: Histogram,
    pub jobs: Jobs,
    pub replies: Replies,
    write_queue: Gauge,
    jobs_queued: Gauge,
    jobs_running: Gauge,
    oldest_due: Gauge,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What is read at scrape time rather than counted as it happens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scrape {
    /// Writes waiting for the writer thread.
    pub write_queue: usize,
    /// Jobs `queued` and `running`, and how long the job that has been due
    /// longest has waited since it became due (`None`: the read failed).
    pub jobs: Option<JobQueue>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct JobQueue {
    pub queued: i64,
    pub running: i64,
    pub oldest_due_wait: Duration,
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = Arc::new(match PrometheusBuilder::new().set_buckets(&BUCKETS) {
            Ok(builder) => builder.build_recorder(),
            // Only an empty bucket list is refused, and ours is not empty.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        });
        let r = Reg(&recorder);
        let inner = Inner {
            handle: recorder.handle(),
            http: Requests::new(Arc::clone(&recorder)),
            sockets: Sockets {
                open: r.gauge("ragd_ws_sockets_open", &[]),
                delivered: r.counter("ragd_ws_events_delivered_total", &[]),
                closes: CloseReason::ALL.map(|c| r.counter("ragd_ws_closes_total", &[("reason", c.label())])),
            },
            events_published: r.counter("ragd_events_published_total", &[]),
            commit_seconds: r.histogram("ragd_db_commit_duration_seconds", &[]),
            jobs: Jobs {
                attempts: Attempt::ALL
                    .map(|a| r.counter("ragd_job_attempts_total", &[("outcome", a.label())])),
                seconds: Attempt::ALL
                    .map(|a| r.histogram("ragd_job_attempt_duration_seconds", &[("outcome", a.label())])),
            },
            replies: Replies {
                ended: ReplyEnd::ALL.map(|e| r.counter("ragd_replies_total", &[("status", e.label())])),
                seconds: r.histogram("ragd_reply_generation_duration_seconds", &[]),
            },
            write_queue: r.gauge("ragd_db_write_queue_depth", &[]),
            jobs_queued: r.gauge("ragd_jobs", &[("status", "queued")]),
            jobs_running: r.gauge("ragd_jobs", &[("status", "running")]),
            oldest_due: r.gauge("ragd_job_queue_oldest_wait_seconds", &[]),
        };
        describe(&recorder);
        Metrics(Arc::new(inner))
    }

    /// The Prometheus text of every metric, with the scrape-time values set
    /// first.
    pub fn render(&self, scrape: Scrape) -> String {
        self.write_queue.set(scrape.write_queue as f64);
        if let Some(jobs) = scrape.jobs {
            self.jobs_queued.set(jobs.queued as f64);
            self.jobs_running.set(jobs.running as f64);
            self.oldest_due.set(jobs.oldest_due_wait.as_secs_f64());
        }
        self.handle.render()
    }

    /// Folds histogram samples into their buckets every few seconds until
    /// `stopping` (a scrape does it too; without scrapes they would pile up).
    pub async fn upkeep(self, stopping: CancellationToken) {
        let mut ticker = tokio::time::interval(UPKEEP_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.handle.run_upkeep(),
                () = stopping.cancelled() => return,
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers handles with static names and labels.
struct Reg<'a>(&'a PrometheusRecorder);

impl Reg<'_> {
    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|&(k, v)| Label::from_static_parts(k, v))
            .collect();
        Key::from_parts(name, labels)
    }
    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.0.register_counter(&Self::key(name, labels), &METADATA)
    }
    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        self.0.register_gauge(&Self::key(name, labels), &METADATA)
    }
    fn histogram(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Histogram {
        self.0.register_histogram(&Self::key(name, labels), &METADATA)
    }
}

/// The `# HELP` lines (docs/API.md lists the same).
fn describe(recorder: &PrometheusRecorder) {
    let seconds = Some(Unit::Seconds);
    let count = Some(Unit::Count);
    let lines: [(&'static str, Option<Unit>, &'static str, bool); 15] = [
        (
            "ragd_http_requests_total",
            count,
            "HTTP requests answered, by method, route template and status.",
            false,
        ),
        (
            "ragd_http_request_duration_seconds",
            seconds,
            "Time to the response head of HTTP requests, by method and route template.",
            true,
        ),
        ("ragd_ws_sockets_open", count, "WebSockets open now.", false),
        (
            "ragd_ws_events_delivered_total",
            count,
            "Stored events written to sockets, live or replayed.",
            false,
        ),
        ("ragd_ws_closes_total", count, "Sockets ended, by reason.", false),
        (
            "ragd_events_published_total",
            count,
            "Committed events published to the hub.",
            false,
        ),
        (
            "ragd_db_commit_duration_seconds",
            seconds,
            "Time the writer takes for one batch: BEGIN, the writes, COMMIT.",
            true,
        ),
        (
            "ragd_db_write_queue_depth",
            count,
            "Writes waiting for the writer thread.",
            false,
        ),
        ("ragd_jobs", count, "Parse jobs queued or running.", false),
        (
            "ragd_job_queue_oldest_wait_seconds",
            seconds,
            "How long the queued job due longest has waited since it became due.",
            false,
        ),
        (
            "ragd_job_attempts_total",
            count,
            "Parse attempts ended, by outcome.",
            false,
        ),
        (
            "ragd_job_attempt_duration_seconds",
            seconds,
            "Time from claiming a parse attempt to its end, by outcome.",
            true,
        ),
        (
            "ragd_replies_total",
            count,
            "Replies that reached a final status, by status.",
            false,
        ),
        (
            "ragd_reply_generation_duration_seconds",
            seconds,
            "Time from the start of a generation to its stored outcome.",
            true,
        ),
        ("ragd_build_info", None, "Always 1; the version of ragd.", false),
    ];
    for (name, unit, help, histogram) in lines {
        let name = KeyName::from_const_str(name);
        if histogram {
            recorder.describe_histogram(name, unit, help.into());
        } else if name.as_str().ends_with("_total") {
            recorder.describe_counter(name, unit, help.into());
        } else {
            recorder.describe_gauge(name, unit, help.into());
        }
    }
    let version = Label::from_static_parts("version", env!("CARGO_PKG_VERSION"));
    recorder
        .register_gauge(&Key::from_parts("ragd_build_info", vec![version]), &METADATA)
        .set(1.0);
}

#[cfg(test)]
mod tests;
