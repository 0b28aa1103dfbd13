//! `keyguard.gateway.throttle.FailedAuthThrottle`: a token bucket of failed authentications
//! per source (IPv4 address, IPv6 /64). Thread-safe (the edge's event-loop threads share one).
//!
//! Same arithmetic as Python (IEEE doubles, `min`/`max` with Python's tie rules) and the same
//! pruning past `max_sources` (full buckets first, then the oldest-inserted). The address is
//! keyed as given, as Python does: pass the resolved (normalised) client address, since an
//! IPv4-mapped IPv6 address is an IPv6 source (its /64 is `::/64`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Python's default `max_sources`.
pub const MAX_SOURCES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    /// the upper 64 bits (the /64)
    V6(u64),
}

fn source(ip: IpAddr) -> Source {
    match ip {
        IpAddr::V4(v4) => Source::V4(u32::from(v4)),
        IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: f64,
    /// insertion order (Python dicts keep it; pruning forgets the oldest first)
    seq: u64,
}

#[derive(Default)]
struct Inner {
    buckets: HashMap<Source, Bucket>,
    seq: u64,
}

pub struct FailedAuthThrottle {
    burst: f64,
    rate: f64,
    max: usize,
    inner: Mutex<Inner>,
}

/// Python `min(a, b)`: `a` unless `b < a`.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// Python `max(a, b)`: `a` unless `b > a`.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

impl FailedAuthThrottle {
    /// Panics where Python raises ValueError (burst < 1 or rate <= 0; also a NaN rate).
    pub fn new(burst: u32, rate: f64) -> FailedAuthThrottle {
        Self::with_max_sources(burst, rate, MAX_SOURCES)
    }

    /// `FailedAuthThrottle(burst, rate, max_sources)`.
    pub fn with_max_sources(burst: u32, rate: f64, max_sources: usize) -> FailedAuthThrottle {
        assert!(burst >= 1 && rate > 0.0, "burst must be >= 1 and rate > 0");
        FailedAuthThrottle {
            burst: f64::from(burst),
            rate,
            max: max_sources,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn tokens(&self, bucket: Option<&Bucket>, now: f64) -> f64 {
        match bucket {
            None => self.burst,
            Some(b) => py_min(self.burst, b.tokens + (now - b.last) * self.rate),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // a panic elsewhere while holding the lock leaves consistent data (plain values)
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds until `ip` may try again (0.0: it may now); `now` is monotonic seconds.
    pub fn retry_after(&self, ip: IpAddr, now: f64) -> f64 {
        let inner = self.lock();
        if inner.buckets.is_empty() {
            return 0.0;
        }
        let tokens = self.tokens(inner.buckets.get(&source(ip)), now);
        drop(inner);
        if tokens >= 1.0 {
            0.0
        } else {
            (1.0 - tokens) / self.rate
        }
    }

    /// One failed authentication from `ip` at `now`.
    pub fn failure(&self, ip: IpAddr, now: f64) {
        let src = source(ip);
        let mut inner = self.lock();
        let tokens = self.tokens(inner.buckets.get(&src), now);
        let value = py_max(tokens - 1.0, -self.burst);
        let inner = &mut *inner;
        match inner.buckets.get_mut(&src) {
            Some(b) => {
                b.tokens = value;
                b.last = now;
            }
            None => {
                inner.seq += 1;
                inner.buckets.insert(src, Bucket { tokens: value, last: now, seq: inner.seq });
            }
        }
        if inner.buckets.len() > self.max {
            self.prune(inner, now);
        }
    }

    fn prune(&self, inner: &mut Inner, now: f64) {
        let burst = self.burst;
        inner.buckets.retain(|_, b| !(self.tokens(Some(b), now) >= burst));
        if inner.buckets.len() > self.max {
            let mut order: Vec<(u64, Source)> = inner.buckets.iter().map(|(s, b)| (b.seq, *s)).collect();
            order.sort_unstable_by_key(|&(seq, _)| seq);
            let extra = inner.buckets.len() - self.max;
            for (_, s) in order.into_iter().take(extra) {
                inner.buckets.remove(&s);
            }
        }
    }

    /// How many sources have a bucket (for tests and metrics).
    pub fn sources(&self) -> usize {
        self.lock().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bucket_empties_and_refills() {
        let t = FailedAuthThrottle::new(3, 0.5);
        let a = ip("1.2.3.4");
        assert_eq!(t.retry_after(a, 0.0), 0.0);
        for _ in 0..3 {
            t.failure(a, 10.0);
        }
        assert_eq!(t.retry_after(a, 10.0), 2.0);
        assert_eq!(t.retry_after(a, 11.0), 1.0);
        assert_eq!(t.retry_after(a, 12.0), 0.0);
        assert_eq!(t.retry_after(ip("1.2.3.5"), 10.0), 0.0);
    }

    #[test]
    fn ipv6_by_64_and_floor() {
        let t = FailedAuthThrottle::new(1, 1.0);
        for _ in 0..10 {
            t.failure(ip("2001:db8::1"), 0.0);
        }
        // floor at -burst: two tokens to earn back
        assert_eq!(t.retry_after(ip("2001:db8::ffff:1"), 0.0), 2.0);
        assert_eq!(t.retry_after(ip("2001:db8:0:1::1"), 0.0), 0.0);
    }

    #[test]
    fn prunes_full_then_oldest() {
        let t = FailedAuthThrottle::with_max_sources(2, 1.0, 2);
        t.failure(ip("1.0.0.1"), 0.0);
        t.failure(ip("1.0.0.2"), 0.0);
        t.failure(ip("1.0.0.1"), 0.5);
        t.failure(ip("1.0.0.3"), 0.5); // 3 > 2: none full at 0.5, oldest (1.0.0.1) goes
        assert_eq!(t.sources(), 2);
        assert_eq!(t.retry_after(ip("1.0.0.1"), 0.5), 0.0);
        assert!(t.retry_after(ip("1.0.0.2"), 0.5) == 0.0); // 1.5 tokens
        t.failure(ip("1.0.0.4"), 10.0); // everything full at 10: all but the new one go
        assert_eq!(t.sources(), 1);
    }

    #[test]
    fn shared_between_threads() {
        let t = std::sync::Arc::new(FailedAuthThrottle::new(1000, 0.001));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        t.failure(ip("9.9.9.9"), 1.0);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(t.retry_after(ip("9.9.9.9"), 1.0), 1.0 / 0.001);
    }
}
