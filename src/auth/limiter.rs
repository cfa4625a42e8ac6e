//! Failed-login limiter (API.md "Auth"): 10 failures for one (email, client
//! IP) pair, or 50 from one client IP, within 15 minutes lock that pair (or
//! IP) until the window passes. Only failures count; a success clears the
//! pair. In memory: a restart forgives, which is acceptable for a limiter.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_PAIR: usize = 10;
pub const MAX_PER_IP: usize = 50;
/// Keys tracked before expired ones are swept, bounding memory under attack.
const SWEEP_AT: usize = 10_000;

#[derive(Default)]
pub struct LoginLimiter {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    pairs: HashMap<(String, IpAddr), VecDeque<Instant>>,
    ips: HashMap<IpAddr, VecDeque<Instant>>,
}

impl LoginLimiter {
    /// `Err(seconds)` when this attempt must be refused, with how long until
    /// the oldest counted failure leaves the window.
    pub fn check(&self, email: &str, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let pair = state
            .pairs
            .get_mut(&(email.to_owned(), ip))
            .map(|q| retry_after(q, MAX_PER_PAIR, now));
        let by_ip = state.ips.get_mut(&ip).map(|q| retry_after(q, MAX_PER_IP, now));
        match pair.flatten().into_iter().chain(by_ip.flatten()).max() {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, email: &str, ip: IpAddr) {
        let now = Instant::now();
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if state.pairs.len() + state.ips.len() > SWEEP_AT {
            state.pairs.retain(|_, q| prune(q, now));
            state.ips.retain(|_, q| prune(q, now));
        }
        push(
            state.pairs.entry((email.to_owned(), ip)).or_default(),
            MAX_PER_PAIR,
            now,
        );
        push(state.ips.entry(ip).or_default(), MAX_PER_IP, now);
    }

    pub fn record_success(&self, email: &str, ip: IpAddr) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.pairs.remove(&(email.to_owned(), ip));
    }
}

/// Drops failures older than the window; true while any remain.
fn prune(failures: &mut VecDeque<Instant>, now: Instant) -> bool {
    prune_older(failures, WINDOW, now)
}

fn prune_older(failures: &mut VecDeque<Instant>, window: Duration, now: Instant) -> bool {
    while failures.front().is_some_and(|t| now.duration_since(*t) >= window) {
        failures.pop_front();
    }
    !failures.is_empty()
}

fn retry_after(failures: &mut VecDeque<Instant>, max: usize, now: Instant) -> Option<u64> {
    retry_after_in(failures, max, WINDOW, now)
}

fn retry_after_in(
    failures: &mut VecDeque<Instant>,
    max: usize,
    window: Duration,
    now: Instant,
) -> Option<u64> {
    prune_older(failures, window, now);
    if failures.len() < max {
        return None;
    }
    let oldest = failures[failures.len() - max];
    let left = window.saturating_sub(now.duration_since(oldest));
    Some(left.as_secs_f64().ceil().max(1.0) as u64)
}

fn push(failures: &mut VecDeque<Instant>, max: usize, now: Instant) {
    prune(failures, now);
    failures.push_back(now);
    while failures.len() > max {
        failures.pop_front();
    }
}

/// Registrations per client IP: at most `max` an hour (0: no limit), so one
/// address cannot create accounts (and spend the hashing threads) without
/// end. In memory, like the login limiter.
pub struct RegistrationLimiter {
    max: usize,
    ips: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

const REGISTRATION_WINDOW: Duration = Duration::from_secs(60 * 60);

/// The address registrations are counted by: an IPv4 address, or an IPv6
/// address's /64 (one subscriber's network, whose addresses are free to it).
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
    }
}

impl RegistrationLimiter {
    pub fn new(max_per_hour: u32) -> RegistrationLimiter {
        RegistrationLimiter {
            max: usize::try_from(max_per_hour).unwrap_or(usize::MAX),
            ips: Mutex::default(),
        }
    }

    /// Counts an attempt from `ip`; `Err(seconds)` when it is one too many,
    /// with how long until the oldest counted one leaves the hour.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        if ips.len() > SWEEP_AT {
            ips.retain(|_, q| prune_older(q, REGISTRATION_WINDOW, now));
        }
        let attempts = ips.entry(network_of(ip)).or_default();
        if let Some(wait) = retry_after_in(attempts, self.max, REGISTRATION_WINDOW, now) {
            return Err(wait);
        }
        attempts.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_lock_the_pair_but_not_another_ip() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..MAX_PER_PAIR {
            assert!(limiter.check("x@example.com", a).is_ok());
            limiter.record_failure("x@example.com", a);
        }
        let wait = limiter.check("x@example.com", a).expect_err("locked");
        assert!(wait > 0 && wait <= WINDOW.as_secs());
        assert!(limiter.check("x@example.com", b).is_ok());
        assert!(limiter.check("y@example.com", a).is_ok());
    }

    #[test]
    fn registrations_are_counted_per_ip_within_the_hour() {
        let limiter = RegistrationLimiter::new(3);
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        let b: IpAddr = "203.0.113.10".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.attempt(a).is_ok());
        }
        let wait = limiter.attempt(a).expect_err("the fourth is refused");
        assert!(wait > 0 && wait <= 3600, "{wait}");
        assert!(limiter.attempt(b).is_ok(), "another IP is not affected");
        // An IPv6 network's addresses share one count.
        let v6 = RegistrationLimiter::new(1);
        assert!(v6.attempt("2001:db8::1".parse().unwrap()).is_ok());
        assert!(v6.attempt("2001:db8::ffff:2".parse().unwrap()).is_err());
        assert!(v6.attempt("2001:db8:0:1::1".parse().unwrap()).is_ok());
        let unlimited = RegistrationLimiter::new(0);
        for _ in 0..100 {
            assert!(unlimited.attempt(a).is_ok());
        }
    }

    #[test]
    fn fifty_failures_lock_the_ip_and_success_clears_only_the_pair() {
        let limiter = LoginLimiter::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for i in 0..MAX_PER_IP {
            limiter.record_failure(&format!("u{i}@example.com"), ip);
        }
        assert!(limiter.check("new@example.com", ip).is_err());

        let other: IpAddr = "198.51.100.8".parse().unwrap();
        for _ in 0..3 {
            limiter.record_failure("z@example.com", other);
        }
        limiter.record_success("z@example.com", other);
        assert!(limiter.check("z@example.com", other).is_ok());
    }
}
