//! Group commit: items that arrive while a batch is being committed wait and go
//! into the next batch together, so N concurrent requests cost one round trip
//! instead of N.
//!
//! Nothing here blocks a submitter that does not lead. There is no committer
//! thread: a submitter that finds no commit in flight becomes the leader, takes
//! everything pending, runs the commit function outside the lock and gets every item
//! of its batch back with that item's result; an item submitted while a commit is in
//! flight stays in the batcher (`submit` returns `None`) until a later leader takes
//! it. The items are whole connections, so waiting costs no thread: the leader's
//! worker answers the batch itself, with no wake-up per request.
//!
//! Progress: a leader must call [`Batcher::lead`] once it has dealt with its batch,
//! which commits whatever arrived meanwhile unless another submitter has already
//! taken the lead. Every pending item therefore has a leader on its way.
//!
//! A leader whose batch is smaller than the previous one waits up to `gather` for
//! it to refill (PostgreSQL's commit_delay with commit_siblings, made adaptive): with
//! a steady set of clients each waiting on its own request, the first arrival after
//! a commit would otherwise commit alone while the rest pile up behind it. A lone
//! client never waits, since its previous batch had one item. The commit function
//! sees the batch in arrival order and must return one output per item, or one error
//! for all of them (nothing of a failed batch may take effect).

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Every item of a committed batch, in arrival order, with its own result.
pub type Committed<I, O, E> = Vec<(I, Result<O, E>)>;

pub struct Batcher<I> {
    state: Mutex<State<I>>,
    /// Signalled when the batch of a gathering leader reaches its target size.
    arrived: Condvar,
    /// Longest a leader waits for its batch to refill.
    gather: Duration,
}

struct State<I> {
    /// Items waiting for the next batch, in arrival order.
    pending: Vec<I>,
    committing: bool,
    /// Size of the last committed batch.
    last_batch: usize,
    /// While a leader gathers: the batch size at which it wants waking.
    gather_target: Option<usize>,
}

impl<I> Batcher<I> {
    /// A batcher whose leaders wait at most `gather` for a batch to refill.
    pub fn new(gather: Duration) -> Self {
        Batcher {
            state: Mutex::new(State {
                pending: Vec::new(),
                committing: false,
                last_batch: 0,
                gather_target: None,
            }),
            arrived: Condvar::new(),
            gather,
        }
    }

    /// Adds `item` to the next batch. When no commit is in flight the caller leads:
    /// it commits the batch with `commit` and gets every item of it back with its
    /// result (then it must call [`lead`](Self::lead)). Otherwise returns `None`:
    /// the item now belongs to the batcher until a leader hands it back.
    pub fn submit<O, E: Clone>(
        &self,
        item: I,
        commit: impl FnOnce(&[I]) -> Result<Vec<O>, E>,
    ) -> Option<Committed<I, O, E>> {
        let mut st = self.state.lock();
        st.pending.push(item);
        if st.gather_target.is_some_and(|target| st.pending.len() >= target) {
            self.arrived.notify_one();
        }
        if st.committing {
            return None;
        }
        Some(self.commit_pending(st, commit))
    }

    /// Commits what is pending, unless nothing is or a commit is already in flight
    /// (its leader will call `lead` in turn).
    pub fn lead<O, E: Clone>(
        &self,
        commit: impl FnOnce(&[I]) -> Result<Vec<O>, E>,
    ) -> Option<Committed<I, O, E>> {
        let st = self.state.lock();
        if st.committing || st.pending.is_empty() {
            return None;
        }
        Some(self.commit_pending(st, commit))
    }

    /// Number of items waiting for a batch.
    pub fn pending(&self) -> usize {
        self.state.lock().pending.len()
    }

    fn commit_pending<O, E: Clone>(
        &self,
        mut st: MutexGuard<'_, State<I>>,
        commit: impl FnOnce(&[I]) -> Result<Vec<O>, E>,
    ) -> Committed<I, O, E> {
        st.committing = true;
        if st.pending.len() < st.last_batch {
            let until = Instant::now() + self.gather;
            st.gather_target = Some(st.last_batch);
            while st.pending.len() < st.last_batch && !self.arrived.wait_until(&mut st, until).timed_out() {}
            st.gather_target = None;
        }
        let batch = std::mem::take(&mut st.pending);
        st.last_batch = batch.len();
        drop(st);
        // Whatever happens in `commit` (even a panic), the next leader may go.
        let _in_flight = InFlight(&self.state);
        match commit(&batch) {
            Ok(outputs) if outputs.len() == batch.len() => {
                batch.into_iter().zip(outputs.into_iter().map(Ok)).collect()
            }
            Ok(_) => unreachable!("a commit function must return one output per item"),
            Err(e) => batch.into_iter().map(|item| (item, Err(e.clone()))).collect(),
        }
    }
}

/// Clears `committing` when the commit is over.
struct InFlight<'a, I>(&'a Mutex<State<I>>);

impl<I> Drop for InFlight<'_, I> {
    fn drop(&mut self) {
        self.0.lock().committing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Submits like a worker does: leads when it can, hands back what it led, and
    /// leads again until nothing it is responsible for remains.
    fn submit_and_lead(
        b: &Batcher<u64>,
        item: u64,
        commit: &impl Fn(&[u64]) -> Result<Vec<u64>, String>,
    ) -> Vec<(u64, Result<u64, String>)> {
        let mut done = Vec::new();
        let mut led = b.submit(item, commit);
        while let Some(batch) = led {
            done.extend(batch);
            led = b.lead(commit);
        }
        done
    }

    #[test]
    fn concurrent_submitters_share_batches_and_every_item_comes_back_once() {
        let b = Arc::new(Batcher::<u64>::new(Duration::from_micros(200)));
        let counter = Arc::new(Mutex::new(0u64));
        let commits = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32u64)
            .map(|t| {
                let (b, counter, commits) = (Arc::clone(&b), Arc::clone(&counter), Arc::clone(&commits));
                std::thread::spawn(move || {
                    let commit = |items: &[u64]| {
                        commits.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_micros(200));
                        let mut c = counter.lock();
                        let start = *c;
                        *c += items.len() as u64;
                        Ok((start + 1..=*c).collect())
                    };
                    (0..200)
                        .flat_map(|i| submit_and_lead(&b, t * 1000 + i, &commit))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let done: Vec<(u64, Result<u64, String>)> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(b.pending(), 0, "an item was left without a leader");
        let mut items: Vec<u64> = done.iter().map(|(i, _)| *i).collect();
        items.sort_unstable();
        let expected: Vec<u64> = (0..32)
            .flat_map(|t| (0..200).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(items, expected, "items lost or doubled");
        let mut values: Vec<u64> = done.into_iter().map(|(_, r)| r.expect("no failure")).collect();
        values.sort_unstable();
        assert_eq!(values, (1..=6400).collect::<Vec<_>>());
        assert!(commits.load(Ordering::Relaxed) < 6400, "no batching happened");
    }

    #[test]
    fn a_failed_commit_fails_every_item_of_the_batch_and_the_next_one_runs() {
        let b = Batcher::<u32>::new(Duration::ZERO);
        let failed = b.submit(1, |_| Err::<Vec<u32>, _>("db down")).expect("led");
        assert_eq!(failed, vec![(1, Err("db down"))]);
        assert_eq!(
            b.submit(2, |items| Ok::<_, &str>(items.to_vec())),
            Some(vec![(2, Ok(2))])
        );
    }

    #[test]
    fn items_arriving_during_a_commit_wait_for_the_next_lead() {
        let b = Batcher::<u32>::new(Duration::ZERO);
        let led = b.submit(1, |items| {
            // Arrivals while this commit is in flight do not lead.
            assert!(b.submit(2, |_| Ok::<Vec<u32>, ()>(vec![])).is_none());
            assert!(b.submit(3, |_| Ok::<Vec<u32>, ()>(vec![])).is_none());
            Ok::<_, ()>(items.iter().map(|i| i * 10).collect())
        });
        assert_eq!(led, Some(vec![(1, Ok(10))]));
        assert_eq!(b.pending(), 2);
        let next = b.lead(|items| Ok::<_, ()>(items.iter().map(|i| i * 10).collect()));
        assert_eq!(next, Some(vec![(2, Ok(20)), (3, Ok(30))]));
        assert_eq!(b.lead(|_| Ok::<Vec<u32>, ()>(vec![])), None);
    }

    #[test]
    fn a_panicking_commit_does_not_wedge_the_batcher() {
        let b = Batcher::<u32>::new(Duration::ZERO);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.submit(1, |_| -> Result<Vec<u32>, ()> { panic!("bug") })
        }));
        assert!(r.is_err());
        assert_eq!(
            b.submit(2, |items| Ok::<_, ()>(items.to_vec())),
            Some(vec![(2, Ok(2))])
        );
    }
}
