//! Rate limiting by GCRA (the generic cell rate algorithm): a table from key to one
//! number, the key's theoretical arrival time (TAT), bounded in memory.
//!
//! A [`Rate`] of `quota` per `window` earns one unit every `window / quota`
//! (the emission interval `T`) and holds at most `quota` units. A request costing
//! `c` conforms when, after charging it, the TAT is no more than one window ahead
//! of now: `max(tat, now) + c·T <= now + quota·T`. So an idle key may spend its
//! whole quota at once, and a key that keeps to `quota` per `window` (evenly or in
//! one burst per window) is never refused; the cost is that a window which opens
//! on a full bucket can see up to `2·quota − 1` requests (the burst, then the
//! units earned back inside the window). A sliding log would hold exactly `quota`
//! in every window, but needs `quota` timestamps per key (100,000 for the largest
//! tier); GCRA needs 8 bytes and one comparison, which is why it is used.
//!
//! Why a table of one `u64` per key is enough: a key whose TAT is in the past is
//! indistinguishable from a key never seen, so idle keys are dropped at any time
//! without changing an answer. Each shard sweeps them when it has doubled since
//! its last sweep, and at `max_keys` it sweeps or, failing that, evicts an
//! arbitrary key (that key gets a fresh bucket: the one way the bound on memory
//! can make the limiter lenient, and only once every key in a shard is active).
//!
//! Nothing here reads a clock: callers pass `now` in nanoseconds since
//! the limiter's creation ([`Limiter::now`]), so every rule is unit-tested with
//! made-up times.

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

const NANOS: u64 = 1_000_000_000;
/// Shards of a table: enough that 256 workers rarely meet on one lock.
const SHARDS: usize = 64;
/// A shard smaller than this is never swept early.
const MIN_SWEEP: usize = 1024;

/// A quota per window, as GCRA parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub quota: u64,
    /// The window in whole seconds, as the `w` of `RateLimit-Policy` shows it.
    pub window_secs: u64,
    /// Nanoseconds to earn one unit (at least 1).
    emission: u64,
}

impl Rate {
    /// `quota` (at least 1) per `window` (at least 1 ns).
    pub fn new(quota: u64, window: Duration) -> Rate {
        let quota = quota.max(1);
        let window_ns = (window.as_nanos() as u64).max(1);
        Rate {
            quota,
            window_secs: window.as_secs().max(1),
            emission: (window_ns / quota).max(1),
        }
    }

    /// Nanoseconds to earn one unit.
    pub fn emission_ns(&self) -> u64 {
        self.emission
    }

    /// How far ahead of now the TAT may be after a charge: one full bucket.
    pub fn capacity(&self) -> u64 {
        self.quota.saturating_mul(self.emission)
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub allowed: bool,
    /// Units left after this request (when refused: left before it).
    pub remaining: u64,
    /// Seconds until the bucket is full again (rounded up).
    pub reset_secs: u64,
    /// When refused: seconds until the same request would conform (at least 1).
    pub retry_after_secs: u64,
}

/// Key → TAT, sharded, bounded by `max_keys`. Keys are hashed with foldhash,
/// seeded at random per table: a few instructions for a u64 where SipHash takes
/// over a hundred, and still keyed, so addresses cannot be picked to collide.
pub(crate) struct Limiter {
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    max_per_shard: usize,
}

struct Shard {
    tat: HashMap<u64, u64, RandomState>,
    /// Size after the last sweep: the next sweep comes at twice that.
    swept_len: usize,
}

impl Limiter {
    /// A table for `max_keys` active keys. Keys spread over the shards by hash, so
    /// each shard takes a quarter more than its even share before it evicts: the
    /// table holds at most `1.25 · max_keys` keys.
    pub fn new(max_keys: usize) -> Limiter {
        let hasher = RandomState::default();
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tat: HashMap::with_hasher(hasher.clone()),
                    swept_len: 0,
                })
            })
            .collect();
        Limiter {
            epoch: Instant::now(),
            hasher,
            shards,
            max_per_shard: (max_keys.div_ceil(SHARDS) * 5 / 4).max(1),
        }
    }

    /// Nanoseconds since this limiter's epoch: the `now` its methods take.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // The map hashes again with the same keyed hasher; its low bits pick the
        // bucket, the high bits here pick the shard.
        let h = self.hasher.hash_one(key);
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    /// Charges `cost` units (capped at the quota, so every cost can pass on a full
    /// bucket) to `key` if the request conforms; the verdict says either way.
    pub fn check(&self, key: u64, rate: &Rate, cost: u64, now: u64) -> Verdict {
        let mut shard = self.shard(key).lock();
        let tat = shard.tat.get(&key).copied().unwrap_or(0);
        let verdict = judge(tat, rate, cost, now);
        if verdict.allowed {
            let new_tat = charged(tat, rate, cost, now);
            shard.insert(key, new_tat, now, self.max_per_shard);
        }
        verdict
    }

    /// The verdict `check` would give, without charging anything.
    pub fn peek(&self, key: u64, rate: &Rate, cost: u64, now: u64) -> Verdict {
        let tat = self.shard(key).lock().tat.get(&key).copied().unwrap_or(0);
        judge(tat, rate, cost, now)
    }

    /// Keys held (active or not yet swept).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().tat.len()).sum()
    }
}

impl Shard {
    fn insert(&mut self, key: u64, tat: u64, now: u64, max: usize) {
        let len = self.tat.len();
        if !self.tat.contains_key(&key) && (len >= max || len >= (2 * self.swept_len).max(MIN_SWEEP)) {
            // An idle key (TAT in the past) answers like an absent one.
            self.tat.retain(|_, t| *t > now);
            self.swept_len = self.tat.len();
            if self.tat.len() >= max {
                if let Some(victim) = self.tat.keys().next().copied() {
                    self.tat.remove(&victim);
                }
            }
        }
        self.tat.insert(key, tat);
    }
}

/// The TAT after charging `cost` (capped at the quota).
fn charged(tat: u64, rate: &Rate, cost: u64, now: u64) -> u64 {
    tat.max(now)
        .saturating_add(cost.min(rate.quota).saturating_mul(rate.emission))
}

/// GCRA's decision for a key whose TAT is `tat` (0: never seen).
fn judge(tat: u64, rate: &Rate, cost: u64, now: u64) -> Verdict {
    let start = tat.max(now);
    let after = charged(tat, rate, cost, now);
    let limit = now.saturating_add(rate.capacity());
    if after <= limit {
        Verdict {
            allowed: true,
            remaining: (limit - after) / rate.emission,
            reset_secs: (after - now).div_ceil(NANOS),
            retry_after_secs: 0,
        }
    } else {
        Verdict {
            allowed: false,
            remaining: (limit - start) / rate.emission,
            reset_secs: (start - now).div_ceil(NANOS),
            retry_after_secs: (after - limit).div_ceil(NANOS).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NANOS;

    fn per_minute(n: u64) -> Rate {
        Rate::new(n, Duration::from_secs(60))
    }

    #[test]
    fn a_full_quota_passes_at_once_and_one_more_is_refused() {
        let l = Limiter::new(1000);
        let r = per_minute(10);
        let now = 5 * SEC;
        for i in 0..10 {
            let v = l.check(1, &r, 1, now);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
        }
        let v = l.check(1, &r, 1, now);
        assert!(!v.allowed);
        assert_eq!(v.remaining, 0);
        // One unit is earned back every 6 s.
        assert_eq!(v.retry_after_secs, 6);
        assert_eq!(v.reset_secs, 60);
        // Other keys are untouched.
        assert!(l.check(2, &r, 1, now).allowed);
    }

    #[test]
    fn a_client_at_exactly_the_rate_is_never_refused() {
        let l = Limiter::new(1000);
        let r = per_minute(60);
        // One request a second for ten minutes, after spending the whole burst.
        for _ in 0..60 {
            assert!(l.check(7, &r, 1, 0).allowed);
        }
        for s in 1..600 {
            assert!(l.check(7, &r, 1, s * SEC).allowed, "second {s}");
            assert!(!l.check(7, &r, 1, s * SEC).allowed, "a second one in second {s}");
        }
    }

    #[test]
    fn refill_is_smooth_not_all_at_the_end_of_a_window() {
        let l = Limiter::new(1000);
        let r = per_minute(60);
        for _ in 0..60 {
            assert!(l.check(3, &r, 1, 0).allowed);
        }
        assert!(!l.check(3, &r, 1, SEC / 2).allowed);
        // Half a window later, half the quota is back.
        let v = l.peek(3, &r, 1, 30 * SEC);
        assert!(v.allowed);
        assert_eq!(v.remaining, 29);
    }

    #[test]
    fn costs_are_charged_and_capped_at_the_quota() {
        let l = Limiter::new(1000);
        let r = per_minute(10);
        assert_eq!(l.check(1, &r, 4, 0).remaining, 6);
        assert!(!l.check(1, &r, 7, 0).allowed);
        assert!(l.check(1, &r, 6, 0).allowed);
        // A cost above the quota passes on a full bucket (as the whole quota).
        assert!(l.check(2, &r, 50, 0).allowed);
        assert!(!l.check(2, &r, 1, 0).allowed);
    }

    #[test]
    fn peek_charges_nothing() {
        let l = Limiter::new(1000);
        let r = per_minute(1);
        assert!(l.peek(1, &r, 1, 0).allowed);
        assert!(l.peek(1, &r, 1, 0).allowed);
        assert!(l.check(1, &r, 1, 0).allowed);
        assert!(!l.peek(1, &r, 1, 0).allowed);
    }

    #[test]
    fn idle_keys_are_swept_and_the_table_stays_bounded() {
        let l = Limiter::new(SHARDS * 4);
        let r = per_minute(10);
        // Far more keys than fit, each idle again a second later.
        for k in 0..100_000u64 {
            l.check(k, &r, 1, k * SEC);
        }
        assert!(l.len() <= SHARDS * 5, "{} keys held", l.len());
        // Every key still conforms: none was left with a bucket it did not earn.
        assert!(l.check(5, &r, 1, 200_000 * SEC).allowed);
    }

    #[test]
    fn sub_second_windows_and_huge_quotas_do_not_overflow() {
        let r = Rate::new(5, Duration::from_millis(100));
        assert_eq!(r.window_secs, 1);
        let l = Limiter::new(10);
        for _ in 0..5 {
            assert!(l.check(1, &r, 1, 0).allowed);
        }
        assert!(!l.check(1, &r, 1, 0).allowed);
        assert!(l.check(1, &r, 1, 100_000_000).allowed);
        let big = Rate::new(u64::MAX, Duration::from_secs(3600));
        assert!(l.check(2, &big, 1, u64::MAX / 4).allowed);
    }

    /// A million keys fit in 100 MB (resident memory grows by at most that while
    /// they go in). `scripts/bench-limits.sh` runs it in release with
    /// `--nocapture` for the figures; its times mean nothing in a debug build.
    #[test]
    fn one_million_keys_memory_and_cost() {
        fn rss_bytes() -> u64 {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
            let pages: u64 = statm.split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            pages * 4096
        }
        const KEYS: u64 = 1_000_000;
        let before = rss_bytes();
        let l = Limiter::new(KEYS as usize);
        let r = Rate::new(1000, Duration::from_secs(60));
        let start = Instant::now();
        for k in 0..KEYS {
            l.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), &r, 1, 1);
        }
        let insert = start.elapsed();
        let after = rss_bytes();
        assert_eq!(l.len() as u64, KEYS);
        let start = Instant::now();
        let mut allowed = 0u64;
        for k in 0..KEYS {
            allowed += u64::from(l.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), &r, 1, 2).allowed);
        }
        let hit = start.elapsed();
        assert_eq!(allowed, KEYS);
        let mb = (after - before) as f64 / 1e6;
        println!(
            "limiter: {KEYS} keys held in {mb:.1} MB ({:.0} bytes/key); new key {:.0} ns, known key {:.0} ns (one thread)",
            (after - before) as f64 / KEYS as f64,
            insert.as_nanos() as f64 / KEYS as f64,
            hit.as_nanos() as f64 / KEYS as f64,
        );
        assert!(mb <= 100.0, "{mb} MB for a million keys");
    }
}
