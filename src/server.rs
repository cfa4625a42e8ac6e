//! The HTTP server: ragd's own accept loop over hyper's HTTP/1.1, so that
//! no client can hold a connection open by sending nothing, by sending its
//! request head or body a byte at a time, or by idling between requests,
//! and so that open connections have a ceiling (docs/API.md, "Connections").
//!
//! Per connection, a watch follows where it is: waiting for a request
//! (`--idle-timeout`), receiving a request head (`--header-timeout`, from
//! its first byte), or serving requests (no limit here: a request's body
//! has its own, see [`TimedBody`], and a sync chat turn may wait for a slow
//! model). A connection past its deadline is closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

/// The largest request head, request line included (431 above it).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The limits of each connection (flags of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest time from a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// Longest wait for the next request on an open connection.
    pub idle_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Once a body has taken `body_timeout`, the least average rate it must
    /// keep (bytes per second).
    pub min_body_rate: u64,
    /// HTTP connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stopping` is cancelled, then lets
/// every connection finish its requests (graceful: no new request is read)
/// and returns once all are closed. The caller bounds that wait.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stopping: CancellationToken) {
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopping.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off a little
                    // instead of spinning; a reset peer is nothing.
                    tracing::debug!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping.cancelled() => break,
        };
        // Every response and frame is written whole and flushed at once:
        // Nagle's algorithm would only hold the next small write back until
        // the peer's (possibly delayed) ACK arrives.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let (router, stopping) = (router.clone(), stopping.clone());
        connections.spawn(async move {
            connection(tcp, peer, router, limits, stopping).await;
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    stopping: CancellationToken,
) {
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        watch: Arc::clone(&watch),
    });
    let service = TowerToHyperService::new(Served {
        router,
        peer,
        watch: Arc::clone(&watch),
        limits,
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = watch.deadline(&limits);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(error = %err, %peer, "connection ended with an error");
                }
                return;
            }
            () = stopping.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until(deadline) => {
                if watch.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing a connection that was idle or too slow to send its request");
                    return;
                }
            }
            () = watch.changed.notified() => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where a connection is, for its deadline.
struct Watch {
    state: Mutex<Phase>,
    /// Set while no request is being served and none has begun: the next
    /// byte read starts a request head (kept outside the lock so that reads
    /// of a busy connection cost one atomic load).
    awaiting_head: AtomicBool,
    changed: Notify,
}

struct Phase {
    /// Requests being served (their responses not yet fully written).
    in_flight: usize,
    /// When the connection last became idle, or when the request head
    /// being received began.
    since: Instant,
    head_started: bool,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            state: Mutex::new(Phase {
                in_flight: 0,
                since: Instant::now(),
                head_started: false,
            }),
            awaiting_head: AtomicBool::new(true),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection must be closed, if nothing changes; `None`
    /// while it serves a request.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let phase = self.lock();
        match (phase.in_flight, phase.head_started) {
            (0, true) => Some(phase.since + limits.header_timeout),
            (0, false) => Some(phase.since + limits.idle_timeout),
            _ => None,
        }
    }

    /// Bytes arrived: on an idle connection, a request head begins.
    fn read_some(&self) {
        if !self.awaiting_head.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut phase = self.lock();
        if phase.in_flight == 0 && !phase.head_started {
            phase.head_started = true;
            phase.since = Instant::now();
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut phase = self.lock();
        phase.in_flight += 1;
        phase.head_started = false;
        self.awaiting_head.store(false, Ordering::Release);
        drop(phase);
        self.changed.notify_one();
    }

    fn request_finished(&self) {
        let mut phase = self.lock();
        phase.in_flight = phase.in_flight.saturating_sub(1);
        if phase.in_flight == 0 {
            phase.since = Instant::now();
            self.awaiting_head.store(true, Ordering::Release);
        }
        drop(phase);
        self.changed.notify_one();
    }
}

/// The connection's socket, telling its watch when bytes arrive.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router as one connection serves it: with the peer's address (as
/// `ConnectInfo`), the request body timed, and the watch told when each
/// request starts and when its response has been written.
#[derive(Clone)]
struct Served {
    router: Router,
    peer: SocketAddr,
    watch: Arc<Watch>,
    limits: Limits,
}

impl Service<Request<hyper::body::Incoming>> for Served {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<hyper::body::Incoming>) -> Self::Future {
        self.watch.request_started();
        let finished = Finished(Arc::clone(&self.watch));
        let limits = self.limits;
        let mut request = request.map(|body| Body::new(TimedBody::new(Body::new(body), &limits)));
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // The request counts as served until its whole response body
            // has been written (or dropped with the connection).
            Ok(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _finished: finished,
                })
            }))
        })
    }
}

/// Tells the watch that a request is done when dropped.
struct Finished(Arc<Watch>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that ends its request's time on the connection when it
/// is dropped.
struct Tracked {
    body: Body,
    _finished: Finished,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

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

/// A request body that fails with [`BodyTooSlow`] when no data arrives
/// for `body_timeout`, or when, after that long, it has arrived slower than
/// `min_body_rate` on average (so one byte every few seconds cannot hold an
/// upload open for hours).
pub struct TimedBody {
    inner: Body,
    started: Instant,
    received: u64,
    idle: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    min_rate: u64,
}

impl TimedBody {
    pub fn new(inner: Body, limits: &Limits) -> TimedBody {
        TimedBody {
            inner,
            started: Instant::now(),
            received: 0,
            idle: None,
            timeout: limits.body_timeout,
            min_rate: limits.min_body_rate,
        }
    }

    fn too_slow(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.started);
        elapsed > self.timeout && (self.received as f64) < self.min_rate as f64 * elapsed.as_secs_f64()
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
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                if this.too_slow(now) {
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
