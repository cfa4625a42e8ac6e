//! Bodies on a watched connection: a request body that must keep coming
//! ([`TimedBody`]: 408 when it stalls or trickles), and a response body that
//! ends its request's time on the connection when it is dropped
//! ([`tracked`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use super::Limits;
use super::watch::Watch;

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct BodyTooSlow;

/// Whether `err`, or an error it wraps, is a [`BodyTooSlow`].
pub fn body_too_slow(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<BodyTooSlow>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// A request body that fails with [`BodyTooSlow`] when no data arrives for
/// `body_timeout`, or when any window of `body_timeout` brought less than
/// `min_body_rate` per second: a fast burst followed by a trickle is cut off
/// at the end of the first slow window, so one byte every few seconds can
/// never hold an upload open for hours.
pub struct TimedBody {
    inner: Body,
    /// The window being counted, and the bytes it brought so far.
    window_start: Instant,
    window_bytes: u64,
    idle: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    min_rate: u64,
}

impl TimedBody {
    pub fn new(inner: Body, limits: &Limits) -> TimedBody {
        TimedBody {
            inner,
            window_start: Instant::now(),
            window_bytes: 0,
            idle: None,
            timeout: limits.body_timeout,
            min_rate: limits.min_body_rate,
        }
    }

    /// Counts `bytes` that arrived `now`; `false` when a window that ended
    /// brought too little.
    fn arrived(&mut self, bytes: usize, now: Instant) -> bool {
        self.window_bytes = self.window_bytes.saturating_add(bytes as u64);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < self.timeout {
            return true;
        }
        let needed = self.min_rate as f64 * elapsed.as_secs_f64();
        if (self.window_bytes as f64) < needed {
            return false;
        }
        self.window_start = now;
        self.window_bytes = 0;
        true
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                let size = frame.data_ref().map_or(0, Bytes::len);
                if !this.arrived(size, now) {
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))));
                }
                if let Some(idle) = &mut this.idle {
                    idle.as_mut().reset(now + this.timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Tells the watch that a request is done when dropped.
pub struct Finished(pub Arc<Watch>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// `body`, holding `finished` until it is dropped (written whole, or dropped
/// with the connection): then its request's time on the connection ends.
pub fn tracked(body: Body, finished: Finished) -> Body {
    Body::new(body.map_frame(move |frame| {
        let _held = &finished;
        frame
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(timeout_ms: u64, min_rate: u64) -> TimedBody {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_millis(timeout_ms),
            min_body_rate: min_rate,
            max_connections: 1,
            max_connections_per_ip: 1,
        };
        TimedBody::new(Body::empty(), &limits)
    }

    #[test]
    fn a_burst_does_not_buy_a_trickle() {
        let mut b = body(1_000, 1_000);
        let start = Instant::now();
        // 1 MB at once: the first window is more than paid for...
        assert!(b.arrived(1_000_000, start));
        assert!(b.arrived(1, start + Duration::from_millis(1_100)));
        // ...but the next window brings one byte a second.
        assert!(b.arrived(1, start + Duration::from_millis(1_600)));
        assert!(!b.arrived(1, start + Duration::from_millis(2_200)));
    }

    #[test]
    fn a_steady_body_passes_window_after_window() {
        let mut b = body(1_000, 1_000);
        let start = Instant::now();
        for n in 1..100u64 {
            assert!(b.arrived(200, start + Duration::from_millis(100 * n)), "{n}");
        }
    }
}
