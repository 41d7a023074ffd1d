//! Group commit: callers that arrive while a batch is being committed wait and go
//! into the next batch together, so N concurrent callers cost one round trip
//! instead of N.
//!
//! There is no committer thread: the first caller that finds no commit in flight
//! becomes the leader, takes everything pending, runs the commit function outside
//! the lock, hands each caller its own result and wakes them.
//!
//! A leader whose batch is smaller than the previous one waits up to `gather` for
//! it to refill (PostgreSQL's commit_delay with commit_siblings, made adaptive): with
//! a steady set of clients each waiting on its own request, the first arrival after a
//! commit would otherwise commit alone while the rest pile up behind it. A lone
//! caller never waits, since its previous batch had one item. The commit function
//! sees the batch in arrival order and must return one output per input, or one
//! error for all of them (nothing of a failed batch may take effect).

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct Batcher<I, O, E> {
    state: Mutex<State<I, O, E>>,
    done: Condvar,
    /// Signalled when an item is added, for a leader gathering its batch.
    arrived: Condvar,
    /// Longest a leader waits for its batch to refill.
    gather: Duration,
}

struct State<I, O, E> {
    next_ticket: u64,
    /// Items waiting for the next batch, with their tickets.
    pending: Vec<(u64, I)>,
    /// Results of finished batches not yet collected by their callers.
    results: HashMap<u64, Result<O, E>>,
    committing: bool,
    /// Size of the last committed batch.
    last_batch: usize,
}

impl<I, O, E: Clone> Batcher<I, O, E> {
    /// A batcher whose leaders wait at most `gather` for a batch to refill.
    pub fn new(gather: Duration) -> Self {
        Batcher {
            state: Mutex::new(State {
                next_ticket: 0,
                pending: Vec::new(),
                results: HashMap::new(),
                committing: false,
                last_batch: 0,
            }),
            done: Condvar::new(),
            arrived: Condvar::new(),
            gather,
        }
    }

    /// Submits `item` and waits for the batch it joins to be committed by `commit`
    /// (run by whichever caller leads that batch).
    pub fn submit(&self, item: I, commit: impl Fn(Vec<I>) -> Result<Vec<O>, E>) -> Result<O, E> {
        let mut st = self.state.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.pending.push((ticket, item));
        self.arrived.notify_one();
        loop {
            if let Some(result) = st.results.remove(&ticket) {
                return result;
            }
            if st.committing {
                self.done.wait(&mut st);
                continue;
            }
            // Lead: gather, then commit everything pending (our own item included).
            st.committing = true;
            let until = Instant::now() + self.gather;
            while st.pending.len() < st.last_batch && !self.arrived.wait_until(&mut st, until).timed_out() {}
            let batch = std::mem::take(&mut st.pending);
            st.last_batch = batch.len();
            drop(st);
            let (tickets, items): (Vec<u64>, Vec<I>) = batch.into_iter().unzip();
            let n = items.len();
            let outcome = commit(items);
            st = self.state.lock();
            match outcome {
                Ok(outputs) if outputs.len() == n => {
                    st.results
                        .extend(tickets.into_iter().zip(outputs.into_iter().map(Ok)));
                }
                Ok(_) => unreachable!("a commit function must return one output per input"),
                Err(e) => st
                    .results
                    .extend(tickets.into_iter().map(|t| (t, Err(e.clone())))),
            }
            st.committing = false;
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_share_batches_and_get_distinct_values() {
        let b = Arc::new(Batcher::<u64, u64, String>::new(Duration::from_micros(200)));
        let counter = Arc::new(Mutex::new(0u64));
        let commits = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (b, counter, commits) = (Arc::clone(&b), Arc::clone(&counter), Arc::clone(&commits));
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| {
                            b.submit(1, |items| {
                                commits.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                let mut c = counter.lock();
                                let start = *c;
                                *c += items.len() as u64;
                                Ok((start + 1..=*c).collect())
                            })
                            .expect("no failure")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=6400).collect::<Vec<_>>());
        assert!(commits.load(Ordering::Relaxed) < 6400, "no batching happened");
    }

    #[test]
    fn a_failed_commit_fails_every_caller_in_the_batch() {
        let b = Batcher::<u32, u32, &'static str>::new(Duration::ZERO);
        assert_eq!(b.submit(1, |_| Err("db down")), Err("db down"));
        assert_eq!(b.submit(2, Ok), Ok(2));
    }
}
