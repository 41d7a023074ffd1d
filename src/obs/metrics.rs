//! Metrics for Prometheus: per-worker counters and histograms, and the text
//! exposition format (version 0.0.4) they are rendered in.
//!
//! Recording costs no lock and no atomic read-modify-write on the hot path: each
//! worker owns a [`WorkerMetrics`] block (on cache lines of its own) that only it
//! writes, with a plain load and store, and a scrape sums the blocks. Figures
//! shared by every thread that are off the hot path (database checkouts) use an
//! [`AtomicHistogram`]. What only another layer knows (open connections, the
//! pool) is rendered by that layer with the same [`Exposition`] writer.
//!
//! Buckets are fixed: request durations use OpenTelemetry's advisory buckets for
//! `http.server.request.duration`, extended down to 100 µs.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

/// Upper bounds (seconds) of the duration buckets.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0,
];
const DURATION_NANOS: [u64; 19] = {
    let mut n = [0u64; 19];
    let mut i = 0;
    while i < 19 {
        n[i] = (DURATION_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    n
};

/// Upper bounds of the group-commit batch-size buckets.
pub const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// The statuses counted one by one; any other is counted as `other`.
pub const STATUSES: [u16; 23] = [
    100, 200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 411, 413, 415, 417, 429, 431, 500, 501, 502,
    503, 504,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len())
}

fn duration_slot(nanos: u64) -> usize {
    DURATION_NANOS.partition_point(|&b| b < nanos)
}

/// A counter written by one thread only: a load and a store, no locked
/// instruction; any thread may read it.
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A single-writer histogram over fixed buckets (the last slot is +Inf).
struct Histogram {
    buckets: Box<[Counter]>,
    sum: Counter,
}

impl Histogram {
    fn new(bounds: usize) -> Histogram {
        Histogram {
            buckets: (0..=bounds).map(|_| Counter::default()).collect(),
            sum: Counter::default(),
        }
    }
}

/// One worker's block. Only its worker writes it.
#[repr(align(128))]
pub struct WorkerMetrics {
    routes: usize,
    /// Requests by route and status (`routes × STATUS_SLOTS`).
    requests: Box<[Counter]>,
    /// Durations by route.
    durations: Box<[Histogram]>,
    queue_wait: Histogram,
    batch_size: Histogram,
}

impl WorkerMetrics {
    fn new(routes: usize) -> WorkerMetrics {
        WorkerMetrics {
            routes,
            requests: (0..routes * STATUS_SLOTS).map(|_| Counter::default()).collect(),
            durations: (0..routes)
                .map(|_| Histogram::new(DURATION_BUCKETS.len()))
                .collect(),
            queue_wait: Histogram::new(DURATION_BUCKETS.len()),
            batch_size: Histogram::new(BATCH_BUCKETS.len()),
        }
    }

    /// A request of route slot `route` answered `status` after `took`.
    pub fn request(&self, route: usize, status: u16, took: Duration) {
        let route = route.min(self.routes - 1);
        self.requests[route * STATUS_SLOTS + status_slot(status)].add(1);
        let nanos = took.as_nanos() as u64;
        let h = &self.durations[route];
        h.buckets[duration_slot(nanos)].add(1);
        h.sum.add(nanos);
    }

    /// A connection waited `wait` in the task queue.
    pub fn queue_wait(&self, wait: Duration) {
        let nanos = wait.as_nanos() as u64;
        self.queue_wait.buckets[duration_slot(nanos)].add(1);
        self.queue_wait.sum.add(nanos);
    }

    /// A group commit of `n` requests.
    pub fn batch(&self, n: usize) {
        let n = n as u64;
        self.batch_size.buckets[BATCH_BUCKETS.partition_point(|&b| b < n)].add(1);
        self.batch_size.sum.add(n);
    }
}

/// The labels of one route slot: its template and method (`""` template: a
/// request that matched no route).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabels {
    pub template: &'static str,
    pub method: &'static str,
}

/// Figures only the engine can read, taken at scrape time.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct EngineGauges {
    /// Requests served now or waiting for a hashing permit or a group commit.
    pub active_requests: u64,
    pub open_connections: u64,
    pub queue_depth: u64,
    pub busy_workers: u64,
    pub workers: u64,
    pub accepted: u64,
    pub refused: u64,
    pub timeouts: u64,
    pub shed: u64,
    pub panics: u64,
    pub abandoned: u64,
}

impl EngineGauges {
    fn render(&self, x: &mut Exposition) {
        let gauges = [
            (
                "http_server_active_requests",
                "Requests being served or waiting for a hashing permit or a group commit.",
                self.active_requests,
            ),
            (
                "crudrs_open_connections",
                "Client connections open.",
                self.open_connections,
            ),
            (
                "crudrs_queue_depth",
                "Ready connections waiting in the task queue for a worker.",
                self.queue_depth,
            ),
            (
                "crudrs_busy_workers",
                "Workers serving a connection.",
                self.busy_workers,
            ),
            ("crudrs_workers", "Worker threads.", self.workers),
        ];
        for (name, help, v) in gauges {
            x.single(name, "gauge", help, v as f64);
        }
        let counters = [
            (
                "crudrs_connections_accepted_total",
                "Connections accepted.",
                self.accepted,
            ),
            (
                "crudrs_connections_refused_total",
                "Connections refused 503 at the connection limit.",
                self.refused,
            ),
            (
                "crudrs_request_timeouts_total",
                "Requests answered 408: the head or body did not arrive in time.",
                self.timeouts,
            ),
            (
                "crudrs_shed_requests_total",
                "Requests refused 503 while shedding load.",
                self.shed,
            ),
            (
                "crudrs_panics_total",
                "Panics caught while serving (each cost one connection).",
                self.panics,
            ),
            (
                "crudrs_abandoned_requests_total",
                "Requests dropped unserved because their client had gone.",
                self.abandoned,
            ),
        ];
        for (name, help, v) in counters {
            x.single(name, "counter", help, v as f64);
        }
    }
}

/// Reads the engine's gauges (set by the engine at start-up).
pub type Gauges = Box<dyn Fn() -> EngineGauges + Send + Sync>;

/// One route's figures since start, summed over the workers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteFigures {
    pub route: &'static str,
    pub method: &'static str,
    /// Requests by status code (`0`: a status not counted one by one).
    pub statuses: Vec<(u16, u64)>,
    /// Duration bucket counts (not cumulative; the last is +Inf), bounds in
    /// [`DURATION_BUCKETS`], and their sum in nanoseconds.
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
}

/// Everything per-worker, summed: for the admin dashboard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub routes: Vec<RouteFigures>,
    pub bounds: &'static [f64],
    pub queue_wait: Vec<u64>,
    pub queue_wait_sum_ns: u64,
    /// Batch-size bucket counts (bounds in [`BATCH_BUCKETS`]), batches and the
    /// requests they carried.
    pub batch_sizes: Vec<u64>,
    pub batches: u64,
    pub batched_requests: u64,
    pub engine: EngineGauges,
}

/// Every worker's block, and when the process started.
pub struct Metrics {
    workers: Box<[WorkerMetrics]>,
    routes: &'static [RouteLabels],
    pub started: SystemTime,
    gauges: std::sync::OnceLock<Gauges>,
}

impl Metrics {
    pub fn new(workers: usize, routes: &'static [RouteLabels]) -> Metrics {
        Metrics {
            workers: (0..workers.max(1))
                .map(|_| WorkerMetrics::new(routes.len().max(1)))
                .collect(),
            routes,
            started: SystemTime::now(),
            gauges: std::sync::OnceLock::new(),
        }
    }

    /// Sets what renders the engine's gauges (once; later calls are ignored).
    pub fn set_gauges(&self, gauges: Gauges) {
        let _ = self.gauges.set(gauges);
    }

    /// Worker `i`'s block (the last one for an index past the end).
    pub fn worker(&self, i: usize) -> &WorkerMetrics {
        &self.workers[i.min(self.workers.len() - 1)]
    }

    /// The engine's gauges now (zero before the engine registered them).
    pub fn engine(&self) -> EngineGauges {
        self.gauges.get().map(|g| g()).unwrap_or_default()
    }

    /// The per-worker figures summed, and the engine's gauges.
    pub fn figures(&self) -> Figures {
        let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| -> u64 { self.workers.iter().map(f).sum() };
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(r, labels)| RouteFigures {
                route: labels.template,
                method: labels.method,
                statuses: (0..STATUS_SLOTS)
                    .map(|s| {
                        let status = STATUSES.get(s).copied().unwrap_or(0);
                        (status, sum(&|w| w.requests[r * STATUS_SLOTS + s].get()))
                    })
                    .filter(|&(_, n)| n > 0)
                    .collect(),
                buckets: (0..=DURATION_BUCKETS.len())
                    .map(|b| sum(&|w| w.durations[r].buckets[b].get()))
                    .collect(),
                sum_ns: sum(&|w| w.durations[r].sum.get()),
            })
            .collect();
        let batch_sizes: Vec<u64> = (0..=BATCH_BUCKETS.len())
            .map(|b| sum(&|w| w.batch_size.buckets[b].get()))
            .collect();
        Figures {
            routes,
            bounds: &DURATION_BUCKETS,
            queue_wait: (0..=DURATION_BUCKETS.len())
                .map(|b| sum(&|w| w.queue_wait.buckets[b].get()))
                .collect(),
            queue_wait_sum_ns: sum(&|w| w.queue_wait.sum.get()),
            batches: batch_sizes.iter().sum(),
            batch_sizes,
            batched_requests: sum(&|w| w.batch_size.sum.get()),
            engine: self.engine(),
        }
    }

    /// Renders the per-worker figures, summed, and the engine's gauges.
    pub fn render(&self, x: &mut Exposition) {
        let f = self.figures();
        f.engine.render(x);
        x.family(
            "http_server_requests_total",
            "counter",
            "Requests answered, by route template, method and status code.",
        );
        for r in &f.routes {
            for &(status, n) in &r.statuses {
                let status = if status == 0 {
                    "other".to_string()
                } else {
                    status.to_string()
                };
                x.sample(
                    "http_server_requests_total",
                    &[
                        ("http_route", r.route),
                        ("http_request_method", r.method),
                        ("http_response_status_code", &status),
                    ],
                    n as f64,
                );
            }
        }
        x.family(
            "http_server_request_duration_seconds",
            "histogram",
            "Time from a connection's readiness to a request's response, by route template.",
        );
        for r in f.routes.iter().filter(|r| r.buckets.iter().any(|&c| c > 0)) {
            x.histogram(
                "http_server_request_duration_seconds",
                &[("http_route", r.route), ("http_request_method", r.method)],
                &DURATION_BUCKETS,
                &r.buckets,
                r.sum_ns as f64 / 1e9,
            );
        }
        x.family(
            "crudrs_queue_wait_seconds",
            "histogram",
            "Time a ready connection waited in the task queue for a worker.",
        );
        x.histogram(
            "crudrs_queue_wait_seconds",
            &[],
            &DURATION_BUCKETS,
            &f.queue_wait,
            f.queue_wait_sum_ns as f64 / 1e9,
        );
        x.family(
            "crudrs_group_commit_batch_size",
            "histogram",
            "Requests committed together by one group commit.",
        );
        let bounds: Vec<f64> = BATCH_BUCKETS.iter().map(|&b| b as f64).collect();
        x.histogram(
            "crudrs_group_commit_batch_size",
            &[],
            &bounds,
            &f.batch_sizes,
            f.batched_requests as f64,
        );
    }
}

/// A histogram any thread records into (with atomic adds), for figures off the
/// hot path; durations in the request-duration buckets.
pub struct AtomicHistogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> AtomicHistogram {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    pub fn record(&self, took: Duration) {
        let nanos = took.as_nanos() as u64;
        self.buckets[duration_slot(nanos)].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    pub fn render(&self, x: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        x.histogram(
            name,
            labels,
            &DURATION_BUCKETS,
            &counts,
            self.sum_nanos.load(Relaxed) as f64 / 1e9,
        );
    }
}

/// The text exposition format, written into a String.
pub struct Exposition<'a> {
    out: &'a mut String,
}

impl<'a> Exposition<'a> {
    pub fn new(out: &'a mut String) -> Exposition<'a> {
        Exposition { out }
    }

    /// `# HELP` and `# TYPE` of a metric family (once, before its samples).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line. Label values are escaped as the format requires.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", Value(value));
    }

    /// A family member and its value in one call.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram's cumulative `_bucket`s, `_sum` and `_count`; `counts` holds
    /// one count per bound and a last one for +Inf, not cumulative.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let bucket = format!("{name}_bucket");
        let mut running = 0u64;
        for (i, c) in counts.iter().enumerate() {
            running += c;
            let le = bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| Value(*b).to_string());
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, running as f64);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, running as f64);
    }
}

/// A sample value as the format writes it: integers without a fraction.
struct Value(f64);

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
            write!(f, "{}", v as i64)
        } else {
            write!(f, "{v}")
        }
    }
}

/// The standard process metrics, read from /proc: resident memory, open and
/// maximum file descriptors, CPU seconds, start time.
pub fn render_process(x: &mut Exposition, started: SystemTime) {
    // Linux reports times in clock ticks of 1/100 s (USER_HZ) and statm in pages
    // of 4 KiB on every platform this server is built for.
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(pages) = statm.split(' ').nth(1).and_then(|p| p.parse::<f64>().ok()) {
            x.single(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                pages * PAGE,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        x.single(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let max = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(max) = max {
            x.single(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max,
            );
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces, in parentheses).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
        x.single(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (ticks(11) + ticks(12)) / TICKS,
        );
    }
    let start = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    x.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch in seconds.",
        start.floor(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[RouteLabels] = &[
        RouteLabels {
            template: "/health",
            method: "GET",
        },
        RouteLabels {
            template: "",
            method: "_OTHER",
        },
    ];

    #[test]
    fn buckets_take_what_is_at_most_their_bound() {
        assert_eq!(duration_slot(0), 0);
        assert_eq!(duration_slot(100_000), 0);
        assert_eq!(duration_slot(100_001), 1);
        assert_eq!(duration_slot(10_000_000_000), 18);
        assert_eq!(duration_slot(10_000_000_001), 19);
        assert_eq!(status_slot(200), 1);
        assert_eq!(status_slot(299), STATUSES.len());
    }

    #[test]
    fn worker_blocks_are_summed_into_the_text_format() {
        let m = Metrics::new(2, ROUTES);
        m.worker(0).request(0, 200, Duration::from_micros(50));
        m.worker(1).request(0, 200, Duration::from_millis(3));
        m.worker(1).request(1, 404, Duration::from_micros(80));
        m.worker(0).batch(3);
        let mut out = String::new();
        m.render(&mut Exposition::new(&mut out));
        assert!(out.contains(
            "http_server_requests_total{http_route=\"/health\",http_request_method=\"GET\",http_response_status_code=\"200\"} 2\n"
        ));
        assert!(out.contains(
            "http_server_request_duration_seconds_bucket{http_route=\"/health\",http_request_method=\"GET\",le=\"0.0001\"} 1\n"
        ));
        assert!(out.contains(
            "http_server_request_duration_seconds_bucket{http_route=\"/health\",http_request_method=\"GET\",le=\"0.005\"} 2\n"
        ));
        assert!(out.contains(
            "http_server_request_duration_seconds_count{http_route=\"/health\",http_request_method=\"GET\"} 2\n"
        ));
        assert!(out.contains("http_server_request_duration_seconds_sum{http_route=\"/health\",http_request_method=\"GET\"} 0.00305\n"));
        assert!(out.contains("crudrs_group_commit_batch_size_bucket{le=\"4\"} 1\n"));
        assert!(out.contains("crudrs_group_commit_batch_size_bucket{le=\"2\"} 0\n"));
        assert!(out.contains("# TYPE http_server_requests_total counter\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        Exposition::new(&mut out).sample("m", &[("a", "x\"y\\z\nw")], 1.5);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\"} 1.5\n");
    }
}
