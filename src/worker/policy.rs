//! How a failed attempt ends, decided from the failure and what the job has
//! used up: retried with backoff while retries remain, failed at once when
//! it can never work, failed as a crash loop after two crashes, or left
//! waiting without cost when the disk is full. Pure: no clock, no I/O.

use std::time::Duration;

use rand::Rng;

use crate::db::jobs::{Counts, End};

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// May work later: retried with backoff while retries remain.
    Transient(String),
    /// Can never work (corrupt, encrypted, no text, too large): fails now.
    Permanent(String),
    /// The parser process died or ran out of time: retried once, then the
    /// job fails as `crash_loop`.
    Crash(String),
    /// No space left: the job waits without using up an attempt.
    DiskFull(String),
}

/// Crashes after which a job fails as `crash_loop`.
const CRASHES: i64 = 2;
/// Backoff never waits longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The timing a decision needs: now, the backoff before retry `n`, and how
/// long a full disk makes a job wait (all in ms).
pub struct Timing<B: Fn(i64) -> i64> {
    pub now: i64,
    pub backoff: B,
    pub disk_full_wait: i64,
}

/// How an attempt that failed with `failure` ends, given what its job has
/// used up.
pub fn decide<B: Fn(i64) -> i64>(failure: &Failure, counts: Counts, timing: &Timing<B>) -> End {
    let crashed = matches!(failure, Failure::Crash(_));
    match failure {
        Failure::Permanent(m) => End::Fail {
            attempt_error: m.clone(),
            error: m.clone(),
            crashed,
        },
        Failure::DiskFull(m) => End::Wait {
            error: m.clone(),
            run_after: timing.now + timing.disk_full_wait,
        },
        Failure::Crash(m) if counts.crash_count + 1 >= CRASHES => End::Fail {
            attempt_error: m.clone(),
            error: format!("crash_loop: {m}"),
            crashed,
        },
        Failure::Transient(m) | Failure::Crash(m) if counts.retry_count < counts.max_retries => {
            let retry = counts.retry_count + 1;
            End::Retry {
                error: m.clone(),
                retry,
                crashed,
                run_after: timing.now + (timing.backoff)(retry),
            }
        }
        Failure::Transient(m) | Failure::Crash(m) => End::Fail {
            attempt_error: m.clone(),
            error: m.clone(),
            crashed,
        },
    }
}

/// Delay before retry `n` (1-based): `base * 2^(n-1)`, capped at 10 min,
/// with equal jitter (between half and all of it), in ms.
pub fn backoff(base: Duration, n: i64) -> i64 {
    let exp = u32::try_from(n.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = base.saturating_mul(2u32.saturating_pow(exp)).min(MAX_BACKOFF);
    let full_ms = i64::try_from(full.as_millis()).unwrap_or(i64::MAX).max(1);
    full_ms / 2 + rand::rng().random_range(0..=full_ms / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(retry_count: i64, crash_count: i64) -> Counts {
        Counts {
            retry_count,
            max_retries: 3,
            crash_count,
        }
    }

    const TIMING: Timing<fn(i64) -> i64> = Timing {
        now: 1_000,
        backoff: |n| n * 100,
        disk_full_wait: 30_000,
    };

    #[test]
    fn transient_failures_retry_with_backoff_until_the_retries_run_out() {
        let failure = Failure::Transient("busy".into());
        assert_eq!(
            decide(&failure, counts(0, 0), &TIMING),
            End::Retry {
                error: "busy".into(),
                retry: 1,
                crashed: false,
                run_after: 1_100
            }
        );
        assert_eq!(
            decide(&failure, counts(2, 0), &TIMING),
            End::Retry {
                error: "busy".into(),
                retry: 3,
                crashed: false,
                run_after: 1_300
            }
        );
        assert_eq!(
            decide(&failure, counts(3, 0), &TIMING),
            End::Fail {
                attempt_error: "busy".into(),
                error: "busy".into(),
                crashed: false
            }
        );
    }

    #[test]
    fn a_permanent_failure_fails_at_once_and_a_full_disk_waits_for_free() {
        let corrupt = Failure::Permanent("corrupt: bad".into());
        assert!(matches!(
            decide(&corrupt, counts(0, 0), &TIMING),
            End::Fail { .. }
        ));
        let full = Failure::DiskFull("disk full".into());
        assert_eq!(
            decide(&full, counts(3, 1), &TIMING),
            End::Wait {
                error: "disk full".into(),
                run_after: 31_000
            },
            "even with no retry left"
        );
    }

    #[test]
    fn a_second_crash_is_a_crash_loop() {
        let crash = Failure::Crash("killed by signal 9".into());
        assert!(matches!(
            decide(&crash, counts(0, 0), &TIMING),
            End::Retry {
                crashed: true,
                retry: 1,
                ..
            }
        ));
        assert_eq!(
            decide(&crash, counts(1, 1), &TIMING),
            End::Fail {
                attempt_error: "killed by signal 9".into(),
                error: "crash_loop: killed by signal 9".into(),
                crashed: true
            }
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(10);
        for n in 1..=4 {
            let full = 10_000 * 2i64.pow(u32::try_from(n - 1).unwrap_or(0));
            let d = backoff(base, n);
            assert!(d >= full / 2 && d <= full, "retry {n}: {d}");
        }
        assert!(backoff(base, 40) <= 600_000);
    }
}
