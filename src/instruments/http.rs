//! HTTP request metrics: a counter per method, route and status and a
//! latency histogram per method and route, registered the first time each
//! is seen and then found again without allocating.
//!
//! Labels are bounded: the route is the router's template
//! (`/api/conversations/{id}`), never the raw path, and `unmatched` for
//! paths no route serves; a method outside the standard ones is `other`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::METADATA;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The handles of one route template.
#[derive(Default)]
struct Route {
    counts: HashMap<(&'static str, u16), Counter>,
    latency: HashMap<&'static str, Histogram>,
}

/// Counts requests; cheap to clone.
#[derive(Clone)]
pub struct Requests {
    recorder: Arc<PrometheusRecorder>,
    routes: Arc<RwLock<HashMap<Box<str>, Route>>>,
}

impl Requests {
    pub(super) fn new(recorder: Arc<PrometheusRecorder>) -> Requests {
        Requests {
            recorder,
            routes: Arc::default(),
        }
    }

    /// Counts one answered request. Once its (method, route, status) was
    /// seen: a read lock, two map lookups and two atomic updates, with no
    /// allocation; the lock is never held across an await.
    pub fn observe(&self, method: &'static str, route: &str, status: StatusCode, took: Duration) {
        let seconds = took.as_secs_f64();
        {
            let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
            let found = routes
                .get(route)
                .and_then(|r| Some((r.counts.get(&(method, status.as_u16()))?, r.latency.get(method)?)));
            if let Some((counter, histogram)) = found {
                counter.increment(1);
                histogram.record(seconds);
                return;
            }
        }
        let (counter, histogram) = self.register(method, route, status);
        counter.increment(1);
        histogram.record(seconds);
    }

    fn register(&self, method: &'static str, route: &str, status: StatusCode) -> (Counter, Histogram) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let entry = routes.entry(route.into()).or_default();
        let labels = |with_status: bool| {
            let mut labels = vec![
                Label::from_static_parts("method", method),
                Label::new("route", route.to_owned()),
            ];
            if with_status {
                labels.push(Label::new("status", status.as_str().to_owned()));
            }
            labels
        };
        let counter = entry
            .counts
            .entry((method, status.as_u16()))
            .or_insert_with(|| {
                let key = Key::from_parts("ragd_http_requests_total", labels(true));
                self.recorder.register_counter(&key, &METADATA)
            })
            .clone();
        let histogram = entry
            .latency
            .entry(method)
            .or_insert_with(|| {
                let key = Key::from_parts("ragd_http_request_duration_seconds", labels(false));
                self.recorder.register_histogram(&key, &METADATA)
            })
            .clone();
        (counter, histogram)
    }
}

/// The `method` label: a standard method's name, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
