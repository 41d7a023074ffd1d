//! Counters every thread bumps with relaxed atomics, and the once-a-second status
//! line (in the spirit of the C server's): clients, busy workers, tasks by kind,
//! mean task time and load.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Coarse groups of routes, for the status line's "requests by kind".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Health,
    Auth,
    Sample,
    File,
    Counter,
    Event,
    Relay,
}

#[derive(Default)]
pub struct Stats {
    /// Workers serving a connection right now.
    pub busy: AtomicUsize,
    /// Connections served (one queue pop each) and the time spent on them.
    pub tasks: AtomicU64,
    pub task_nanos: AtomicU64,
    /// Requests answered, by kind.
    pub health: AtomicU64,
    pub auth: AtomicU64,
    pub sample: AtomicU64,
    pub file: AtomicU64,
    pub counter: AtomicU64,
    pub event: AtomicU64,
    pub relay: AtomicU64,
    /// Requests answered with an error before reaching a handler (4xx from parsing,
    /// routing or limits).
    pub rejected_requests: AtomicU64,
    pub accepted: AtomicU64,
    /// Connections refused at the connection limit.
    pub rejected: AtomicU64,
    pub timeouts: AtomicU64,
    /// Requests refused 429 (rate limits, failed-login limits).
    pub limited: AtomicU64,
    /// Panics caught while serving a connection; each cost that connection only.
    pub panics: AtomicU64,
    /// Requests dropped unserved because their client had gone while they waited
    /// (a password hash nobody would receive).
    pub abandoned: AtomicU64,
}

impl Stats {
    pub fn count(&self, kind: Option<Kind>) {
        let c = match kind {
            Some(Kind::Health) => &self.health,
            Some(Kind::Auth) => &self.auth,
            Some(Kind::Sample) => &self.sample,
            Some(Kind::File) => &self.file,
            Some(Kind::Counter) => &self.counter,
            Some(Kind::Event) => &self.event,
            Some(Kind::Relay) => &self.relay,
            None => &self.rejected_requests,
        };
        c.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> [u64; 10] {
        [
            self.tasks.load(Relaxed),
            self.task_nanos.load(Relaxed),
            self.health.load(Relaxed),
            self.auth.load(Relaxed),
            self.sample.load(Relaxed),
            self.rejected_requests.load(Relaxed),
            self.file.load(Relaxed),
            self.counter.load(Relaxed),
            self.event.load(Relaxed),
            self.relay.load(Relaxed),
        ]
    }
}

/// Prints one status line a second on stderr until `done` says stop.
pub fn status_line_loop(
    stats: Arc<Stats>,
    threads: usize,
    clients: impl Fn() -> usize,
    queued: impl Fn() -> usize,
    shed: impl Fn() -> u64,
    done: impl Fn() -> bool,
) {
    let mut prev = stats.snapshot();
    let mut at = Instant::now();
    while !done() {
        std::thread::sleep(Duration::from_secs(1));
        let now = stats.snapshot();
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let d: Vec<u64> = now.iter().zip(prev.iter()).map(|(a, b)| a - b).collect();
        prev = now;
        let mean_us = if d[0] > 0 {
            d[1] as f64 / d[0] as f64 / 1e3
        } else {
            0.0
        };
        let load = d[1] as f64 / 1e9 / secs / threads as f64 * 100.0;
        let _ = writeln!(
            std::io::stderr().lock(),
            "clients {:>5} | busy {:>2}/{} | queue {:>4} | req/s health {:>6.0} auth {:>5.0} sample {:>5.0} file {:>5.0} counter {:>6.0} event {:>6.0} relay {:>6.0} rejected {:>4.0} | mean task {:>7.1} us | load {:>5.1}% | shed {} | limited {} | panics {}",
            clients(),
            stats.busy.load(Relaxed),
            threads,
            queued(),
            d[2] as f64 / secs,
            d[3] as f64 / secs,
            d[4] as f64 / secs,
            d[6] as f64 / secs,
            d[7] as f64 / secs,
            d[8] as f64 / secs,
            d[9] as f64 / secs,
            d[5] as f64 / secs,
            mean_us,
            load.min(100.0),
            shed(),
            stats.limited.load(Relaxed),
            stats.panics.load(Relaxed),
        );
    }
}
