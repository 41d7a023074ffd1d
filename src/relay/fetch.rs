//! The relay's fetch pool: a bounded queue of fetch jobs (one per key in
//! flight) and the threads that run them, so that waiting for the upstream never
//! holds a worker. Each thread makes one upstream request at a time, which bounds
//! upstream connections by the pool's size.
//!
//! The threads hold their owner (the relay) weakly and end once it is gone.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One fetch to run: the key whose flight it lands, and the ID of the request
/// that started it (passed upstream).
pub(crate) struct Job {
    pub key: Box<str>,
    pub request_id: Box<str>,
    /// When it joined the queue: its fetch ends within the upstream timeout of
    /// this moment, and a job that waited that long for a fetch thread is
    /// answered without asking the upstream.
    pub queued_at: std::time::Instant,
}

pub(super) struct Jobs {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    capacity: usize,
}

impl Jobs {
    pub fn new(capacity: usize) -> Jobs {
        Jobs {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity,
        }
    }

    /// Queues a job; a full queue hands it back.
    pub fn push(&self, job: Job) -> Result<(), Job> {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            return Err(job);
        }
        queue.push_back(job);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting at most `timeout`.
    fn pop(&self, timeout: Duration) -> Option<Job> {
        let mut queue = self.queue.lock();
        if queue.is_empty() {
            self.ready.wait_for(&mut queue, timeout);
        }
        queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }
}

/// Starts `threads` threads that take jobs from `jobs` and `run` them for
/// `owner`.
pub(super) fn start<O: Send + Sync + 'static>(
    owner: &Arc<O>,
    jobs: &Arc<Jobs>,
    threads: usize,
    run: fn(&O, &Job),
) -> Result<(), String> {
    for i in 0..threads.max(1) {
        let owner: Weak<O> = Arc::downgrade(owner);
        let jobs = Arc::clone(jobs);
        std::thread::Builder::new()
            .name(format!("relay-fetch-{i}"))
            .spawn(move || loop {
                let job = jobs.pop(Duration::from_secs(1));
                let Some(owner) = owner.upgrade() else { return };
                if let Some(job) = job {
                    run(&owner, &job);
                }
            })
            .map_err(|e| format!("cannot start a relay fetch thread: {e}"))?;
    }
    Ok(())
}
