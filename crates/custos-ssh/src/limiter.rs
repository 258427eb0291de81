//! Rate limiting of failed authentications per source address and per user name.
//!
//! After `max_failures` failures inside `window`, further attempts from that address (or for
//! that user) are refused outright until `lockout` has passed, even with a correct credential,
//! so password guessing is slowed to a crawl without locking the account in the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Limits for failed authentications.
#[derive(Clone, Debug)]
pub struct AuthLimits {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            max_failures: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Counter {
    failures: u32,
    first: Option<Instant>,
    blocked_until: Option<Instant>,
}

impl Counter {
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }

    fn fail(&mut self, now: Instant, l: &AuthLimits) {
        match self.first {
            Some(f) if now.duration_since(f) <= l.window => self.failures += 1,
            _ => {
                self.first = Some(now);
                self.failures = 1;
            }
        }
        if self.failures >= l.max_failures {
            self.blocked_until = Some(now + l.lockout);
        }
    }
}

/// Why an attempt is refused before its credential is checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Blocked {
    Source,
    User,
}

/// Failure counters. Entries are pruned as they expire so memory stays bounded by the number
/// of recently failing sources and names.
#[derive(Default)]
pub struct AuthLimiter {
    limits: AuthLimits,
    by_source: HashMap<IpAddr, Counter>,
    by_user: HashMap<String, Counter>,
}

const MAX_ENTRIES: usize = 100_000;

impl AuthLimiter {
    pub fn new(limits: AuthLimits) -> AuthLimiter {
        AuthLimiter {
            limits,
            ..Default::default()
        }
    }

    /// Whether an attempt may proceed now.
    pub fn check(&self, source: IpAddr, user: &str, now: Instant) -> Result<(), Blocked> {
        if self.by_source.get(&source).is_some_and(|c| c.blocked(now)) {
            return Err(Blocked::Source);
        }
        if self.by_user.get(user).is_some_and(|c| c.blocked(now)) {
            return Err(Blocked::User);
        }
        Ok(())
    }

    /// Counts a failed attempt.
    pub fn fail(&mut self, source: IpAddr, user: &str, now: Instant) {
        self.prune(now);
        let l = self.limits.clone();
        self.by_source.entry(source).or_default().fail(now, &l);
        if self.by_user.len() < MAX_ENTRIES || self.by_user.contains_key(user) {
            self.by_user
                .entry(user.to_string())
                .or_default()
                .fail(now, &l);
        }
    }

    /// A success clears the user's and the source's failure counts.
    pub fn succeed(&mut self, source: IpAddr, user: &str) {
        self.by_source.remove(&source);
        self.by_user.remove(user);
    }

    fn prune(&mut self, now: Instant) {
        if self.by_source.len() + self.by_user.len() < 1024 {
            return;
        }
        let l = self.limits.clone();
        let live = |c: &Counter| {
            c.blocked(now) || c.first.is_some_and(|f| now.duration_since(f) <= l.window)
        };
        self.by_source.retain(|_, c| live(c));
        self.by_user.retain(|_, c| live(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AuthLimits {
        AuthLimits {
            max_failures: 3,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(30),
        }
    }

    #[test]
    fn blocks_after_max_failures_and_releases_after_lockout() {
        let mut l = AuthLimiter::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            l.fail(ip, "alice", t0);
        }
        assert_eq!(l.check(ip, "alice", t0), Ok(()));
        l.fail(ip, "alice", t0);
        assert_eq!(l.check(ip, "alice", t0), Err(Blocked::Source));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(l.check(other, "alice", t0), Err(Blocked::User));
        assert_eq!(l.check(other, "bob", t0), Ok(()));
        assert_eq!(l.check(ip, "alice", t0 + Duration::from_secs(31)), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let mut l = AuthLimiter::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        l.fail(ip, "a", t0);
        l.fail(ip, "a", t0);
        l.fail(ip, "a", t0 + Duration::from_secs(11));
        assert_eq!(l.check(ip, "a", t0 + Duration::from_secs(11)), Ok(()));
    }

    #[test]
    fn success_clears() {
        let mut l = AuthLimiter::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        l.fail(ip, "a", t0);
        l.fail(ip, "a", t0);
        l.succeed(ip, "a");
        l.fail(ip, "a", t0);
        assert_eq!(l.check(ip, "a", t0), Ok(()));
    }
}
