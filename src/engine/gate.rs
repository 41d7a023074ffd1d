//! A counting gate for expensive work (argon2 hashing) that never makes a caller
//! wait: a caller either takes a permit or parks its work item in the gate's FIFO.
//! Releasing a permit while items wait hands the permit straight to the oldest one,
//! so a flood of new arrivals cannot overtake parked work.
//!
//! The gate does not run anything; the worker decides what "parked work" is (a whole
//! connection whose request is still in its buffer) and requeues what `release` hands
//! back. Permits are not tied to threads: a [`Permit`] calls `release` once, when it
//! is dropped.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

/// Whoever takes a released permit back: hands it to the oldest parked item (and
/// resumes that item) or returns it to the gate.
pub(crate) trait ReleasePermit: Send + Sync {
    fn release_permit(self: Arc<Self>);
}

/// One permit, held by whatever waited for it. Dropping it releases the permit,
/// whatever path drops it, so a permit is never leaked.
pub(crate) struct Permit(Arc<dyn ReleasePermit>);

impl Permit {
    pub fn new(to: Arc<dyn ReleasePermit>) -> Permit {
        Permit(to)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        Arc::clone(&self.0).release_permit();
    }
}

pub struct Gate<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    available: usize,
    parked: VecDeque<T>,
}

impl<T> Gate<T> {
    /// A gate with `permits` permits (at least one).
    pub fn new(permits: usize) -> Self {
        Gate {
            inner: Mutex::new(Inner {
                available: permits.max(1),
                parked: VecDeque::new(),
            }),
        }
    }

    /// Items parked waiting for a permit (for metrics).
    pub fn waiting(&self) -> usize {
        self.inner.lock().parked.len()
    }

    /// Takes a permit, or hands `item` back to be parked with `park`.
    #[cfg(test)]
    fn try_acquire(&self, item: T) -> Result<T, T> {
        let mut inner = self.inner.lock();
        if inner.available > 0 && inner.parked.is_empty() {
            inner.available -= 1;
            Ok(item)
        } else {
            Err(item)
        }
    }

    /// Takes a permit for `item` or parks it until one is released. Returns the item
    /// when it got a permit at once, `None` when it was parked.
    pub fn acquire_or_park(&self, item: T) -> Option<T> {
        let mut inner = self.inner.lock();
        if inner.available > 0 && inner.parked.is_empty() {
            inner.available -= 1;
            Some(item)
        } else {
            inner.parked.push_back(item);
            None
        }
    }

    /// Gives a permit back. When an item is parked, the permit passes to it and the
    /// item is returned: the caller must resume it, and it now holds a permit.
    #[must_use = "a returned item holds the released permit and must be resumed"]
    pub fn release(&self) -> Option<T> {
        let mut inner = self.inner.lock();
        match inner.parked.pop_front() {
            Some(item) => Some(item),
            None => {
                inner.available += 1;
                None
            }
        }
    }

    /// Number of parked items.
    #[cfg(test)]
    fn parked(&self) -> usize {
        self.inner.lock().parked.len()
    }

    /// Removes every parked item (used at shutdown), returning their permits to none.
    pub fn drain_parked(&self) -> Vec<T> {
        self.inner.lock().parked.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_run_out_then_items_park() {
        let g = Gate::new(2);
        assert_eq!(g.acquire_or_park(1), Some(1));
        assert_eq!(g.acquire_or_park(2), Some(2));
        assert_eq!(g.acquire_or_park(3), None);
        assert_eq!(g.parked(), 1);
    }

    #[test]
    fn release_hands_the_permit_to_the_oldest_parked_item() {
        let g = Gate::new(1);
        assert_eq!(g.acquire_or_park("a"), Some("a"));
        assert_eq!(g.acquire_or_park("b"), None);
        assert_eq!(g.acquire_or_park("c"), None);
        // A newcomer cannot overtake parked work even though a release is coming.
        assert_eq!(g.try_acquire("d"), Err("d"));
        assert_eq!(g.release(), Some("b"));
        assert_eq!(g.release(), Some("c"));
        assert_eq!(g.release(), None);
        // The single permit is free again.
        assert_eq!(g.try_acquire("e"), Ok("e"));
    }

    #[test]
    fn permits_are_conserved() {
        let g = Gate::new(3);
        for _ in 0..3 {
            assert!(g.acquire_or_park(()).is_some());
        }
        for _ in 0..3 {
            assert!(g.release().is_none());
        }
        for _ in 0..3 {
            assert!(g.acquire_or_park(()).is_some());
        }
        assert!(g.acquire_or_park(()).is_none());
    }
}
