//! Single flight: however many requests miss one key at once, one fetch runs and
//! the others wait for it.
//!
//! [`Flights`] maps a key to the waiters of its one fetch. The first to
//! [`join`](Flights::join) a key starts the flight and must run the fetch; later
//! ones only add themselves; [`land`](Flights::land) ends the flight and hands
//! back every waiter, so the caller resumes each with the result. A background
//! refresh joins without a waiter. Invariant: a key has at most one flight, and
//! every waiter added is handed back exactly once, by `land`.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;

pub struct Flights<K, W> {
    inner: Mutex<HashMap<K, Vec<W>>>,
}

impl<K: Hash + Eq, W> Default for Flights<K, W> {
    fn default() -> Self {
        Flights {
            inner: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, W> Flights<K, W> {
    /// Joins the flight for `key` (with `waiter`, or none for a background
    /// refresh). True when this started the flight: the caller must run the fetch
    /// and then `land` it.
    pub fn join(&self, key: K, waiter: Option<W>) -> bool {
        let mut inner = self.inner.lock();
        match inner.get_mut(&key) {
            Some(waiters) => {
                waiters.extend(waiter);
                false
            }
            None => {
                inner.insert(key, waiter.into_iter().collect());
                true
            }
        }
    }

    /// Ends the flight for `key`: its waiters, in the order they joined.
    pub fn land<Q>(&self, key: &Q) -> Vec<W>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.lock().remove(key).unwrap_or_default()
    }

    /// Flights in the air.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_joiner_flies_and_everyone_lands_together() {
        let f: Flights<String, u32> = Flights::default();
        assert!(f.join("a".into(), Some(1)));
        assert!(!f.join("a".into(), Some(2)));
        assert!(!f.join("a".into(), None));
        assert!(f.join("b".into(), Some(3)));
        assert_eq!(f.len(), 2);
        assert_eq!(f.land("a"), vec![1, 2]);
        // Landed: the next miss starts a new flight.
        assert!(f.join("a".into(), Some(4)));
        assert_eq!(f.land("b"), vec![3]);
        assert_eq!(f.land("a"), vec![4]);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_background_refresh_flies_alone_and_requests_may_join_it() {
        let f: Flights<&str, u32> = Flights::default();
        assert!(f.join("k", None));
        assert!(!f.join("k", Some(7)));
        assert_eq!(f.land("k"), vec![7]);
        assert!(f.land("k").is_empty());
    }
}
