//! Load shedding on queue wait, CoDel-style: while the time connections wait in the
//! task queue (readiness to a worker picking them up) stays above `target` for a
//! whole `interval`, the server is overloaded; new requests are then refused at
//! once (503) instead of joining a queue that only grows, until a connection is
//! picked up within `target` again (the queue has drained).
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
        if wait <= self.target {
            if self.above_since.load(Ordering::Relaxed) != 0 {
                self.above_since.store(0, Ordering::Relaxed);
            }
            if self.shedding.load(Ordering::Relaxed) {
                self.shedding.store(false, Ordering::Relaxed);
                tracing::info!("load shedding ends: queue wait back under {:?}", self.target);
            }
            return;
        }
        let interval = self.interval.as_nanos() as u64;
        if last == 0 || at.saturating_sub(last) > interval {
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
        if at.saturating_sub(since) >= self.interval.as_nanos() as u64
            && !self.shedding.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "load shedding: queue wait above {:?} for {:?}; refusing new requests with 503",
                self.target,
                self.interval
            );
        }
    }

    /// Whether new requests should be refused now.
    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
        // One pickup within target: the queue drained.
        s.observe(5 * MS, t + 160 * MS);
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
