//! The handles each part of the server counts with, grouped by part, and
//! the label values each metric takes (one handle per value, registered up
//! front so that every series shows from the start, at 0).

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

/// A set of label values, each with its own handle (`Self as usize`).
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl $name {
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

labels! {
    /// Why a socket ended (`ragd_ws_closes_total{reason}`): the close code
    /// the server sent, or `client` when it sent none (the client closed
    /// it or the connection broke).
    CloseReason {
        Client => "client",
        Shutdown => "shutdown",
        Idle => "idle",
        TooBig => "too_big",
        TokenExpired => "token_expired",
        Revoked => "revoked",
        TooSlow => "too_slow",
    }
}

labels! {
    /// How a parse attempt ended (`ragd_job_attempts_total{outcome}`).
    Attempt {
        Succeeded => "succeeded",
        /// Failed; the job is queued again with backoff.
        Retry => "retry",
        /// The disk was full; the job waits without using up a retry.
        Wait => "wait",
        /// Failed for good (permanent, crash loop, out of retries).
        Failed => "failed",
        /// Taken back: its lease expired, or the server stopped or restarted.
        Rescued => "rescued",
    }
}

labels! {
    /// The final status of a reply (`ragd_replies_total{status}`);
    /// `interrupted` is `error` with the error `interrupted`.
    ReplyEnd {
        Done => "done",
        Error => "error",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
    }
}

/// Handles of the realtime side.
#[derive(Clone)]
pub struct Sockets {
    pub(super) open: Gauge,
    pub(super) delivered: Counter,
    pub(super) closes: [Counter; CloseReason::ALL.len()],
}

impl Sockets {
    /// Handles that count nothing (unit tests of the session).
    pub fn noop() -> Sockets {
        Sockets {
            open: Gauge::noop(),
            delivered: Counter::noop(),
            closes: CloseReason::ALL.map(|_| Counter::noop()),
        }
    }

    /// Counts an open socket until the guard is dropped.
    pub fn opened(&self) -> OpenSocket {
        self.open.increment(1.0);
        OpenSocket(self.open.clone())
    }

    pub fn delivered(&self, events: u64) {
        self.delivered.increment(events);
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].increment(1);
    }
}

/// One open socket in `ragd_ws_sockets_open`.
pub struct OpenSocket(Gauge);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Handles of the document worker.
#[derive(Clone)]
pub struct Jobs {
    pub(super) attempts: [Counter; Attempt::ALL.len()],
    pub(super) seconds: [Histogram; Attempt::ALL.len()],
}

impl Jobs {
    /// An attempt ended; `took` from its claim, when known.
    pub fn attempt_ended(&self, outcome: Attempt, took: Option<Duration>) {
        self.attempts[outcome as usize].increment(1);
        if let Some(took) = took {
            self.seconds[outcome as usize].record(took.as_secs_f64());
        }
    }

    /// Attempts taken back by a sweep.
    pub fn rescued(&self, count: usize) {
        self.attempts[Attempt::Rescued as usize].increment(count as u64);
    }
}

/// Handles of the chat side.
#[derive(Clone)]
pub struct Replies {
    pub(super) ended: [Counter; ReplyEnd::ALL.len()],
    pub(super) seconds: Histogram,
}

impl Replies {
    /// A generation stored its outcome after `took`.
    pub fn generated(&self, end: ReplyEnd, took: Duration) {
        self.ended(end);
        self.seconds.record(took.as_secs_f64());
    }

    /// A reply ended without a generation of this process (cancelled
    /// before one started).
    pub fn ended(&self, end: ReplyEnd) {
        self.ended[end as usize].increment(1);
    }

    /// Replies marked `interrupted` by a sweep.
    pub fn interrupted(&self, count: usize) {
        self.ended[ReplyEnd::Interrupted as usize].increment(count as u64);
    }
}
