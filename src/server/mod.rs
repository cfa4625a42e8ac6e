//! The HTTP server: ragd's own accept loop over hyper's HTTP/1.1, so that
//! no client can hold a connection open by sending nothing, by sending its
//! request head or body a byte at a time, by idling between requests or by
//! not reading its response, and so that open connections have a ceiling,
//! in all and per client address (docs/API.md, "Connections").
//!
//! `watch` follows each connection's phase and deadline; `body` holds the
//! request body's timer and the response body that ends a request.

mod body;
mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

pub use body::body_too_slow;
use body::{Finished, TimedBody, tracked};
use watch::{Watch, Watched};

/// The largest request head, request line included (431 above it).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The limits of each connection (flags of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest time to a request head's end: from the accept for a new
    /// connection, from the head's first byte on a kept-alive one.
    pub header_timeout: Duration,
    /// Longest wait for the next request on an open connection.
    pub idle_timeout: Duration,
    /// Longest a response write may wait for the client to read.
    pub write_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// The least a request body must bring per second, counted over each
    /// window of `body_timeout`.
    pub min_body_rate: u64,
    /// HTTP connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed at
    /// once. Trusted proxies are not limited.
    pub max_connections_per_ip: usize,
}

/// How to stop: `stopping` starts a graceful shutdown (no new requests are
/// read; those in flight finish), `abort` drops every connection left.
pub struct Stop {
    pub stopping: CancellationToken,
    pub abort: CancellationToken,
}

/// Serves `router` on `listener` until `stop.stopping` is cancelled, then
/// waits until every connection has finished its requests (or was dropped
/// by `stop.abort`, which the caller cancels after its grace period).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, trusted: Vec<IpNet>, stop: Stop) {
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = PerIp {
        counts: Arc::default(),
        max: limits.max_connections_per_ip.max(1),
        trusted: Arc::new(trusted),
    };
    let Stop { stopping, abort } = stop;
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
        let Some(slot) = per_ip.take(peer.ip()) else {
            tracing::debug!(%peer, "too many connections from one address; closing");
            continue;
        };
        // Every response and frame is written whole and flushed at once:
        // Nagle's algorithm would only hold the next small write back until
        // the peer's (possibly delayed) ACK arrives.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let (router, stopping, abort) = (router.clone(), stopping.clone(), abort.clone());
        connections.spawn(async move {
            tokio::select! {
                () = connection(tcp, peer, router, limits, stopping) => {}
                () = abort.cancelled() => {}
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Open connections per client address.
#[derive(Clone)]
struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
    trusted: Arc<Vec<IpNet>>,
}

/// One connection's place in its address's count; freed when dropped.
struct Slot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: Option<IpAddr>,
}

impl PerIp {
    fn take(&self, ip: IpAddr) -> Option<Slot> {
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            return Some(Slot {
                counts: Arc::clone(&self.counts),
                ip: None,
            });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: Arc::clone(&self.counts),
            ip: Some(ip),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
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
                    tracing::debug!(%peer, "closing a connection that was idle, slow to send its request or not reading");
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
            Ok(response.map(|body| tracked(body, finished)))
        })
    }
}
