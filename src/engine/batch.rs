//! Group commit: items that arrive while a batch is being committed wait and go
//! into the next batch together, so N concurrent requests cost one round trip
//! instead of N.
//!
//! Nothing here blocks. The items are whole connections, so a waiting increment
//! holds no thread; there is no committer thread either. A batch is committed by a
//! worker, called the leader, which gets every item of it back with that item's
//! result and answers them itself, with no wake-up per request:
//! - `submit` leads at once when no commit is in flight, the batch is full (as
//!   large as the last batch, so a lone client never waits) and the caller is not
//!   `busy` (has no other connection queued, which may hold more increments: with
//!   one worker, that is where the increments that arrived during a commit are);
//! - otherwise the item waits, and [`Batcher::lead`] commits the batch once it is
//!   due: full and the caller not busy, or `gather` after its oldest item arrived
//!   (PostgreSQL's commit_delay with commit_siblings, made adaptive). Until then
//!   `lead` says how long to wait, and the worker serves other connections
//!   meanwhile.
//!
//! Progress: a worker calls `lead` after serving each connection while items wait
//! (`has_pending`), and waits for new work no longer than `lead` says, also while
//! a commit is in flight (whose worker may go on to other work when it is done).
//!
//! The commit function sees the batch in arrival order and must return one output
//! per item, or one error for all of them (nothing of a failed batch may take
//! effect).

use parking_lot::{Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Shortest wait before a worker looks again at a batch whose commit is in flight.
const MIN_RECHECK: Duration = Duration::from_micros(100);

/// Every item of a committed batch, in arrival order, with its own result.
pub type Committed<I, O, E> = Vec<(I, Result<O, E>)>;

/// What [`Batcher::lead`] did.
#[derive(Debug, PartialEq)]
pub enum Lead<I, O, E> {
    /// It committed a batch: the caller must answer every item.
    Done(Committed<I, O, E>),
    /// Items wait, but their batch is not due before this instant (or a commit is
    /// in flight: look again then, in case its leader is busy elsewhere).
    WaitUntil(Instant),
    /// Nothing waits.
    Idle,
}

pub struct Batcher<I> {
    state: Mutex<State<I>>,
    /// Whether items wait: lets workers skip the lock on every request.
    has_pending: AtomicBool,
    /// Longest the oldest item waits for its batch to fill.
    gather: Duration,
}

struct State<I> {
    /// Items waiting for the next batch, in arrival order.
    pending: Vec<I>,
    /// When the oldest pending item arrived.
    since: Option<Instant>,
    committing: bool,
    /// Size of the last committed batch.
    last_batch: usize,
}

impl<I> State<I> {
    fn full(&self) -> bool {
        self.pending.len() >= self.last_batch.max(1)
    }
}

impl<I> Batcher<I> {
    /// A batcher whose batches wait at most `gather` to fill.
    pub fn new(gather: Duration) -> Self {
        Batcher {
            state: Mutex::new(State {
                pending: Vec::new(),
                since: None,
                committing: false,
                last_batch: 0,
            }),
            has_pending: AtomicBool::new(false),
            gather,
        }
    }

    /// Items waiting for the next batch (for metrics).
    pub fn waiting(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Adds `item` to the next batch, and commits that batch with `commit` when a
    /// commit may start, it is full and the caller is not `busy`: then every
    /// item of it comes back with its result. Otherwise returns `None`: the item
    /// belongs to the batcher until a `lead` hands it back.
    pub fn submit<O, E: Clone>(
        &self,
        item: I,
        busy: bool,
        commit: impl FnOnce(&[I]) -> Result<Vec<O>, E>,
    ) -> Option<Committed<I, O, E>> {
        let mut st = self.state.lock();
        st.pending.push(item);
        if st.since.is_none() {
            st.since = Some(Instant::now());
            self.has_pending.store(true, Ordering::Release);
        }
        if st.committing || busy || !st.full() {
            return None;
        }
        Some(self.commit_pending(st, commit))
    }

    /// Commits the waiting items if their batch is due (see [`Lead`]); `busy`: the
    /// caller has other work queued.
    pub fn lead<O, E: Clone>(
        &self,
        now: Instant,
        busy: bool,
        commit: impl FnOnce(&[I]) -> Result<Vec<O>, E>,
    ) -> Lead<I, O, E> {
        let st = self.state.lock();
        let Some(since) = st.since else {
            return Lead::Idle;
        };
        let due = since + self.gather;
        if st.committing {
            // Its leader looks again when done, but may then have other work first.
            // (At least a short nap, so a zero gather does not spin.)
            return Lead::WaitUntil(due.max(now + self.gather.max(MIN_RECHECK)));
        }
        if (st.full() && !busy) || now >= due {
            Lead::Done(self.commit_pending(st, commit))
        } else {
            Lead::WaitUntil(due)
        }
    }

    /// Whether items wait for a batch (a hint: `lead` decides under the lock).
    pub fn has_pending(&self) -> bool {
        self.has_pending.load(Ordering::Acquire)
    }

    /// Number of items waiting for a batch.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state.lock().pending.len()
    }

    fn commit_pending<O, E: Clone>(
        &self,
        mut st: MutexGuard<'_, State<I>>,
        commit: impl FnOnce(&[I]) -> Result<Vec<O>, E>,
    ) -> Committed<I, O, E> {
        st.committing = true;
        st.since = None;
        self.has_pending.store(false, Ordering::Release);
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

/// Clears `committing` when the commit is over, however it ends.
struct InFlight<'a, I>(&'a Mutex<State<I>>);

impl<I> Drop for InFlight<'_, I> {
    fn drop(&mut self) {
        self.0.lock().committing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    type Results = Vec<(u64, Result<u64, String>)>;

    /// Submits like a worker does: commits when it leads, then keeps leading while
    /// its items are not due yet (sleeping instead of serving other connections).
    fn submit_and_lead(
        b: &Batcher<u64>,
        item: u64,
        commit: &impl Fn(&[u64]) -> Result<Vec<u64>, String>,
    ) -> Results {
        let mut done = Vec::new();
        if let Some(batch) = b.submit(item, false, commit) {
            done.extend(batch);
        }
        loop {
            match b.lead(Instant::now(), false, commit) {
                Lead::Done(batch) => done.extend(batch),
                Lead::WaitUntil(t) => std::thread::sleep(t.saturating_duration_since(Instant::now())),
                Lead::Idle => return done,
            }
        }
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
                        .collect::<Results>()
                })
            })
            .collect();
        let done: Results = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(b.pending(), 0, "an item was left without a leader");
        assert!(!b.has_pending());
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

    fn tenfold(items: &[u32]) -> Result<Vec<u32>, &'static str> {
        Ok(items.iter().map(|i| i * 10).collect())
    }

    #[test]
    fn a_lone_item_commits_at_once_and_a_failed_commit_fails_its_whole_batch() {
        let b = Batcher::<u32>::new(Duration::from_secs(3600));
        let failed = b
            .submit(1, false, |_| Err::<Vec<u32>, _>("db down"))
            .expect("led at once");
        assert_eq!(failed, vec![(1, Err("db down"))]);
        assert_eq!(b.submit(2, false, tenfold), Some(vec![(2, Ok(20))]));
    }

    #[test]
    fn a_batch_waits_to_fill_up_to_the_last_size_or_until_gather_passes() {
        let gather = Duration::from_millis(30);
        let b = Batcher::<u32>::new(gather);
        // While a commit is in flight, three items wait; their batch of three makes
        // three the size to wait for.
        let led = b.submit(1, false, |items| {
            for i in 2..=4 {
                assert!(b.submit(i, false, tenfold).is_none(), "a commit is in flight");
            }
            // Workers that see them are told when to look again, not to sleep.
            assert!(matches!(
                b.lead(Instant::now(), false, tenfold),
                Lead::WaitUntil(_)
            ));
            tenfold(items)
        });
        assert_eq!(led, Some(vec![(1, Ok(10))]));
        let three = vec![(2, Ok(20)), (3, Ok(30)), (4, Ok(40))];
        assert_eq!(b.lead(Instant::now(), false, tenfold), Lead::Done(three));
        // Two items are not a full batch: they wait until gather has passed.
        assert!(b.submit(5, false, tenfold).is_none());
        assert!(b.submit(6, false, tenfold).is_none());
        assert!(b.has_pending());
        let Lead::WaitUntil(due) = b.lead(Instant::now(), false, tenfold) else {
            panic!("a batch of two of three is not due yet");
        };
        assert!(due > Instant::now() && due <= Instant::now() + gather);
        assert_eq!(
            b.lead(due, false, tenfold),
            Lead::Done(vec![(5, Ok(50)), (6, Ok(60))])
        );
        assert_eq!(b.lead(Instant::now(), false, tenfold), Lead::Idle);
        // Two is the size now: the second item fills the batch and leads.
        assert!(b.submit(7, false, tenfold).is_none());
        assert_eq!(b.submit(8, false, tenfold), Some(vec![(7, Ok(70)), (8, Ok(80))]));
        assert!(!b.has_pending());
        // A busy caller (more work queued) lets even a full batch wait, but not past
        // gather; an idle one commits it.
        assert!(b.submit(9, false, tenfold).is_none());
        assert!(
            b.submit(10, true, tenfold).is_none(),
            "full, but the caller is busy"
        );
        let Lead::WaitUntil(due) = b.lead(Instant::now(), true, tenfold) else {
            panic!("a busy caller waits for gather");
        };
        let both = vec![(9, Ok(90)), (10, Ok(100))];
        assert_eq!(b.lead(due, true, tenfold), Lead::Done(both.clone()));
        assert!(b.submit(11, false, tenfold).is_none());
        assert!(b.submit(12, true, tenfold).is_none());
        let both = vec![(11, Ok(110)), (12, Ok(120))];
        assert_eq!(b.lead(Instant::now(), false, tenfold), Lead::Done(both));
    }

    #[test]
    fn a_panicking_commit_does_not_wedge_the_batcher() {
        let b = Batcher::<u32>::new(Duration::ZERO);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.submit(1, false, |_| -> Result<Vec<u32>, &'static str> { panic!("bug") })
        }));
        assert!(r.is_err());
        assert_eq!(b.submit(2, false, tenfold), Some(vec![(2, Ok(20))]));
    }
}
