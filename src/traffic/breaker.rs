//! A circuit breaker: closed (everything passes, consecutive failures counted),
//! open (everything is refused at once until the reset time), half-open (exactly
//! one probe passes; its success closes the breaker, its failure opens it again).
//!
//! Failures are counted consecutively, not in a time window: a dependency that is
//! down fails every call, so N failures in a row say so whatever the traffic rate,
//! and one success in between says it is not down (a window would open on a busy
//! server for a few scattered errors, and stay shut on an idle one).
//!
//! The hot path, a closed breaker with no recent failure, reads one atomic and
//! takes no lock.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// The breaker is closed: go ahead.
    Pass,
    /// The breaker was open and its reset time has come: this call is the one
    /// probe, and its outcome must be reported.
    Probe,
}

/// The state, for reports (`/ready`, logs, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The probe went out at `since`; everyone else is refused until it reports,
    /// or until a reset period has passed without a report (a probe that hangs
    /// must not keep the breaker half-open forever): then another probe may go.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    inner: Mutex<Inner>,
    /// Closed with no failure counted: lets `admit` and `success` skip the lock.
    healthy: AtomicBool,
    /// Consecutive failures that open the breaker.
    failures_to_open: u32,
    /// How long it stays open before a probe may pass.
    reset: Duration,
    /// Times it has opened (for metrics).
    opened: AtomicU64,
    /// What it guards, for its log lines.
    name: &'static str,
}

impl Breaker {
    /// A closed breaker that opens after `failures_to_open` (at least 1)
    /// consecutive failures and lets a probe through `reset` after opening.
    pub fn new(name: &'static str, failures_to_open: u32, reset: Duration) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            healthy: AtomicBool::new(true),
            failures_to_open: failures_to_open.max(1),
            reset,
            opened: AtomicU64::new(0),
            name,
        }
    }

    /// Whether a call may go ahead now; `Err` holds how long until a probe may.
    pub fn admit(&self, now: Instant) -> Result<Admit, Duration> {
        if self.healthy.load(Ordering::Acquire) {
            return Ok(Admit::Pass);
        }
        let mut inner = self.inner.lock();
        match *inner {
            Inner::Closed { .. } => Ok(Admit::Pass),
            Inner::Open { until } if now >= until => {
                *inner = Inner::HalfOpen { since: now };
                tracing::info!("{} breaker half-open: one probe goes through", self.name);
                Ok(Admit::Probe)
            }
            Inner::Open { until } => Err(until - now),
            Inner::HalfOpen { since } if now >= since + self.reset => {
                *inner = Inner::HalfOpen { since: now };
                tracing::warn!(
                    "{} breaker: the probe never reported; another goes through",
                    self.name
                );
                Ok(Admit::Probe)
            }
            Inner::HalfOpen { since } => Err(since + self.reset - now),
        }
    }

    /// A call (or the probe) succeeded.
    pub fn success(&self) {
        if self.healthy.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.inner.lock();
        if matches!(*inner, Inner::HalfOpen { .. }) {
            tracing::info!("{} breaker closed: the probe succeeded", self.name);
        }
        if !matches!(*inner, Inner::Open { .. }) {
            // A call admitted before the breaker opened may still succeed; it
            // does not close an open breaker, only the probe does.
            *inner = Inner::Closed { failures: 0 };
            self.healthy.store(true, Ordering::Release);
        }
    }

    /// A call (or the probe) failed because of the guarded dependency.
    pub fn failure(&self, now: Instant) {
        let mut inner = self.inner.lock();
        self.healthy.store(false, Ordering::Release);
        match *inner {
            Inner::Closed { failures } if failures + 1 < self.failures_to_open => {
                *inner = Inner::Closed {
                    failures: failures + 1,
                };
            }
            Inner::Closed { .. } | Inner::HalfOpen { .. } => {
                let probe = matches!(*inner, Inner::HalfOpen { .. });
                *inner = Inner::Open {
                    until: now + self.reset,
                };
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "{} breaker open for {:?}: {}",
                    self.name,
                    self.reset,
                    if probe {
                        "the probe failed".to_string()
                    } else {
                        format!("{} consecutive failures", self.failures_to_open)
                    }
                );
            }
            // Calls admitted before it opened report late; the reset time stands.
            Inner::Open { .. } => {}
        }
    }

    /// An operator's order: open for `hold` (then probes as after a trip), or
    /// close now (failures forgotten).
    pub fn force(&self, open: Option<Duration>, now: Instant) {
        let mut inner = self.inner.lock();
        match open {
            Some(hold) => {
                *inner = Inner::Open { until: now + hold };
                self.healthy.store(false, Ordering::Release);
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{} breaker forced open for {hold:?}", self.name);
            }
            None => {
                *inner = Inner::Closed { failures: 0 };
                self.healthy.store(true, Ordering::Release);
                tracing::warn!("{} breaker forced closed", self.name);
            }
        }
    }

    pub fn state(&self) -> State {
        match *self.inner.lock() {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Times the breaker has opened since start.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESET: Duration = Duration::from_secs(2);

    #[test]
    fn consecutive_failures_open_it_and_a_success_in_between_does_not() {
        let b = Breaker::new("test", 3, RESET);
        let t = Instant::now();
        b.failure(t);
        b.failure(t);
        b.success();
        b.failure(t);
        b.failure(t);
        assert_eq!(b.state(), State::Closed, "the success broke the run");
        assert_eq!(b.admit(t), Ok(Admit::Pass));
        b.failure(t);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.opened(), 1);
        // Open: refused at once, told how long until a probe may pass.
        assert_eq!(
            b.admit(t + Duration::from_millis(500)),
            Err(Duration::from_millis(1500))
        );
    }

    #[test]
    fn after_the_reset_exactly_one_probe_passes_and_its_outcome_decides() {
        let b = Breaker::new("test", 1, RESET);
        let t = Instant::now();
        b.failure(t);
        assert_eq!(b.admit(t + RESET), Ok(Admit::Probe));
        assert_eq!(b.state(), State::HalfOpen);
        assert!(
            b.admit(t + RESET).is_err(),
            "a second call while the probe is out"
        );
        // The probe fails: open again for a whole reset period from now.
        let later = t + RESET + Duration::from_millis(10);
        b.failure(later);
        assert_eq!(b.state(), State::Open);
        assert_eq!(
            b.admit(later + RESET - Duration::from_millis(1)),
            Err(Duration::from_millis(1))
        );
        // The next probe succeeds: closed, everything passes.
        assert_eq!(b.admit(later + RESET), Ok(Admit::Probe));
        b.success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(later + RESET), Ok(Admit::Pass));
        assert_eq!(b.opened(), 2);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_a_reset_period() {
        let b = Breaker::new("test", 1, RESET);
        let t = Instant::now();
        b.failure(t);
        assert_eq!(b.admit(t + RESET), Ok(Admit::Probe));
        // It hangs: others are refused for a reset period, then one more probes.
        assert!(b.admit(t + RESET + RESET / 2).is_err());
        assert_eq!(b.admit(t + 2 * RESET), Ok(Admit::Probe));
        b.success();
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn late_reports_of_calls_admitted_before_it_opened_change_nothing() {
        let b = Breaker::new("test", 1, RESET);
        let t = Instant::now();
        b.failure(t);
        b.success();
        assert_eq!(b.state(), State::Open, "only the probe closes an open breaker");
        b.failure(t + Duration::from_secs(1));
        assert_eq!(b.admit(t + RESET), Ok(Admit::Probe), "the reset time stands");
    }

    #[test]
    fn an_operator_can_force_it_open_and_closed() {
        let b = Breaker::new("db", 3, RESET);
        let t = Instant::now();
        b.force(Some(Duration::from_secs(60)), t);
        assert_eq!(b.state(), State::Open);
        assert!(b.admit(t + Duration::from_secs(59)).is_err());
        assert_eq!(b.admit(t + Duration::from_secs(60)), Ok(Admit::Probe));
        b.force(None, t);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(t), Ok(Admit::Pass));
        assert_eq!(b.opened(), 1);
    }
}
