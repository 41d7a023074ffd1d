//! Load shedding on queue wait, CoDel-style: while the time connections wait in the
//! task queue (readiness to a worker picking them up) stays above `target` for a
//! whole `interval`, the server is overloaded. While overloaded, a new request is
//! refused at once (503) when its connection waited more than `target`, instead of
//! joining a queue that only grows; one that was picked up within `target` is
//! served. The queue so settles around `target` and the workers keep serving
//! while they shed. (The earlier rule refused every new request until one pickup
//! came within `target`, then admitted every one: with one worker at twice its
//! capacity that kept 0.74 of the peak goodput, this rule 0.89; bench-shed.sh.)
//! Overload ends when every pickup has been within `target` for a whole
//! `interval`, or the queue ran empty.
//!
//! A short burst that queues briefly sheds nothing: only a standing queue does,
//! which is what CoDel calls bad queue. The caller reports every pickup's wait;
//! the hot path (waits under target, not shedding) is two relaxed atomic loads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Shedder {
    target: Duration,
    interval: Duration,
    /// Reference point for `above_since`.
    epoch: Instant,
    /// Nanoseconds after `epoch` since when every wait was above target; 0: the
    /// last wait was not.
    above_since: AtomicU64,
    /// While shedding: nanoseconds after `epoch` since when every wait was within
    /// target; 0: the last wait was not.
    below_since: AtomicU64,
    /// Nanoseconds after `epoch` of the last pickup (0: none yet). A gap longer
    /// than `interval` between pickups means the queue ran empty: a new run of
    /// slow pickups starts from scratch (CoDel resets when the queue empties).
    last: AtomicU64,
    shedding: AtomicBool,
}

impl Shedder {
    /// A shedder with these thresholds; a zero `target` never sheds.
    pub fn new(target: Duration, interval: Duration) -> Shedder {
        Shedder {
            target,
            interval,
            epoch: Instant::now(),
            above_since: AtomicU64::new(0),
            below_since: AtomicU64::new(0),
            last: AtomicU64::new(0),
            shedding: AtomicBool::new(false),
        }
    }

    /// Reports that a connection waited `wait` in the queue, picked up at `now`.
    pub fn observe(&self, wait: Duration, now: Instant) {
        if self.target.is_zero() {
            return;
        }
        // At least 1, so that 0 keeps meaning "none".
        let at = (now.saturating_duration_since(self.epoch).as_nanos() as u64).max(1);
        let last = self.last.swap(at, Ordering::Relaxed);
        let interval = self.interval.as_nanos() as u64;
        let idle = last == 0 || at.saturating_sub(last) > interval;
        if wait <= self.target {
            if self.above_since.load(Ordering::Relaxed) != 0 {
                self.above_since.store(0, Ordering::Relaxed);
            }
            if self.shedding.load(Ordering::Relaxed) {
                let since =
                    match self
                        .below_since
                        .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
                    {
                        Ok(_) => at,
                        Err(since) => since,
                    };
                if (idle || at.saturating_sub(since) >= interval)
                    && self.shedding.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(
                        "load shedding ends: queue wait within {:?} for {:?}",
                        self.target,
                        self.interval
                    );
                }
            }
            return;
        }
        if self.below_since.load(Ordering::Relaxed) != 0 {
            self.below_since.store(0, Ordering::Relaxed);
        }
        if idle {
            // The queue ran empty since the last pickup: a new run starts here.
            self.above_since.store(at, Ordering::Relaxed);
            return;
        }
        let since = match self
            .above_since
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => at,
            Err(since) => since,
        };
        if at.saturating_sub(since) >= interval && !self.shedding.swap(true, Ordering::Relaxed) {
            self.below_since.store(0, Ordering::Relaxed);
            tracing::warn!(
                "load shedding: queue wait above {:?} for {:?}; refusing requests that waited longer with 503",
                self.target,
                self.interval
            );
        }
    }

    /// Whether the server is overloaded now.
    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// Whether a new request whose connection became ready at `queued_at` is
    /// refused: the server is overloaded and the connection waited past target.
    pub fn refuses(&self, queued_at: Instant) -> bool {
        self.is_shedding() && queued_at.elapsed() > self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A shedder (target 20 ms, interval 100 ms) that went into overload at
    /// `t + 100 ms`, after a whole interval of pickups at 40 ms; and `t`.
    fn overloaded() -> (Shedder, Instant) {
        let s = Shedder::new(20 * MS, 100 * MS);
        let t = Instant::now();
        s.observe(40 * MS, t);
        s.observe(40 * MS, t + 100 * MS);
        assert!(s.is_shedding());
        (s, t)
    }

    #[test]
    fn a_standing_queue_sheds_and_a_drained_one_stops() {
        let s = Shedder::new(20 * MS, 100 * MS);
        let t = Instant::now();
        // Above target, but not yet for a whole interval.
        s.observe(30 * MS, t);
        s.observe(50 * MS, t + 60 * MS);
        assert!(!s.is_shedding());
        s.observe(40 * MS, t + 100 * MS);
        assert!(s.is_shedding(), "above target for the whole interval");
        s.observe(25 * MS, t + 150 * MS);
        assert!(s.is_shedding());
        // Pickups within target, but not yet for a whole interval: the queue
        // settles around target because requests that waited longer are refused.
        s.observe(5 * MS, t + 160 * MS);
        s.observe(5 * MS, t + 200 * MS);
        assert!(s.is_shedding());
        // One slow pickup starts the count again.
        s.observe(30 * MS, t + 210 * MS);
        s.observe(5 * MS, t + 220 * MS);
        s.observe(5 * MS, t + 300 * MS);
        assert!(s.is_shedding());
        // Within target for a whole interval: the overload is over.
        s.observe(5 * MS, t + 320 * MS);
        assert!(!s.is_shedding());
    }

    #[test]
    fn while_overloaded_only_requests_that_waited_past_target_are_refused() {
        let (s, t) = overloaded();
        let long_ago = t.checked_sub(50 * MS).expect("the clock is past 50 ms");
        let calm = Shedder::new(20 * MS, 100 * MS);
        assert!(!calm.refuses(long_ago), "not overloaded: nothing is refused");
        assert!(s.refuses(long_ago));
        assert!(
            !s.refuses(Instant::now()),
            "a connection picked up at once is served"
        );
    }

    #[test]
    fn an_idle_queue_ends_the_overload_at_once() {
        let (s, t) = overloaded();
        // No pickup for longer than an interval: the queue ran empty.
        s.observe(MS, t + 300 * MS);
        assert!(!s.is_shedding());
    }

    #[test]
    fn a_burst_that_drains_within_the_interval_sheds_nothing() {
        let s = Shedder::new(20 * MS, 100 * MS);
        let t = Instant::now();
        s.observe(80 * MS, t);
        s.observe(90 * MS, t + 50 * MS);
        s.observe(10 * MS, t + 90 * MS);
        // A new run above target starts from scratch.
        s.observe(80 * MS, t + 120 * MS);
        s.observe(80 * MS, t + 190 * MS);
        assert!(!s.is_shedding());
    }

    #[test]
    fn slow_pickups_with_the_queue_empty_in_between_shed_nothing() {
        let s = Shedder::new(20 * MS, 100 * MS);
        let t = Instant::now();
        // Each pickup is slow, but they are far apart: no standing queue.
        for i in 0..5u32 {
            s.observe(30 * MS, t + i * 500 * MS);
        }
        assert!(!s.is_shedding());
    }

    #[test]
    fn a_zero_target_never_sheds() {
        let s = Shedder::new(Duration::ZERO, 100 * MS);
        let t = Instant::now();
        s.observe(Duration::from_secs(5), t);
        s.observe(Duration::from_secs(5), t + Duration::from_secs(1));
        assert!(!s.is_shedding());
    }
}
