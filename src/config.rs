//! Command-line flags and their environment twins, turned into a validated [`Config`].
//!
//! Every limit the server enforces is a field here, with its default and what happens
//! past it. Nothing else in the crate reads the environment or argv.

use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// crudrs: an HTTP/1.1 REST API server backed by PostgreSQL.
#[derive(Parser, Debug, Clone)]
#[command(name = "server", version, about, long_about = None)]
pub struct Args {
    /// Worker threads (default: the number of CPUs). As in the C server, the first positional argument.
    #[arg(value_name = "THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// TCP port to listen on; 0 picks a free one (printed on stdout).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// PostgreSQL connection string (key=value or postgres:// URL).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "host=localhost user=postgres dbname=crudrs"
    )]
    pub database_url: String,

    /// Pooled database connections (default: threads + 2). Each worker holds at most one at a time.
    #[arg(long, env = "DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,

    /// How long a request waits for a database connection before it gets 503.
    #[arg(long, env = "DB_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub db_timeout: Duration,

    /// How long start-up waits for the database to accept the schema before giving up.
    #[arg(long, env = "DB_STARTUP_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub db_startup_wait: Duration,

    /// Consecutive database failures (failed checkouts, lost connections) that open the circuit breaker; while open, routes that need the database answer 503 at once.
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long the database breaker stays open before one probe request may try again.
    #[arg(long, env = "BREAKER_RESET", default_value = "1s", value_parser = parse_duration)]
    pub breaker_reset: Duration,

    /// Open connections accepted at once; past it new ones get 503 + Retry-After and are closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Listen backlog (the C server's backlog of 5 caused 1 s p99 spikes under load).
    #[arg(long, env = "BACKLOG", default_value_t = 1024)]
    pub backlog: i32,

    /// Largest request head (request line + headers) in bytes; past it, 431 and close.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 8192)]
    pub max_header_bytes: usize,

    /// Most header fields in one request (at most 128); past it, 431 and close.
    #[arg(long, env = "MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,

    /// Largest JSON request body; past it (decided from Content-Length), 413 and close.
    #[arg(long, env = "MAX_JSON_BYTES", default_value_t = 64 * 1024)]
    pub max_json_bytes: usize,

    /// Largest file upload; past it, 413 and close.
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    /// Time a client has to send a complete request head once it started one; then 408 and close.
    #[arg(long, env = "HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Idle time allowed between requests on a keep-alive connection, and between body bytes; then close.
    #[arg(long, env = "KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// How long shutdown waits for in-flight requests before closing everything.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Argon2id memory cost in KiB (OWASP's 19 MiB by default; tests use 8).
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19 * 1024)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations.
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Password hashes computed at once (default: half the workers, at least 1). Requests past it wait without holding a worker.
    #[arg(long, env = "HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,

    /// Lifetime of an API token.
    #[arg(long, env = "TOKEN_TTL", default_value = "7d", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Tokens kept in the in-process cache; past it, an arbitrary entry is evicted.
    #[arg(long, env = "TOKEN_CACHE_SIZE", default_value_t = 100_000)]
    pub token_cache_size: usize,

    /// Print a status line every second on stderr (default: when stderr is a terminal).
    #[arg(long, env = "STATS", overrides_with = "no_stats")]
    pub stats: bool,

    /// Never print the status line.
    #[arg(long, overrides_with = "stats")]
    pub no_stats: bool,

    /// Longest a group-committed write (a counter increment, a sample insert) waits for its batch to fill up to the last batch's size.
    #[arg(long, env = "COUNTER_GATHER", default_value = "300us", value_parser = parse_duration)]
    pub counter_gather: Duration,

    /// JSON response bodies of at least this many bytes are gzip-compressed for clients that accept gzip (0: never compress).
    #[arg(long, env = "COMPRESS_MIN_BYTES", default_value_t = 1024)]
    pub compress_min_bytes: usize,

    /// Directory for uploaded files (created if missing).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Load shedding: when connections wait longer than this in the task queue for a whole --shed-interval, new requests get 503 + Retry-After until the queue drains (0: never shed).
    #[arg(long, env = "SHED_TARGET", default_value = "20ms", value_parser = parse_duration)]
    pub shed_target: Duration,

    /// How long the queue wait must stay above --shed-target before shedding starts.
    #[arg(long, env = "SHED_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub shed_interval: Duration,

    /// Test only: route GET /debug/panic to a handler that panics (a panic costs one
    /// connection, never a worker) and GET /debug/sleep/{ms} to one that holds its
    /// worker that long (an overload on demand).
    #[arg(long, env = "TEST_ROUTES", hide = true)]
    pub test_routes: bool,
}

/// Validated settings; see [`Args`] for what each means.
#[derive(Debug, Clone)]
pub struct Config {
    pub threads: usize,
    pub addr: SocketAddr,
    pub database_url: String,
    pub db_pool_size: u32,
    pub db_timeout: Duration,
    pub db_startup_wait: Duration,
    pub breaker_failures: u32,
    pub breaker_reset: Duration,
    pub max_connections: usize,
    pub backlog: i32,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_json_bytes: usize,
    pub max_upload_bytes: u64,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub shutdown_grace: Duration,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub hash_concurrency: usize,
    pub token_ttl: Duration,
    pub token_cache_size: usize,
    pub stats: bool,
    pub counter_gather: Duration,
    pub compress_min_bytes: usize,
    pub data_dir: PathBuf,
    pub shed_target: Duration,
    pub shed_interval: Duration,
    pub test_routes: bool,
}

impl Config {
    /// Validates raw flags. `stderr_is_terminal` decides the status-line default.
    pub fn from_args(a: Args, stderr_is_terminal: bool) -> Result<Config, String> {
        let threads = match a.threads {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        if a.max_connections == 0 {
            return Err("max-connections must be at least 1".into());
        }
        if a.max_headers == 0 || a.max_headers > crate::http::parse::HEADER_SLOTS {
            return Err(format!(
                "max-headers must be between 1 and {}",
                crate::http::parse::HEADER_SLOTS
            ));
        }
        if a.max_header_bytes < 64 {
            return Err("max-header-bytes must be at least 64".into());
        }
        if a.argon2_memory_kib < 8 || a.argon2_iterations == 0 {
            return Err("argon2 memory must be at least 8 KiB and iterations at least 1".into());
        }
        let hash_concurrency = a.hash_concurrency.unwrap_or((threads / 2).max(1));
        if hash_concurrency == 0 {
            return Err("hash-concurrency must be at least 1".into());
        }
        Ok(Config {
            threads,
            addr: SocketAddr::new(a.bind, a.port),
            database_url: a.database_url,
            db_pool_size: a.db_pool_size.unwrap_or(threads as u32 + 2).max(1),
            db_timeout: a.db_timeout,
            db_startup_wait: a.db_startup_wait,
            breaker_failures: a.breaker_failures.max(1),
            breaker_reset: a.breaker_reset,
            max_connections: a.max_connections,
            backlog: a.backlog.max(1),
            max_header_bytes: a.max_header_bytes,
            max_headers: a.max_headers,
            max_json_bytes: a.max_json_bytes,
            max_upload_bytes: a.max_upload_bytes,
            header_timeout: a.header_timeout,
            keepalive_timeout: a.keepalive_timeout,
            shutdown_grace: a.shutdown_grace,
            argon2_memory_kib: a.argon2_memory_kib,
            argon2_iterations: a.argon2_iterations,
            hash_concurrency,
            token_ttl: a.token_ttl,
            token_cache_size: a.token_cache_size.max(1),
            stats: if a.no_stats {
                false
            } else {
                a.stats || stderr_is_terminal
            },
            counter_gather: a.counter_gather,
            compress_min_bytes: a.compress_min_bytes,
            data_dir: a.data_dir,
            shed_target: a.shed_target,
            shed_interval: a.shed_interval,
            test_routes: a.test_routes,
        })
    }

    /// Bytes a worker reads into at once: one whole JSON request must fit.
    pub fn read_buffer_bytes(&self) -> usize {
        (self.max_header_bytes + self.max_json_bytes + 1024).max(16 * 1024)
    }
}

/// Parses `250ms`, `10s`, `5m`, `2h`, `7d` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use us, ms, s, m, h or d"
            ))
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10y").is_err());
    }

    #[test]
    fn threads_are_positional_and_flags_have_defaults() {
        let a = Args::try_parse_from(["server", "3", "--port", "0"]).expect("valid args");
        let c = Config::from_args(a, false).expect("valid config");
        assert_eq!(c.threads, 3);
        assert_eq!(c.addr.port(), 0);
        assert_eq!(c.db_pool_size, 5);
        assert_eq!(c.hash_concurrency, 1);
        assert!(!c.stats);
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(Args::try_parse_from(["server", "0"]).is_err());
    }
}
