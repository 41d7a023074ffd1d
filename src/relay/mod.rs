//! The upstream relay and its two-level cache: `GET /relay/<target>` answered
//! from memory when it can be, from the shared PostgreSQL table next, from the
//! upstream last, with RFC 9111 freshness, single flight, stale-while-revalidate,
//! stale-if-error and conditional revalidation.
//!
//! Nothing here holds a worker while the upstream is slow. A worker calls
//! [`Relay::lookup`]: a fresh entry (or a stale one it may serve) is answered at
//! once; otherwise the connection itself joins the key's flight through
//! [`Relay::wait`] with a `Resume` callback, and a fetch thread (`fetch`) runs
//! the flight: level 2, then (holding the key's fetch lease, so that one
//! instance of the cluster asks while the others wait for its row) the
//! upstream behind its circuit breaker. When the flight lands every waiter is
//! resumed with the same [`Fetched`]; level 2 is written after that, off the
//! response's path, and the lease released once the row is in.
//!
//! Invariants: one upstream request per key at a time (the flight); every
//! waiter is resumed exactly once, with an answer or an error, within the
//! upstream timeout plus its wait in the job queue (whose length is bounded); an
//! entry that may not be shared is answered only to the requests that waited for
//! it and never kept.

pub(crate) mod entry;
mod fetch;
pub(crate) mod target;
pub(crate) mod upstream;

use crate::cache::flight::Flights;
use crate::cache::memory::{Counts, MemoryCache};
use crate::cache::policy::{now_ms, Defaults, Freshness, Lifetime, MAX_DELTA_SECONDS};
use crate::store::db::Db;
use crate::store::hex::encode_hex;
use crate::store::http_cache::{self, Row};
use crate::traffic::breaker::{Breaker, State as BreakerState};
use entry::{Entry, Received};
pub(crate) use fetch::Job;
use fetch::Jobs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use upstream::{Upstream, UpstreamError};

/// How a relayed answer was made (`X-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XCache {
    /// From a fresh entry (either level).
    Hit,
    /// From the upstream.
    Miss,
    /// From a stale entry (while it is refreshed, or because the upstream failed).
    Stale,
    /// From an entry the upstream just confirmed with a 304.
    Revalidated,
}

impl XCache {
    pub fn as_str(self) -> &'static str {
        match self {
            XCache::Hit => "HIT",
            XCache::Miss => "MISS",
            XCache::Stale => "STALE",
            XCache::Revalidated => "REVALIDATED",
        }
    }
}

/// Why the relay has no answer to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayError {
    /// 502: the upstream is unreachable or its answer unusable.
    BadGateway(String),
    /// 504: no answer within `--relay-timeout`.
    Timeout,
    /// 503: its breaker is open (Retry-After: this many seconds), or the fetch
    /// queue is full.
    Unavailable(u64),
}

/// What a relayed request is answered with.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub result: Result<Arc<Entry>, RelayError>,
    pub cache: XCache,
    /// The entry's `Age` when it was found or fetched, in seconds (the clock
    /// is read once per answer, where freshness was judged).
    pub age: u64,
}

impl Fetched {
    fn entry(entry: Arc<Entry>, cache: XCache) -> Fetched {
        Fetched::entry_at(entry, cache, now_ms())
    }

    fn entry_at(entry: Arc<Entry>, cache: XCache, now: u64) -> Fetched {
        Fetched {
            age: entry.age(now),
            result: Ok(entry),
            cache,
        }
    }

    /// 503: there is no relay to wait for.
    pub fn unavailable() -> Fetched {
        Fetched::error(RelayError::Unavailable(1))
    }

    fn error(e: RelayError) -> Fetched {
        Fetched {
            result: Err(e),
            cache: XCache::Miss,
            age: 0,
        }
    }
}

/// Resumes one waiting request with its answer (the engine requeues its
/// connection).
pub type Resume = Box<dyn FnOnce(Fetched) + Send>;

/// What a lookup found.
pub enum Lookup {
    /// Answer now.
    Ready(Fetched),
    /// Wait for the key's flight.
    Wait,
}

/// The relay's settings (see `Config`).
pub struct Settings {
    pub upstream: String,
    pub timeout: Duration,
    pub connections: usize,
    pub max_body: u64,
    pub cache_bytes: u64,
    pub defaults: Defaults,
    pub breaker_failures: u32,
    pub breaker_reset: Duration,
}

/// Figures for the admin API and metrics.
#[derive(Default)]
pub struct Figures {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub revalidated: AtomicU64,
    pub upstream_requests: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub shared_hits: AtomicU64,
    pub shared_writes: AtomicU64,
    pub shared_dropped: AtomicU64,
    /// Fetches answered without asking the upstream: their time (the upstream
    /// timeout from when they were queued) ran out waiting for a fetch thread,
    /// or for another instance's fetch of the key.
    pub expired: AtomicU64,
    pub refused: AtomicU64,
}

pub struct Relay {
    upstream: Upstream,
    /// The upstream base URL: level-2 keys are `base + target`, so instances
    /// relaying different upstreams never share entries.
    base: String,
    defaults: Defaults,
    memory: MemoryCache<Entry>,
    flights: Flights<Box<str>, Resume>,
    jobs: Arc<Jobs>,
    breaker: Breaker,
    db: Arc<Db>,
    /// Level-2 writes, done behind the responses by the writer thread; the
    /// flag says whether this instance's fetch lease on the key is released
    /// once the row is in.
    writes: SyncSender<Write>,
    /// Bytes of the level-2 writes queued (keys, header lines, bodies), at most
    /// `--cache-bytes`: a body is shared with its entry, but one the memory
    /// cache evicts lives on in the queue until written.
    queued_bytes: Arc<Budget>,
    /// This process's name on fetch leases (random).
    holder: String,
    timeout: Duration,
    pub figures: Figures,
}

/// A level-2 write: the row's key, what becomes of it, and whether to release
/// the fetch lease once it is done.
type Write = (String, Change, bool);

/// What a level-2 write does to a key's row.
enum Change {
    /// Stores this row (unless a newer one is there).
    Put(Row),
    /// Deletes the row stored at or before this time (ms): the upstream's newer
    /// answer forbids sharing it.
    Forget(i64),
}

/// How often an instance waiting for another's fetch looks for its row.
const LEASE_POLL: Duration = Duration::from_millis(10);

/// Jobs that may wait for a fetch thread; past this, a miss is answered 503.
const MAX_QUEUED_FETCHES: usize = 4096;

/// Level-2 writes that may wait; past this, or past `--cache-bytes` of them,
/// they are dropped (counted): the shared cache is an optimisation, never a
/// reason to hold memory.
const MAX_QUEUED_WRITES: usize = 1024;

impl Relay {
    /// The relay and its threads (fetch pool, level-2 writer).
    pub fn start(settings: Settings, db: Arc<Db>) -> Result<Arc<Relay>, String> {
        let jobs = Arc::new(Jobs::new(MAX_QUEUED_FETCHES));
        let (writes, queued) = sync_channel(MAX_QUEUED_WRITES);
        let queued_bytes = Arc::new(Budget::new(
            usize::try_from(settings.cache_bytes).unwrap_or(usize::MAX),
        ));
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut id).map_err(|e| format!("os rng: {e}"))?;
        let holder = encode_hex(&id);
        let relay = Arc::new(Relay {
            upstream: Upstream::new(
                &settings.upstream,
                settings.timeout,
                settings.connections,
                settings.max_body,
            ),
            base: settings.upstream.trim_end_matches('/').to_string(),
            defaults: settings.defaults,
            memory: MemoryCache::new(settings.cache_bytes, 2048),
            flights: Flights::default(),
            jobs: Arc::clone(&jobs),
            breaker: Breaker::new("upstream", settings.breaker_failures, settings.breaker_reset),
            db: Arc::clone(&db),
            writes,
            queued_bytes: Arc::clone(&queued_bytes),
            holder: holder.clone(),
            timeout: settings.timeout,
            figures: Figures::default(),
        });
        fetch::start(&relay, &jobs, settings.connections, Relay::run)?;
        std::thread::Builder::new()
            .name("relay-l2-writer".into())
            .spawn(move || write_behind(&db, &queued, &queued_bytes, &holder))
            .map_err(|e| format!("cannot start the relay's writer: {e}"))?;
        Ok(relay)
    }

    /// What a request for `target` (path and query after `/relay`) gets without
    /// waiting: a fresh entry, a stale one it may serve (then one refresh starts
    /// in the background), or nothing.
    pub fn lookup(&self, target: &str, request_id: &[u8]) -> Lookup {
        let Some(entry) = self.memory.get(target) else {
            return Lookup::Wait;
        };
        let Some(life) = entry.life else {
            return Lookup::Wait;
        };
        let now = now_ms();
        match life.freshness(now) {
            Freshness::Fresh => {
                self.figures.hits.fetch_add(1, Relaxed);
                Lookup::Ready(Fetched::entry_at(entry, XCache::Hit, now))
            }
            Freshness::StaleWhileRevalidate => {
                self.refresh(target, request_id);
                self.figures.stale.fetch_add(1, Relaxed);
                Lookup::Ready(Fetched::entry_at(entry, XCache::Stale, now))
            }
            // The upstream is known to be down: no point waiting for it.
            Freshness::StaleIfError if self.breaker_open() => {
                self.figures.stale.fetch_add(1, Relaxed);
                Lookup::Ready(Fetched::entry_at(entry, XCache::Stale, now))
            }
            Freshness::StaleIfError | Freshness::Expired => Lookup::Wait,
        }
    }

    /// Joins the flight for `target` with `resume`, starting it if need be. A
    /// full fetch queue resumes at once with 503.
    pub fn wait(&self, target: &str, request_id: &str, resume: Resume) {
        if self.flights.join(target.into(), Some(resume)) {
            self.launch(target, request_id);
        }
    }

    /// Starts a background refresh of `target`, unless a flight is in the air.
    fn refresh(&self, target: &str, request_id: &[u8]) {
        if self.flights.join(target.into(), None) {
            self.launch(target, &String::from_utf8_lossy(request_id));
        }
    }

    fn launch(&self, target: &str, request_id: &str) {
        let job = Job {
            key: target.into(),
            request_id: request_id.into(),
            queued_at: Instant::now(),
        };
        if let Err(job) = self.jobs.push(job) {
            self.figures.refused.fetch_add(1, Relaxed);
            self.land(&job.key, &Fetched::error(RelayError::Unavailable(1)));
        }
    }

    /// Resumes every waiter of the flight for `key` with `fetched`.
    fn land(&self, key: &str, fetched: &Fetched) {
        for resume in self.flights.land(key) {
            resume(fetched.clone());
        }
    }

    /// Runs one fetch job on a fetch thread; a panic lands its flight with 502
    /// instead of stranding its waiters.
    fn run(&self, job: &Job) {
        let fetched = catch_unwind(AssertUnwindSafe(|| self.fetch(job))).unwrap_or_else(|_| {
            tracing::error!(request_id = &*job.request_id, "a relay fetch panicked");
            (
                Fetched::error(RelayError::BadGateway("relay fetch failed".into())),
                None,
                false,
            )
        });
        let (fetched, store, leased) = fetched;
        self.land(&job.key, &fetched);
        // Behind the responses: the shared level, then the lease (other
        // instances waiting on it find the row first). A panic here must not end
        // the fetch thread: the waiters are answered, the lease times out.
        let behind = catch_unwind(AssertUnwindSafe(|| match (store, &fetched.result) {
            (Some(entry), Ok(_)) => self.write_behind(&job.key, &entry, leased),
            _ if leased => self.release_lease(&job.key),
            _ => {}
        }));
        if behind.is_err() {
            tracing::error!(request_id = &*job.request_id, "a relay level-2 write panicked");
        }
    }

    /// Gives this instance's fetch lease on `key` back, so other instances stop
    /// waiting for a row that will not come.
    fn release_lease(&self, key: &str) {
        let _ = http_cache::release(&self.db, &[&self.shared_key(key)], &self.holder);
    }

    /// Takes this instance's fetch lease on `key`; a database that is down
    /// lets every instance fetch on its own.
    fn take_lease(&self, key: &str, now: u64) -> bool {
        let until = now + self.timeout.as_millis() as u64;
        http_cache::lease(
            &self.db,
            &self.shared_key(key),
            &self.holder,
            now as i64,
            until as i64,
        )
        .unwrap_or(true)
    }

    /// Waits while another instance fetches `key` (it holds the lease), for its
    /// level-2 row; `None` when the lease ends without one (the answer was not
    /// stored, or its holder died) or the fetch's `deadline` comes.
    fn await_other_instance(&self, key: &str, deadline: Instant) -> Option<Arc<Entry>> {
        let shared = self.shared_key(key);
        while Instant::now() < deadline {
            std::thread::sleep(LEASE_POLL);
            if let Some(e) = self.fresh_shared(key) {
                return Some(e);
            }
            if !http_cache::leased(&self.db, &shared, now_ms() as i64).unwrap_or(false) {
                // The holder writes its row, then gives the lease back: both
                // may have happened between the read above and this check.
                return self.fresh_shared(key);
            }
        }
        None
    }

    /// The level-2 entry for `key` when it is fresh, kept in level 1 too.
    fn fresh_shared(&self, key: &str) -> Option<Arc<Entry>> {
        let now = now_ms();
        let e = Arc::new(self.read_shared(key, now)?);
        if usable(&e, now) != Some(Freshness::Fresh) {
            return None;
        }
        self.memory.insert(key, Arc::clone(&e));
        Some(e)
    }

    /// Fetches `job.key`: what to answer, the entry to write to level 2, and
    /// whether this instance took the key's fetch lease. Everything it does
    /// (waiting for another instance, asking the upstream, asking again after a
    /// 304 for another ETag) ends within the upstream timeout of the job being
    /// queued: `--relay-timeout` bounds how long a miss waits, not each step.
    fn fetch(&self, job: &Job) -> (Fetched, Option<Arc<Entry>>, bool) {
        let key = &*job.key;
        let now = now_ms();
        let deadline = job.queued_at + self.timeout;
        // The flight may have started just after another landed and filled it.
        let mut stale = self.memory.peek(key).filter(|e| e.life.is_some());
        // Waiting for a fetch thread took the whole upstream timeout (every
        // thread busy with a slow upstream): its waiters get what a timeout
        // gives (stale within stale-if-error, else 504) now, not one more
        // timeout later, and the queue drains instead of growing old.
        if Instant::now() >= deadline {
            tracing::debug!(request_id = &*job.request_id, "relay fetch expired in the queue");
            return (self.expired(stale, now), None, false);
        }
        if let Some(e) = stale
            .as_ref()
            .filter(|e| usable(e, now) == Some(Freshness::Fresh))
        {
            self.figures.hits.fetch_add(1, Relaxed);
            return (Fetched::entry(Arc::clone(e), XCache::Hit), None, false);
        }
        if stale.is_none() {
            if let Some(e) = self.read_shared(key, now) {
                let e = Arc::new(e);
                self.memory.insert(key, Arc::clone(&e));
                if usable(&e, now) == Some(Freshness::Fresh) {
                    self.figures.hits.fetch_add(1, Relaxed);
                    self.figures.shared_hits.fetch_add(1, Relaxed);
                    return (Fetched::entry(e, XCache::Hit), None, false);
                }
                stale = Some(e);
            }
        }
        // Nothing at either level: one instance of the cluster asks the
        // upstream, the others wait for its row.
        let mut leased = false;
        if stale.is_none() {
            leased = self.take_lease(key, now);
            if !leased {
                if let Some(e) = self.await_other_instance(key, deadline) {
                    self.figures.hits.fetch_add(1, Relaxed);
                    self.figures.shared_hits.fetch_add(1, Relaxed);
                    return (Fetched::entry(e, XCache::Hit), None, false);
                }
            }
        }
        let (fetched, store) = self.ask_upstream(job, stale, deadline);
        (fetched, store, leased)
    }

    /// What a fetch whose time ran out before the upstream was asked answers:
    /// what a timeout gives (stale within stale-if-error, else 504).
    fn expired(&self, stale: Option<Arc<Entry>>, now: u64) -> Fetched {
        self.figures.expired.fetch_add(1, Relaxed);
        self.stale_instead(&stale, now)
            .unwrap_or_else(|| Fetched::error(RelayError::Timeout))
    }

    /// The stale entry, served (and counted) instead of an error while its
    /// stale-if-error window lasts at `now`.
    fn stale_instead(&self, stale: &Option<Arc<Entry>>, now: u64) -> Option<Fetched> {
        stale
            .as_ref()
            .filter(|e| !matches!(usable(e, now), None | Some(Freshness::Expired)))
            .map(|e| {
                self.figures.stale.fetch_add(1, Relaxed);
                Fetched::entry(Arc::clone(e), XCache::Stale)
            })
    }

    /// Asks the upstream for `job.key` (conditionally when a stale entry has
    /// validators), giving it until `deadline`: what to answer, and the entry to
    /// write to level 2.
    fn ask_upstream(
        &self,
        job: &Job,
        stale: Option<Arc<Entry>>,
        deadline: Instant,
    ) -> (Fetched, Option<Arc<Entry>>) {
        let key = &*job.key;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Spent waiting for another instance's fetch: the upstream is not
            // to blame, and is not asked.
            tracing::debug!(
                request_id = &*job.request_id,
                "relay fetch out of time before asking"
            );
            return (self.expired(stale, now_ms()), None);
        }
        let validators = stale
            .as_ref()
            .map(|e| (e.etag.as_deref(), e.last_modified.as_deref()));
        let (etag, last_modified) = validators.unwrap_or((None, None));
        let got = match self.breaker.admit(Instant::now()) {
            Err(wait) => Err(RelayError::Unavailable(wait.as_secs().max(1))),
            Ok(_) => {
                self.figures.upstream_requests.fetch_add(1, Relaxed);
                let got = self
                    .upstream
                    .get(key, etag, last_modified, &job.request_id, "1.1 crudrs", left);
                // The upstream's health: gateway statuses, no answer and timeouts
                // count against it; an answer too large for us does not, nor a
                // request that never left (a probe that reports nothing is
                // replaced after a reset period).
                match &got {
                    Ok(r) if matches!(r.status, 502..=504) => self.breaker.failure(Instant::now()),
                    Ok(_) | Err(UpstreamError::TooLarge) => self.breaker.success(),
                    Err(UpstreamError::Unsendable(_)) => {}
                    Err(_) => self.breaker.failure(Instant::now()),
                }
                got.map_err(|e| match e {
                    UpstreamError::Timeout => RelayError::Timeout,
                    UpstreamError::TooLarge => RelayError::BadGateway("upstream response too large".into()),
                    UpstreamError::Unsendable(why) => {
                        tracing::warn!(
                            request_id = &*job.request_id,
                            "no upstream request could be made: {why}"
                        );
                        RelayError::BadGateway("no upstream request could be made of this target".into())
                    }
                    UpstreamError::Unreachable(why) => {
                        tracing::warn!(request_id = &*job.request_id, "upstream unreachable: {why}");
                        RelayError::BadGateway("upstream unreachable".into())
                    }
                })
            }
        };
        let now = now_ms();
        match got {
            // A 304 naming another representation than the stored one renews
            // nothing: ask again, without conditions.
            Ok(received)
                if received.status == 304
                    && stale.as_ref().is_some_and(|old| !old.validated_by(&received)) =>
            {
                tracing::debug!(
                    request_id = &*job.request_id,
                    "upstream 304 for another ETag; fetching again"
                );
                self.ask_upstream(job, None, deadline)
            }
            Ok(received) if received.status == 304 => match &stale {
                Some(old) => {
                    let renewed = Arc::new(old.renewed(&received, &self.defaults, now));
                    if renewed.life.is_some() {
                        self.keep(key, &renewed);
                    } else {
                        self.memory.remove(key);
                    }
                    self.figures.revalidated.fetch_add(1, Relaxed);
                    (
                        Fetched::entry(Arc::clone(&renewed), XCache::Revalidated),
                        Some(renewed),
                    )
                }
                None => (
                    Fetched::error(RelayError::BadGateway("unsolicited 304 from upstream".into())),
                    None,
                ),
            },
            Ok(received) if received.status >= 500 => {
                self.figures.upstream_failures.fetch_add(1, Relaxed);
                match self.stale_instead(&stale, now) {
                    Some(f) => (f, None),
                    None => self.answer_fresh(key, received, now, stale.is_some()),
                }
            }
            Ok(received) => self.answer_fresh(key, received, now, stale.is_some()),
            Err(e) => {
                self.figures.upstream_failures.fetch_add(1, Relaxed);
                (
                    self.stale_instead(&stale, now)
                        .unwrap_or_else(|| Fetched::error(e)),
                    None,
                )
            }
        }
    }

    /// A new response: kept when it may be, answered as a miss. `replaces`: a
    /// copy of the key was found (at either level), which a response that
    /// forbids sharing takes out of level 2 too (written behind, like a row).
    fn answer_fresh(
        &self,
        key: &str,
        received: Received,
        now: u64,
        replaces: bool,
    ) -> (Fetched, Option<Arc<Entry>>) {
        let entry = Arc::new(Entry::new(received, &self.defaults, now));
        self.figures.misses.fetch_add(1, Relaxed);
        if entry.life.is_some() {
            self.keep(key, &entry);
            (Fetched::entry(Arc::clone(&entry), XCache::Miss), Some(entry))
        } else {
            // Not shareable: a stale copy must not outlive it either.
            self.memory.remove(key);
            let forget = (replaces && entry.forbids_sharing).then(|| Arc::clone(&entry));
            (Fetched::entry(entry, XCache::Miss), forget)
        }
    }

    fn keep(&self, key: &str, entry: &Arc<Entry>) {
        self.memory.insert(key, Arc::clone(entry));
    }

    /// The level-2 entry for `key`, if it is of any use; a database that is down
    /// is a miss.
    fn read_shared(&self, key: &str, now: u64) -> Option<Entry> {
        let row = http_cache::get(&self.db, &self.shared_key(key), now as i64).ok()??;
        // Rows are written by any instance (any version): capped like a header.
        let seconds = |v: i64| (v.max(0) as u64).min(MAX_DELTA_SECONDS);
        let life = Lifetime {
            stored_at: row.stored_at.max(0) as u64,
            initial_age: seconds(row.initial_age),
            fresh: seconds(row.fresh),
            stale_while_revalidate: seconds(row.swr),
            stale_if_error: seconds(row.sie),
        };
        Some(Entry::restore(
            row.status,
            parse_lines(&row.header_lines),
            row.body,
            life,
        ))
    }

    fn shared_key(&self, key: &str) -> String {
        format!("{}{}", self.base, key)
    }

    /// Queues `entry` for level 2 (or, for an entry that forbids sharing, the
    /// deletion of the key's older row); a full queue (in writes or in bytes)
    /// drops it (counted), and gives the lease back at once.
    fn write_behind(&self, key: &str, entry: &Entry, release: bool) {
        let change = match entry.life {
            Some(life) => Change::Put(Row {
                status: entry.status,
                header_lines: Arc::clone(&entry.lines),
                body: Arc::clone(&entry.body),
                stored_at: life.stored_at as i64,
                initial_age: life.initial_age as i64,
                fresh: life.fresh as i64,
                swr: life.stale_while_revalidate as i64,
                sie: life.stale_if_error as i64,
                useless_after: life.useless_after() as i64,
            }),
            None if entry.forbids_sharing => Change::Forget(now_ms() as i64),
            None => {
                if release {
                    self.release_lease(key);
                }
                return;
            }
        };
        let write = (self.shared_key(key), change, release);
        let bytes = write_bytes(&write);
        let drop_it = |relay: &Relay| {
            relay.figures.shared_dropped.fetch_add(1, Relaxed);
            if release {
                relay.release_lease(key);
            }
        };
        if !self.queued_bytes.take(bytes) {
            drop_it(self);
            return;
        }
        match self.writes.try_send(write) {
            Ok(()) => {
                self.figures.shared_writes.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.give(bytes);
                drop_it(self);
            }
        }
    }

    fn breaker_open(&self) -> bool {
        self.breaker.state() == BreakerState::Open
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn breaker_opened(&self) -> u64 {
        self.breaker.opened()
    }

    /// Level 1's size and counts.
    pub fn memory_counts(&self) -> Counts {
        self.memory.counts()
    }

    /// Level 2's rows and bytes (a query).
    pub fn shared_size(&self) -> Result<(i64, i64), crate::store::db::DbError> {
        http_cache::size(&self.db)
    }

    pub fn clear_memory(&self) {
        self.memory.clear();
    }

    pub fn clear_shared(&self) -> Result<u64, crate::store::db::DbError> {
        http_cache::clear(&self.db)
    }

    /// Flights in the air and fetch jobs queued.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.flights.len(), self.jobs.len())
    }
}

/// An entry's freshness, or `None` for one that may not be kept.
fn usable(entry: &Entry, now: u64) -> Option<Freshness> {
    entry.life.map(|l| l.freshness(now))
}

/// Header text back into fields.
fn parse_lines(lines: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(lines)
        .split("\r\n")
        .filter_map(|line| line.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The level-2 writer: batches queued rows into one transaction, then gives
/// back the fetch leases of their keys, and purges useless rows (and leases)
/// once a minute. Ends when the relay is gone.
/// A number of bytes that may be in use at once, taken and given back by any
/// thread.
struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `n` bytes if that stays within the limit.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Relaxed);
    }
}

/// The bytes a queued write counts against the budget (see `Relay::write_behind`).
fn write_bytes((key, change, _): &Write) -> usize {
    match change {
        Change::Put(row) => key.len() + row.header_lines.len() + row.body.len(),
        Change::Forget(_) => key.len(),
    }
}

fn write_behind(db: &Db, queued: &Receiver<Write>, queued_bytes: &Budget, holder: &str) {
    const BATCH: usize = 64;
    let mut last_purge = Instant::now();
    loop {
        let first = match queued.recv_timeout(Duration::from_secs(10)) {
            Ok(write) => Some(write),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<Write> = first.into_iter().collect();
        while batch.len() < BATCH {
            match queued.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            // Puts first, then deletions: a deletion takes every row stored up
            // to its time, so a row queued before it cannot come back after it.
            let (mut rows, mut gone) = (Vec::new(), Vec::new());
            for (key, change, _) in &batch {
                match change {
                    Change::Put(row) => rows.push((key.clone(), row.clone())),
                    Change::Forget(before) => gone.push((key.clone(), *before)),
                }
            }
            if !rows.is_empty() {
                if let Err(e) = http_cache::put(db, &rows) {
                    tracing::warn!("relay level-2 write of {} entries failed: {e}", rows.len());
                }
            }
            if !gone.is_empty() {
                if let Err(e) = http_cache::forget(db, &gone) {
                    tracing::warn!("relay level-2 deletion of {} entries failed: {e}", gone.len());
                }
            }
            let leased: Vec<&str> = batch.iter().filter(|w| w.2).map(|w| w.0.as_str()).collect();
            if !leased.is_empty() {
                let _ = http_cache::release(db, &leased, holder);
            }
            queued_bytes.give(batch.iter().map(write_bytes).sum());
        }
        if last_purge.elapsed() >= Duration::from_secs(60) {
            last_purge = Instant::now();
            let _ = http_cache::purge(db, now_ms() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_budget_refuses_what_would_pass_it_and_takes_back_what_is_given() {
        let b = Budget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41), "60 + 41 > 100");
        assert!(b.take(40), "a refusal took nothing");
        assert!(!b.take(1));
        b.give(60);
        assert!(b.take(60));
        assert!(
            !Budget::new(10).take(11),
            "one write larger than the whole budget"
        );
        assert!(!b.take(usize::MAX), "no overflow");
    }

    #[test]
    fn header_lines_parse_back_into_fields() {
        let fields = parse_lines(b"\r\nContent-Type: application/json\r\nETag: \"v1\"");
        assert_eq!(
            fields,
            vec![
                ("Content-Type".to_string(), "application/json".to_string()),
                ("ETag".to_string(), "\"v1\"".to_string())
            ]
        );
        assert!(parse_lines(b"").is_empty());
    }
}
