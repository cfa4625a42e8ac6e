use std::time::Duration;

use axum::http::StatusCode;

use super::*;

/// The value of the sample line `series` (name with labels, as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn each_metrics_counts_only_its_own() {
    let (a, b) = (Metrics::new(), Metrics::new());
    a.replies.generated(ReplyEnd::Done, Duration::from_millis(30));
    a.jobs.attempt_ended(Attempt::Retry, Some(Duration::from_secs(2)));
    let (a, b) = (a.render(Scrape::default()), b.render(Scrape::default()));
    assert_eq!(sample(&a, r#"ragd_replies_total{status="done"}"#), Some(1.0));
    assert_eq!(sample(&b, r#"ragd_replies_total{status="done"}"#), Some(0.0));
    assert_eq!(
        sample(&a, r#"ragd_job_attempts_total{outcome="retry"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&a, "ragd_reply_generation_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&a, r#"ragd_reply_generation_duration_seconds_bucket{le="0.05"}"#),
        Some(1.0),
        "histograms render as buckets:\n{a}"
    );
    assert!(a.contains("# TYPE ragd_replies_total counter"), "{a}");
    assert!(a.contains("# HELP ragd_replies_total "), "{a}");
}

#[test]
fn every_label_value_is_there_from_the_start() {
    let text = Metrics::new().render(Scrape::default());
    for reason in CloseReason::ALL {
        let series = format!(r#"ragd_ws_closes_total{{reason="{}"}}"#, reason.label());
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    for end in ReplyEnd::ALL {
        let series = format!(r#"ragd_replies_total{{status="{}"}}"#, end.label());
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
}

#[test]
fn scrape_values_and_the_open_socket_gauge() {
    let metrics = Metrics::new();
    let open = metrics.sockets.opened();
    let text = metrics.render(Scrape {
        write_queue: 3,
        jobs: Some(JobQueue {
            queued: 4,
            running: 1,
            oldest_due_wait: Duration::from_millis(1500),
        }),
    });
    assert_eq!(sample(&text, "ragd_ws_sockets_open"), Some(1.0));
    assert_eq!(sample(&text, "ragd_db_write_queue_depth"), Some(3.0));
    assert_eq!(sample(&text, r#"ragd_jobs{status="queued"}"#), Some(4.0));
    assert_eq!(sample(&text, r#"ragd_jobs{status="running"}"#), Some(1.0));
    assert_eq!(sample(&text, "ragd_job_queue_oldest_wait_seconds"), Some(1.5));
    drop(open);
    metrics.sockets.closed(CloseReason::TooSlow);
    let text = metrics.render(Scrape::default());
    assert_eq!(sample(&text, "ragd_ws_sockets_open"), Some(0.0));
    assert_eq!(
        sample(&text, r#"ragd_ws_closes_total{reason="too_slow"}"#),
        Some(1.0)
    );
}

#[test]
fn requests_count_by_method_route_and_status() {
    let metrics = Metrics::new();
    let took = Duration::from_millis(2);
    for _ in 0..3 {
        metrics
            .http
            .observe("GET", "/api/conversations/{id}", StatusCode::OK, took);
    }
    metrics
        .http
        .observe("GET", "/api/conversations/{id}", StatusCode::NOT_FOUND, took);
    metrics
        .http
        .observe("other", UNMATCHED, StatusCode::NOT_FOUND, took);
    let text = metrics.render(Scrape::default());
    let series = |labels: &str| format!("ragd_http_requests_total{{{labels}}}");
    assert_eq!(
        sample(
            &text,
            &series(r#"method="GET",route="/api/conversations/{id}",status="200""#)
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &series(r#"method="GET",route="/api/conversations/{id}",status="404""#)
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &series(r#"method="other",route="unmatched",status="404""#)),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"ragd_http_request_duration_seconds_count{method="GET",route="/api/conversations/{id}"}"#
        ),
        Some(4.0)
    );
}
