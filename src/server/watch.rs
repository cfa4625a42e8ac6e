//! Where one connection is, for its deadline: waiting for its next request
//! (`--idle-timeout`), receiving a request head (`--header-timeout`, also
//! for a new connection's first request), serving (no limit, unless a
//! response cannot be written for `--write-timeout`). The socket wrapper
//! [`Watched`] tells the watch when bytes come in and when writes stall.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Limits;

pub struct Watch {
    state: Mutex<Phase>,
    /// Set while no request is being served and none has begun: the next
    /// byte read starts a request head (kept outside the lock so that reads
    /// of a busy connection cost one atomic load).
    awaiting_head: AtomicBool,
    /// Set while a write waits for the peer to read (so that writes that
    /// go through cost one atomic load).
    write_blocked: AtomicBool,
    pub changed: Notify,
}

struct Phase {
    /// Requests being served (their responses not yet fully written).
    in_flight: usize,
    /// When the connection opened or last became idle, or when the request
    /// head being received began.
    since: Instant,
    head_started: bool,
    /// Since when a write has waited for the peer, if one does.
    blocked_since: Option<Instant>,
}

impl Watch {
    /// A new connection: its first request head is due within
    /// `--header-timeout` of the accept, so a client that connects and
    /// sends nothing holds a connection no longer than a slow one.
    pub fn new() -> Watch {
        Watch {
            state: Mutex::new(Phase {
                in_flight: 0,
                since: Instant::now(),
                head_started: true,
                blocked_since: None,
            }),
            awaiting_head: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection must be closed if nothing changes; `None` while
    /// it serves requests whose responses are not stuck.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let phase = self.lock();
        if let Some(blocked) = phase.blocked_since {
            return Some(blocked + limits.write_timeout);
        }
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

    /// A write could not go through: the peer is not reading.
    fn write_stalled(&self) {
        if self.write_blocked.swap(true, Ordering::AcqRel) {
            return;
        }
        self.lock().blocked_since = Some(Instant::now());
        self.changed.notify_one();
    }

    /// A write went through. (The deadline only moves later, so the
    /// connection's loop needs no wake: it re-checks when it fires.)
    fn write_moved(&self) {
        if self.write_blocked.swap(false, Ordering::AcqRel) {
            self.lock().blocked_since = None;
        }
    }

    pub fn request_started(&self) {
        let mut phase = self.lock();
        phase.in_flight += 1;
        phase.head_started = false;
        self.awaiting_head.store(false, Ordering::Release);
        drop(phase);
        self.changed.notify_one();
    }

    pub fn request_finished(&self) {
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

/// The connection's socket, telling its watch when bytes arrive and when
/// writes stall.
pub struct Watched {
    pub inner: TcpStream,
    pub watch: Arc<Watch>,
}

impl Watched {
    fn wrote<T>(&self, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &polled {
            Poll::Pending => self.watch.write_stalled(),
            Poll::Ready(_) => self.watch.write_moved(),
        }
        polled
    }
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
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
