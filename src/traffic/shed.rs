//! Load shedding on queue wait, CoDel-style: while the time connections wait in the
//! task queue (readiness to a worker picking them up) stays above `target` for a
//! whole `interval`, the server is overloaded; new requests are then refused at
//! once (503) instead of joining a queue that only grows, until a connection is
//! picked up within `target` again (the queue has drained).
//!
//! A short burst that queues briefly sheds nothing: only a standing queue does,
//! which is what CoDel calls bad queue. The caller reports every pickup's wait;
//! the hot path (waits under target, not shedding) is one relaxed swap (the
//! time of the last pickup) and two relaxed loads, no lock.
//!
//! Under sustained overload the state flips tens of times a second (a few
//! milliseconds of refusals drain the queue, then it builds again), so the log
//! speaks of episodes, not flips: one line when shedding begins, one when it has
//! stayed off for [`QUIET`] (how long it lasted, how many flips, how many
//! requests were refused) or the server shuts down, and one every [`PROGRESS`]
//! while it goes on. Every flip of the state is made holding the episode's lock,
//! so the two always agree; the lock is taken only on a flip and on the poller's
//! tick, never on the hot path.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long shedding must stay off before an episode is over.
pub(crate) const QUIET: Duration = Duration::from_secs(1);
/// How often a long episode says it goes on.
pub(crate) const PROGRESS: Duration = Duration::from_secs(10);

/// A run of shedding, from its first flip on until it has stayed off for [`QUIET`].
#[derive(Debug, Clone, Copy)]
struct Episode {
    began: Instant,
    /// Since when shedding has been off; `None` while it is on.
    off_since: Option<Instant>,
    /// Times shedding turned on within it (the first included).
    flips: u64,
    /// The refusal count when it began.
    refused_before: u64,
    /// When it last said it goes on (or began).
    reported: Instant,
}

/// What the log says of an episode ([`Shedder::observe`] and [`Shedder::tick`]
/// return it so tests can see it without reading logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    Began,
    GoesOn {
        lasted: Duration,
        flips: u64,
        refused: u64,
    },
    /// `shutdown`: ended by shutdown rather than by [`QUIET`].
    Over {
        lasted: Duration,
        flips: u64,
        refused: u64,
        shutdown: bool,
    },
}

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
    /// Requests refused while shedding, since start.
    refused: AtomicU64,
    episode: Mutex<Option<Episode>>,
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
            refused: AtomicU64::new(0),
            episode: Mutex::new(None),
        }
    }

    /// Reports that a connection waited `wait` in the queue, picked up at `now`.
    pub fn observe(&self, wait: Duration, now: Instant) {
        if let Some(note) = self.judge(wait, now) {
            self.log(note);
        }
    }

    /// [`Shedder::observe`] without the logging: what the log would say.
    fn judge(&self, wait: Duration, now: Instant) -> Option<Note> {
        if self.target.is_zero() {
            return None;
        }
        // At least 1, so that 0 keeps meaning "none".
        let at = (now.saturating_duration_since(self.epoch).as_nanos() as u64).max(1);
        let last = self.last.swap(at, Ordering::Relaxed);
        if wait <= self.target {
            if self.above_since.load(Ordering::Relaxed) != 0 {
                self.above_since.store(0, Ordering::Relaxed);
            }
            // A load first: the hot path writes nothing and takes no lock.
            if self.shedding.load(Ordering::Relaxed) {
                let mut episode = self.episode.lock();
                if self.shedding.swap(false, Ordering::Relaxed) {
                    if let Some(e) = episode.as_mut() {
                        e.off_since = Some(now);
                    }
                }
            }
            return None;
        }
        let interval = self.interval.as_nanos() as u64;
        if last == 0 || at.saturating_sub(last) > interval {
            // The queue ran empty since the last pickup: a new run starts here.
            self.above_since.store(at, Ordering::Relaxed);
            return None;
        }
        let since = match self
            .above_since
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => at,
            Err(since) => since,
        };
        if at.saturating_sub(since) < interval || self.shedding.load(Ordering::Relaxed) {
            return None;
        }
        let mut episode = self.episode.lock();
        if self.shedding.swap(true, Ordering::Relaxed) {
            // Another worker turned it on first.
            return None;
        }
        match episode.as_mut() {
            Some(e) => {
                e.off_since = None;
                e.flips += 1;
                None
            }
            None => {
                *episode = Some(Episode {
                    began: now,
                    off_since: None,
                    flips: 1,
                    refused_before: self.refused(),
                    reported: now,
                });
                Some(Note::Began)
            }
        }
    }

    /// The poller's tick: ends an episode that has been quiet for [`QUIET`], and
    /// says every [`PROGRESS`] that a long one goes on.
    pub fn tick(&self, now: Instant) {
        if let Some(note) = self.review(now) {
            self.log(note);
        }
    }

    /// [`Shedder::tick`] without the logging: what the log would say.
    fn review(&self, now: Instant) -> Option<Note> {
        let mut episode = self.episode.lock();
        let e = episode.as_mut()?;
        let lasted = now.saturating_duration_since(e.began);
        let (flips, refused) = (e.flips, self.refused().saturating_sub(e.refused_before));
        match e.off_since {
            Some(off) if now.saturating_duration_since(off) >= QUIET => {
                let lasted = off.saturating_duration_since(e.began);
                *episode = None;
                Some(Note::Over {
                    lasted,
                    flips,
                    refused,
                    shutdown: false,
                })
            }
            _ if now.saturating_duration_since(e.reported) >= PROGRESS => {
                e.reported = now;
                Some(Note::GoesOn {
                    lasted,
                    flips,
                    refused,
                })
            }
            _ => None,
        }
    }

    /// Shutdown: ends an episode still open, so its refusals are told.
    pub fn finish(&self, now: Instant) {
        if let Some(note) = self.close(now) {
            self.log(note);
        }
    }

    /// [`Shedder::finish`] without the logging.
    fn close(&self, now: Instant) -> Option<Note> {
        let e = self.episode.lock().take()?;
        Some(Note::Over {
            lasted: e.off_since.unwrap_or(now).saturating_duration_since(e.began),
            flips: e.flips,
            refused: self.refused().saturating_sub(e.refused_before),
            shutdown: true,
        })
    }

    fn log(&self, note: Note) {
        match note {
            Note::Began => tracing::warn!(
                "load shedding begins: queue wait above {:?} for {:?}; refusing new requests with 503",
                self.target,
                self.interval
            ),
            Note::GoesOn {
                lasted,
                flips,
                refused,
            } => tracing::warn!(
                "load shedding goes on: {:.1} s so far, on {flips} times, {refused} requests refused",
                lasted.as_secs_f64()
            ),
            Note::Over {
                lasted,
                flips,
                refused,
                shutdown,
            } => {
                let why = if shutdown {
                    "the server shuts down".to_string()
                } else {
                    format!("queue wait under {:?} for {:?}", self.target, QUIET)
                };
                tracing::info!(
                    "load shedding over ({why}): it lasted {:.1} s, on {flips} times, {refused} requests refused",
                    lasted.as_secs_f64()
                )
            }
        }
    }

    /// Counts one request refused because the server is shedding.
    pub fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests refused while shedding, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
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

    /// Drives `s` from not shedding into shedding with pickups from `t` on;
    /// returns what the flip said and the time after it.
    fn flip_on(s: &Shedder, t: Instant) -> (Option<Note>, Instant) {
        assert_eq!(s.judge(30 * MS, t), None);
        let note = s.judge(40 * MS, t + 100 * MS);
        assert!(s.is_shedding());
        (note, t + 100 * MS)
    }

    #[test]
    fn an_episode_is_logged_once_however_often_shedding_flips() {
        let s = Shedder::new(20 * MS, 100 * MS);
        let t = Instant::now();
        let (began, mut now) = flip_on(&s, t);
        assert_eq!(began, Some(Note::Began));
        for _ in 0..3 {
            s.refuse();
        }
        // Four more flips off and on, each a few milliseconds apart: silent.
        for _ in 0..4 {
            assert_eq!(s.judge(5 * MS, now + 5 * MS), None);
            assert!(!s.is_shedding());
            let (note, t2) = flip_on(&s, now + 10 * MS);
            assert_eq!(note, None, "a flip within an episode says nothing");
            now = t2;
            s.refuse();
        }
        assert_eq!(s.review(now), None, "still shedding");
        // Off for good: nothing until QUIET has passed, then one line.
        let off = now + 5 * MS;
        assert_eq!(s.judge(5 * MS, off), None);
        assert_eq!(s.review(off + QUIET - MS), None);
        let over = s.review(off + QUIET);
        assert_eq!(
            over,
            Some(Note::Over {
                lasted: off - t - 100 * MS,
                flips: 5,
                refused: 7,
                shutdown: false
            })
        );
        assert_eq!(s.review(off + QUIET * 2), None, "said once");
        // The next overload is a new episode, counted from its own start.
        let (began, on) = flip_on(&s, off + QUIET * 3);
        assert_eq!(began, Some(Note::Began));
        s.refuse();
        s.refuse();
        assert_eq!(s.judge(5 * MS, on + MS), None);
        assert!(matches!(
            s.review(on + MS + QUIET),
            Some(Note::Over {
                flips: 1,
                refused: 2,
                shutdown: false,
                ..
            })
        ));
    }

    #[test]
    fn a_long_episode_says_it_goes_on_every_progress_interval() {
        let s = Shedder::new(20 * MS, 100 * MS);
        let t = Instant::now();
        let (_, on) = flip_on(&s, t);
        s.refuse();
        assert_eq!(s.review(on + PROGRESS - MS), None);
        assert_eq!(
            s.review(on + PROGRESS),
            Some(Note::GoesOn {
                lasted: PROGRESS,
                flips: 1,
                refused: 1
            })
        );
        assert_eq!(s.review(on + PROGRESS + MS), None);
        assert!(matches!(s.review(on + PROGRESS * 2), Some(Note::GoesOn { .. })));
        // Off only briefly before the next tick: the episode goes on.
        assert_eq!(s.judge(5 * MS, on + PROGRESS * 2 + MS), None);
        assert_eq!(s.review(on + PROGRESS * 2 + 2 * MS), None);
        // Shutdown tells what the open episode refused.
        assert_eq!(
            s.close(on + PROGRESS * 3),
            Some(Note::Over {
                lasted: PROGRESS * 2 + MS,
                flips: 1,
                refused: 1,
                shutdown: true
            })
        );
        assert_eq!(s.close(on + PROGRESS * 3), None);
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
