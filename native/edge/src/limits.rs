//! The request-rate and concurrency part of `keyguard.domain.limits.KeyCounters` (sliding
//! window of 60 one-second buckets; leases for requests in flight) and `deny` for
//! `rpm`/`concurrency`. Thread-safe. Token and budget limits are never counted here: keys with
//! those go to the core.
//!
//! Per key, as `KeyCounters.reserve` with a zero estimate: expire leases that ran out
//! (`DEFAULT_LEASE_S` = 900 s), then the rpm check (`total + 1 > rpm`, Retry-After from
//! `window_retry_after`), then concurrency (`in flight >= limit`, Retry-After 1 s); admission
//! counts the request in second `int(now)` and takes a lease. [`RateLimiter::release`] is
//! `settle(lease, 0, 0)`. State lives in 16 mutex-guarded shards (short critical sections);
//! a key with nothing in flight and no request in the last `60 + IDLE_MARGIN_S` seconds is
//! forgotten (it would count nothing), so memory follows the keys in use.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// `WINDOW_S`.
pub const WINDOW_S: i64 = 60;
/// `DEFAULT_LEASE_S`.
pub const DEFAULT_LEASE_S: f64 = 900.0;
/// Idle keys are dropped only this long after their last counted second has left the window,
/// so a wall clock stepping back by less than this finds the same counts Python would.
pub const IDLE_MARGIN_S: i64 = 600;
const SHARDS: usize = 16;

/// What admission took; hand it back to [`RateLimiter::release`] when the request ends.
#[derive(Debug)]
pub struct Lease {
    pub key_id: String,
    pub id: u64,
}

/// A denial: the 429's message (as `domain.limits.deny`), `code` and Retry-After seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    pub message: String,
    pub code: &'static str,
    pub retry_after: f64,
}

#[derive(Debug, Default)]
struct Counters {
    /// second -> requests admitted in it (`SlidingWindow.buckets`)
    requests: BTreeMap<i64, u64>,
    /// lease id -> lease_until (unix seconds)
    inflight: HashMap<u64, f64>,
    /// no lease runs out before this (a lower bound, as Python's `next_expiry`)
    next_expiry: f64,
}

impl Counters {
    fn new() -> Counters {
        Counters { next_expiry: f64::INFINITY, ..Default::default() }
    }

    /// `KeyCounters.expire`: drop leases whose time ran out (a zero estimate: nothing to charge).
    fn expire(&mut self, ts: f64) {
        if ts < self.next_expiry {
            return;
        }
        self.inflight.retain(|_, until| !(*until <= ts));
        self.next_expiry = self.inflight.values().fold(f64::INFINITY, |m, &u| if u < m { u } else { m });
    }

    /// `SlidingWindow.prune`: drop seconds at least a window old or more than a window ahead.
    fn prune(&mut self, now_s: i64) {
        let oldest = now_s.saturating_sub(WINDOW_S);
        let newest = now_s.saturating_add(WINDOW_S);
        let fits = match (self.requests.first_key_value(), self.requests.last_key_value()) {
            (Some((&lo, _)), Some((&hi, _))) => lo > oldest && hi <= newest,
            _ => true,
        };
        if !fits {
            self.requests.retain(|&s, _| !(s <= oldest || s > newest));
        }
    }

    /// Old seconds only (keys without rpm: Python never prunes those, they only matter after a
    /// clock step back; future seconds are kept, as Python would).
    fn prune_old(&mut self, now_s: i64) {
        let oldest = now_s.saturating_sub(WINDOW_S);
        while let Some((&lo, _)) = self.requests.first_key_value() {
            if lo > oldest {
                break;
            }
            self.requests.pop_first();
        }
    }

    fn idle(&self, now_s: i64) -> bool {
        self.inflight.is_empty()
            && self
                .requests
                .last_key_value()
                .map_or(true, |(&hi, _)| hi <= now_s.saturating_sub(WINDOW_S + IDLE_MARGIN_S))
    }
}

/// `window_retry_after(buckets, now, limit, need)`.
fn window_retry_after(buckets: &BTreeMap<i64, u64>, now: f64, limit: u64, need: u64) -> f64 {
    let mut total: u64 = buckets.values().sum();
    if total + need <= limit {
        return 0.0;
    }
    for (&sec, &amount) in buckets {
        total -= amount;
        if total + need <= limit {
            let wait = sec.saturating_add(WINDOW_S) as f64 - now;
            return if wait > 0.0 { wait } else { 0.0 };
        }
    }
    WINDOW_S as f64
}

/// `deny`'s Retry-After floor: `max(retry_after, 0.001)`.
fn floor_retry(r: f64) -> f64 {
    if 0.001 > r {
        0.001
    } else {
        r
    }
}

/// `deny("rpm", ...)`.
pub fn deny_rpm(key_id: &str, rpm: u32, retry_after: f64) -> Denied {
    Denied {
        message: format!("rate limit reached for key {key_id}: {rpm} requests per minute"),
        code: "rate_limit_exceeded",
        retry_after: floor_retry(retry_after),
    }
}

/// `deny("concurrency", ...)`.
pub fn deny_concurrency(key_id: &str, max_concurrency: u32, retry_after: f64) -> Denied {
    Denied {
        message: format!("too many concurrent requests for key {key_id} (limit {max_concurrency})"),
        code: "rate_limit_exceeded",
        retry_after: floor_retry(retry_after),
    }
}

struct Shard {
    keys: HashMap<String, Counters>,
    next_sweep: i64,
}

pub struct RateLimiter {
    shards: Vec<Mutex<Shard>>,
    next_id: AtomicU64,
}

fn shard_of(key_id: &str) -> usize {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) % SHARDS
}

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { keys: HashMap::new(), next_sweep: i64::MIN })).collect(),
            next_id: AtomicU64::new(1),
        }
    }

    fn shard(&self, key_id: &str) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[shard_of(key_id)].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `reserve` with no token/cost estimate; `now` is unix seconds (wall clock, as Python).
    pub fn admit(&self, key_id: &str, rpm: Option<u32>, max_concurrency: Option<u32>, now: f64) -> Result<Lease, Denied> {
        let ts = now;
        let sec = ts as i64; // int(ts): truncation, as Python
        let mut shard = self.shard(key_id);
        let shard = &mut *shard;
        // forget idle keys every minute (or when the clock stepped back a lot)
        if sec >= shard.next_sweep || sec < shard.next_sweep.saturating_sub(2 * WINDOW_S) {
            shard.keys.retain(|_, c| !c.idle(sec));
            shard.next_sweep = sec.saturating_add(WINDOW_S);
        }
        if !shard.keys.contains_key(key_id) {
            shard.keys.insert(key_id.to_string(), Counters::new());
        }
        let c = shard.keys.get_mut(key_id).expect("inserted above");
        c.expire(ts);
        match rpm {
            Some(limit) => {
                c.prune(sec);
                let total: u64 = c.requests.values().sum();
                if total + 1 > u64::from(limit) {
                    let wait = window_retry_after(&c.requests, ts, u64::from(limit), 1);
                    return Err(deny_rpm(key_id, limit, wait));
                }
            }
            None => c.prune_old(sec),
        }
        if let Some(limit) = max_concurrency {
            if c.inflight.len() as u64 >= u64::from(limit) {
                return Err(deny_concurrency(key_id, limit, 1.0));
            }
        }
        let lease_until = ts + DEFAULT_LEASE_S;
        *c.requests.entry(sec).or_insert(0) += 1;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        c.inflight.insert(id, lease_until);
        if lease_until < c.next_expiry {
            c.next_expiry = lease_until;
        }
        Ok(Lease { key_id: key_id.to_string(), id })
    }

    pub fn release(&self, lease: Lease) {
        let mut shard = self.shard(&lease.key_id);
        if let Some(c) = shard.keys.get_mut(&lease.key_id) {
            c.inflight.remove(&lease.id);
        }
    }

    /// `(requests in the window at now, in flight)` of a key, without changing it (tests).
    pub fn usage(&self, key_id: &str, now: f64) -> (u64, usize) {
        let sec = now as i64;
        let shard = self.shard(key_id);
        match shard.keys.get(key_id) {
            None => (0, 0),
            Some(c) => {
                let n = c.requests.iter().filter(|(&s, _)| s > sec.saturating_sub(WINDOW_S) && s <= sec.saturating_add(WINDOW_S)).map(|(_, &a)| a).sum();
                let inflight = c.inflight.values().filter(|&&u| !(u <= now)).count();
                (n, inflight)
            }
        }
    }

    /// How many keys have state (tests and metrics).
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).keys.len()).sum()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_800_000_000.25;

    #[test]
    fn rpm_window_and_retry_after() {
        let l = RateLimiter::new();
        assert!(l.admit("k", Some(2), None, T0).is_ok());
        assert!(l.admit("k", Some(2), None, T0 + 10.0).is_ok());
        let d = l.admit("k", Some(2), None, T0 + 20.0).unwrap_err();
        assert_eq!(d.message, "rate limit reached for key k: 2 requests per minute");
        assert_eq!(d.code, "rate_limit_exceeded");
        // the first request's second (T0 floored) leaves the window 60 s after it started
        assert_eq!(d.retry_after, 1_800_000_060.0 - (T0 + 20.0));
        assert!(l.admit("k", Some(2), None, T0 + 59.0).is_err());
        assert!(l.admit("k", Some(2), None, T0 + 59.75).is_ok());
        assert!(l.admit("other", Some(2), None, T0 + 20.0).is_ok());
        let z = l.admit("z", Some(0), None, T0).unwrap_err();
        assert_eq!(z.retry_after, 60.0);
    }

    #[test]
    fn concurrency_and_release() {
        let l = RateLimiter::new();
        let a = l.admit("k", None, Some(1), T0).unwrap();
        let d = l.admit("k", None, Some(1), T0).unwrap_err();
        assert_eq!(d.message, "too many concurrent requests for key k (limit 1)");
        assert_eq!(d.retry_after, 1.0);
        l.release(a);
        let b = l.admit("k", None, Some(1), T0).unwrap();
        // a lease runs out after 900 s
        assert!(l.admit("k", None, Some(1), T0 + 899.0).is_err());
        assert!(l.admit("k", None, Some(1), T0 + 900.0).is_ok());
        l.release(b); // already expired: nothing happens
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let l = RateLimiter::new();
        for i in 0..100 {
            let lease = l.admit(&format!("k{i}"), Some(5), Some(5), T0).unwrap();
            l.release(lease);
        }
        let _held = l.admit("busy", None, Some(5), T0).unwrap();
        assert_eq!(l.keys(), 101);
        for i in 0..SHARDS * 4 {
            let _ = l.admit(&format!("late{i}"), Some(5), None, T0 + 61.0 + IDLE_MARGIN_S as f64);
        }
        assert!(l.keys() < 101 + SHARDS * 4 - 50, "{}", l.keys());
        assert_eq!(l.usage("busy", T0 + 1.0).1, 1);
    }

    #[test]
    fn odd_clocks_do_not_panic() {
        let l = RateLimiter::new();
        for now in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300, -0.5, 0.0] {
            let _ = l.admit("k", Some(3), Some(3), now);
            let _ = l.admit("k", None, None, now);
            let _ = l.usage("k", now);
        }
    }

    #[test]
    fn threads() {
        let l = std::sync::Arc::new(RateLimiter::new());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..100).filter(|_| l.admit("k", Some(150), None, T0).is_ok()).count())
            })
            .collect();
        let admitted: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 150);
    }
}
