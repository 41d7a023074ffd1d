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

    /// Time a client has to send a whole buffered request, head and body (JSON, at most --max-json-bytes), once it started it; then 408 and close. A body trickled a byte at a time cannot hold a connection and its buffer for longer. (Uploads are streamed: between their bytes, --keepalive-timeout applies.)
    #[arg(long, env = "BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Idle time allowed between requests on a keep-alive connection, and between upload bytes; then close.
    #[arg(long, env = "KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// On SIGTERM, first drain for this long: /ready answers 503 (a load balancer stops sending) and every response closes its connection, while requests are still served; then shut down as usual.
    #[arg(long, env = "DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,

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
    #[arg(long, env = "NO_STATS", overrides_with = "stats")]
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
    #[arg(long, env = "SHED_INTERVAL", default_value = "20ms", value_parser = parse_duration)]
    pub shed_interval: Duration,

    /// Rate limits per tier: anonymous (per client IP), free, pro, enterprise (per user), each QUOTA/WINDOW with WINDOW s, m, h or a duration such as 15m; tiers left out keep their default. `off` disables rate limiting.
    #[arg(
        long,
        env = "RATE_LIMITS",
        default_value = "anonymous=100/m,free=1000/m,pro=10000/m,enterprise=100000/m"
    )]
    pub rate_limits: String,

    /// Failed logins allowed per username and per client IP (QUOTA/WINDOW each); past either, logins from there get 429 whether or not the user exists. `off` disables it.
    #[arg(long, env = "LOGIN_LIMITS", default_value = "username=10/15m,ip=100/15m")]
    pub login_limits: String,

    /// Proxies (CIDR list, e.g. 10.0.0.0/8,127.0.0.1) whose X-Forwarded-For is believed: behind them, the client is the right-most address not in this list.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Rate-limit keys (client IPs, users) tracked at once per table; idle keys are dropped first.
    #[arg(long, env = "RATE_LIMIT_KEYS", default_value_t = 1_000_000)]
    pub rate_limit_keys: usize,

    /// How long a cached token (its user and tier) is trusted before the database is asked again: a tier change or a revocation made elsewhere takes effect here within this time.
    #[arg(long, env = "TOKEN_RECHECK", default_value = "60s", value_parser = parse_duration)]
    pub token_recheck: Duration,

    /// Share the 1MRC statistics with every instance on the same database: each publishes what it counted every 250 ms, and GET /stats answers for all of them.
    #[arg(long, env = "SHARED_STATS")]
    pub shared_stats: bool,

    /// Share rate-limit buckets with every instance on the same database: units are leased from PostgreSQL a twentieth of the quota at a time and spent locally, so all instances together never allow more than the quota.
    #[arg(long, env = "SHARED_LIMITS")]
    pub shared_limits: bool,

    /// This instance's name, sent in an X-Instance-Id header on every response and in the metrics (1 to 64 visible ASCII characters; unset: no header).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// At start-up, make this user an admin (creating the account if need be) and print a new admin key for it, once, after the listening line.
    #[arg(long, env = "CREATE_ADMIN", value_name = "NAME")]
    pub create_admin: Option<String>,

    /// Append one JSON line per answered request to this file (off when unset).
    #[arg(long, env = "ACCESS_LOG")]
    pub access_log: Option<PathBuf>,

    /// Record no metrics and answer GET /metrics 404 (for measuring what metrics cost).
    #[arg(long, env = "NO_METRICS")]
    pub no_metrics: bool,

    /// Bearer token GET /metrics requires; unset: /metrics is open to anyone who can reach the server.
    #[arg(long, env = "METRICS_TOKEN")]
    pub metrics_token: Option<String>,

    /// Relay GET /relay/PATH?QUERY to PATH?QUERY under this upstream base URL (http:// only; off when unset).
    #[arg(long, env = "RELAY_UPSTREAM", value_name = "URL")]
    pub relay_upstream: Option<String>,

    /// Longest a relayed miss waits for its answer: for a fetch thread, for another instance's fetch, for the upstream (connecting included); past it, 504.
    #[arg(long, env = "RELAY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub relay_timeout: Duration,

    /// Upstream requests in flight at once (fetch threads), and idle upstream connections kept.
    #[arg(long, env = "RELAY_CONNECTIONS", default_value_t = 32)]
    pub relay_connections: usize,

    /// How long an upstream response that gives no freshness of its own (no max-age, s-maxage or Expires) stays fresh.
    #[arg(long, env = "RELAY_DEFAULT_TTL", default_value = "60s", value_parser = parse_duration)]
    pub relay_default_ttl: Duration,

    /// stale-while-revalidate for upstream responses that do not set it: a stale entry is served this long after it expires while one refresh runs.
    #[arg(long, env = "RELAY_STALE_WHILE_REVALIDATE", default_value = "0s", value_parser = parse_duration)]
    pub relay_stale_while_revalidate: Duration,

    /// stale-if-error for upstream responses that do not set it: a stale entry is served this long after it expires when the upstream fails.
    #[arg(long, env = "RELAY_STALE_IF_ERROR", default_value = "0s", value_parser = parse_duration)]
    pub relay_stale_if_error: Duration,

    /// Largest upstream response body the relay takes (bytes); a larger one is 502.
    #[arg(long, env = "RELAY_MAX_BODY", default_value_t = 8 << 20)]
    pub relay_max_body: u64,

    /// Bytes the relay's in-memory cache (level 1) may hold.
    #[arg(long, env = "CACHE_BYTES", default_value_t = 64 << 20)]
    pub cache_bytes: u64,

    /// Bytes of cached sample reads and listing pages (GET /api/sample/{id}, GET /api/samples), invalidated by every write that changes them, in every process on the database; 0: off.
    #[arg(long, env = "READ_CACHE_BYTES", default_value_t = 16 << 20)]
    pub read_cache_bytes: u64,

    /// Test only: route GET /debug/panic to a handler that panics (a panic costs one
    /// connection, never a worker) and GET /debug/sleep/{ms} to one that holds its
    /// worker that long (an overload on demand).
    #[arg(long, env = "TEST_ROUTES", hide = true)]
    pub test_routes: bool,
}

/// A quota per window, as `--rate-limits` and `--login-limits` give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub quota: u64,
    pub window: Duration,
}

/// The rate limit of each tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    pub anonymous: RateSpec,
    pub free: RateSpec,
    pub pro: RateSpec,
    pub enterprise: RateSpec,
}

/// Limits on failed logins; `None`: not limited that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    pub per_username: Option<RateSpec>,
    pub per_ip: Option<RateSpec>,
}

/// An address range, `ADDR/PREFIX` (a bare address is a range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid address in {s:?}: expected e.g. 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("invalid prefix length in {s:?}: 0 to {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses `QUOTA/WINDOW`: `100/m`, `5/s`, `10/15m`, `1000/h`.
pub fn parse_rate(s: &str) -> Result<RateSpec, String> {
    let s = s.trim();
    let (quota, window) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid rate {s:?}: expected QUOTA/WINDOW, e.g. 100/m"))?;
    let quota: u64 = quota
        .trim()
        .parse()
        .ok()
        .filter(|&q| q > 0)
        .ok_or_else(|| format!("invalid quota in {s:?}: a positive whole number"))?;
    let window = window.trim();
    // A bare unit is one of it: `m` is `1m`.
    let window = if window.starts_with(|c: char| c.is_ascii_digit()) {
        parse_duration(window)?
    } else {
        parse_duration(&format!("1{window}"))?
    };
    if window.is_zero() {
        return Err(format!("invalid window in {s:?}: must be longer than zero"));
    }
    Ok(RateSpec { quota, window })
}

/// Parses `--rate-limits`: `off`, or `tier=RATE,...` over the defaults.
fn parse_tier_limits(s: &str) -> Result<Option<TierLimits>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    let per_minute = |quota| RateSpec {
        quota,
        window: Duration::from_secs(60),
    };
    let mut t = TierLimits {
        anonymous: per_minute(100),
        free: per_minute(1_000),
        pro: per_minute(10_000),
        enterprise: per_minute(100_000),
    };
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        let (tier, rate) = item
            .split_once('=')
            .ok_or_else(|| format!("invalid rate limit {item:?}: expected TIER=QUOTA/WINDOW"))?;
        let slot = match tier.trim() {
            "anonymous" => &mut t.anonymous,
            "free" => &mut t.free,
            "pro" => &mut t.pro,
            "enterprise" => &mut t.enterprise,
            other => {
                return Err(format!(
                    "unknown tier {other:?}: anonymous, free, pro or enterprise"
                ))
            }
        };
        *slot = parse_rate(rate)?;
    }
    Ok(Some(t))
}

/// Parses `--login-limits`: `off`, or `username=RATE,ip=RATE` (either may be left out).
fn parse_login_limits(s: &str) -> Result<Option<LoginLimits>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    let mut l = LoginLimits {
        per_username: None,
        per_ip: None,
    };
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        match item.split_once('=').map(|(k, v)| (k.trim(), v)) {
            Some(("username", rate)) => l.per_username = Some(parse_rate(rate)?),
            Some(("ip", rate)) => l.per_ip = Some(parse_rate(rate)?),
            _ => {
                return Err(format!(
                    "invalid login limit {item:?}: expected username=QUOTA/WINDOW or ip=QUOTA/WINDOW"
                ))
            }
        }
    }
    Ok(Some(l))
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
    pub body_timeout: Duration,
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
    /// `None`: rate limiting is off.
    pub rate_limits: Option<TierLimits>,
    /// `None`: failed logins are not limited.
    pub login_limits: Option<LoginLimits>,
    pub trusted_proxies: Vec<Cidr>,
    pub rate_limit_keys: usize,
    pub token_recheck: Duration,
    pub metrics_token: Option<String>,
    pub metrics: bool,
    pub access_log: Option<PathBuf>,
    pub create_admin: Option<String>,
    pub instance_id: Option<String>,
    pub shared_stats: bool,
    pub drain_delay: Duration,
    pub shared_limits: bool,
    /// `None`: the relay is off.
    pub relay: Option<RelayConfig>,
    pub cache_bytes: u64,
    pub read_cache_bytes: u64,
}

/// The relay's settings (`--relay-*`).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `http://authority/base-path`, without a trailing slash.
    pub upstream: String,
    pub timeout: Duration,
    pub connections: usize,
    pub default_ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub max_body: u64,
}

/// Checks an upstream base URL: `http://host[:port][/path]`, no query, no
/// fragment, no credentials.
fn parse_upstream(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("must start with http:// (the relay does not speak TLS)")?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err("needs a host, and no credentials".into());
    }
    if url.contains(['?', '#']) || !url.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("may have no query, fragment, space or control character".into());
    }
    Ok(url.trim_end_matches('/').to_string())
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
        if let Some(id) = &a.instance_id {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err("instance-id must be 1 to 64 visible ASCII characters".into());
            }
        }
        let rate_limits = parse_tier_limits(&a.rate_limits).map_err(|e| format!("--rate-limits: {e}"))?;
        let login_limits = parse_login_limits(&a.login_limits).map_err(|e| format!("--login-limits: {e}"))?;
        let trusted_proxies = a
            .trusted_proxies
            .split(',')
            .filter(|c| !c.trim().is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--trusted-proxies: {e}"))?;
        let relay = match a.relay_upstream.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => Some(RelayConfig {
                upstream: parse_upstream(url).map_err(|e| format!("--relay-upstream {url:?}: {e}"))?,
                timeout: a.relay_timeout.max(Duration::from_millis(1)),
                connections: a.relay_connections.clamp(1, 1024),
                default_ttl: a.relay_default_ttl,
                stale_while_revalidate: a.relay_stale_while_revalidate,
                stale_if_error: a.relay_stale_if_error,
                max_body: a.relay_max_body,
            }),
        };
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
            body_timeout: a.body_timeout,
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
            rate_limits,
            login_limits,
            trusted_proxies,
            rate_limit_keys: a.rate_limit_keys.max(1),
            token_recheck: a.token_recheck,
            metrics_token: a.metrics_token.filter(|t| !t.is_empty()),
            metrics: !a.no_metrics,
            access_log: a.access_log,
            create_admin: a.create_admin,
            instance_id: a.instance_id,
            shared_stats: a.shared_stats,
            drain_delay: a.drain_delay,
            shared_limits: a.shared_limits,
            relay,
            cache_bytes: a.cache_bytes,
            read_cache_bytes: a.read_cache_bytes,
        })
    }

    /// The config of `server 1` with these flags (for unit tests).
    #[cfg(test)]
    pub fn for_tests(flags: &[&str]) -> Config {
        let args = ["server", "1"].iter().chain(flags);
        match Args::try_parse_from(args).map(|a| Config::from_args(a, false)) {
            Ok(Ok(config)) => config,
            other => panic!("invalid test flags {flags:?}: {other:?}"),
        }
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
    fn rates_parse_with_bare_units_and_durations() {
        let m = Duration::from_secs(60);
        assert_eq!(
            parse_rate("100/m"),
            Ok(RateSpec {
                quota: 100,
                window: m
            })
        );
        assert_eq!(parse_rate("5/s").map(|r| r.window), Ok(Duration::from_secs(1)));
        assert_eq!(
            parse_rate("1000/h").map(|r| r.window),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(parse_rate("10/15m").map(|r| r.window), Ok(15 * m));
        for bad in ["100", "0/m", "-1/m", "10/0s", "10/y", "x/m"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tier_limits_override_defaults_and_off_disables() {
        let t = parse_tier_limits("free=5/s").expect("valid").expect("on");
        assert_eq!(t.free.quota, 5);
        assert_eq!(t.anonymous.quota, 100);
        assert_eq!(t.enterprise.quota, 100_000);
        assert_eq!(parse_tier_limits("off"), Ok(None));
        assert!(parse_tier_limits("gold=1/s").is_err());
        assert!(parse_tier_limits("free").is_err());
        let l = parse_login_limits("username=3/m").expect("valid").expect("on");
        assert_eq!(l.per_username.map(|r| r.quota), Some(3));
        assert_eq!(l.per_ip, None);
        assert!(parse_login_limits("user=3/m").is_err());
    }

    #[test]
    fn cidrs_match_their_ranges() {
        let net = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let one = Cidr::parse("127.0.0.1").expect("valid");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("valid");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6 = Cidr::parse("fd00::/8").expect("valid");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("fe80::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(Args::try_parse_from(["server", "0"]).is_err());
    }

    #[test]
    fn upstream_urls_are_http_with_a_host_and_nothing_after_the_path() {
        assert_eq!(
            parse_upstream("http://127.0.0.1:9000/"),
            Ok("http://127.0.0.1:9000".into())
        );
        assert_eq!(
            parse_upstream("http://api.example/v2/"),
            Ok("http://api.example/v2".into())
        );
        for bad in [
            "https://a",
            "ftp://a",
            "http://",
            "http:///x",
            "http://u:p@a",
            "http://a/?q",
            "http://a/#f",
            "http://a b",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
