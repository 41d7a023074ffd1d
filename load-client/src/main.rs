//! `load-client [THREADS] [SOCKETS_PER_THREAD] [REQUESTS_PER_SOCKET]`: offers load to
//! crudrs and reports completed, validated responses per endpoint with HDR latency
//! percentiles. Exits non-zero when any answer was wrong or a scenario check failed.

use clap::Parser;
use loadclient::engine::{self, Budget, Live, Plan};
use loadclient::http::Target;
use loadclient::mix::{Kind, Mix};
use loadclient::relay::{CountUrl, Keys, XCache};
use loadclient::{parse_duration, report, scenario};
use serde_json::json;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "load-client",
    version,
    about = "Load generator for crudrs: counts completed, validated responses"
)]
struct Args {
    /// Threads, each driving its own sockets.
    #[arg(default_value_t = 2)]
    threads: usize,
    /// Sockets (keep-alive connections) per thread.
    #[arg(default_value_t = 32)]
    sockets_per_thread: usize,
    /// Requests per socket (ignored with --duration or --requests).
    #[arg(default_value_t = 1000)]
    requests_per_socket: u64,
    /// Server to load.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Run for this long (e.g. 10s) instead of a request count.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Total requests instead of the per-socket count.
    #[arg(long)]
    requests: Option<u64>,
    /// Request kinds with weights: create, login, sample, file, event, counter, health, get-sample, list-samples, relay.
    #[arg(long, default_value = "create=1,login=1,sample=1")]
    mix: String,
    /// Requests in flight per socket.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open model: a fixed total arrival rate in requests per second; latency counts
    /// from each request's intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Write the results as JSON to this file ("-" for stdout; the table then goes to stderr).
    #[arg(long)]
    json: Option<String>,
    /// Seed for the request mix and values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A scenario: 1mrc or counter (server state checked), or relay (GET /relay/...,
    /// answers counted by X-Cache).
    #[arg(long)]
    scenario: Option<String>,
    /// Relay: distinct resources, /relay/PREFIX/0 .. /relay/PREFIX/{N-1}.
    #[arg(long, default_value_t = 10)]
    relay_keys: u64,
    /// Relay: the path segment before the key number (a fresh one makes every key a miss).
    #[arg(long, default_value = "k")]
    relay_prefix: String,
    /// Relay: the max-age the upstream gives each resource, in seconds.
    #[arg(long, default_value_t = 600)]
    relay_ttl: u64,
    /// Relay: the body size the upstream pads each resource to, in bytes.
    #[arg(long, default_value_t = 559)]
    relay_bytes: u64,
    /// Relay: how long the upstream waits before answering, in milliseconds (0: no delay asked).
    #[arg(long, default_value_t = 0)]
    relay_delay_ms: u64,
    /// The test upstream's GET /__count (e.g. http://127.0.0.1:9000/__count): its total is
    /// read before and after the run, and the difference reported.
    #[arg(long)]
    upstream_count_url: Option<String>,
    /// Users for 1mrc (user_0 .. user_{N-1}).
    #[arg(long, default_value_t = 75_000)]
    users: u64,
    /// Accounts created in set-up for authenticated requests.
    #[arg(long, default_value_t = 8)]
    setup_users: usize,
    /// No live progress.
    #[arg(long)]
    quiet: bool,
    /// Connect from this many loopback addresses (127.0.0.2 up), so a server that
    /// rate-limits per client IP sees that many clients (local targets only).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("load-client: {e}");
            ExitCode::from(2)
        }
    }
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn run(a: Args) -> Result<bool, String> {
    if a.threads == 0 || a.sockets_per_thread == 0 || a.pipeline == 0 {
        return Err("threads, sockets and pipeline depth must be at least 1".into());
    }
    let target = Target::parse(&a.target)?;
    let (mix, sequential, default_total) = match a.scenario.as_deref() {
        None => (Mix::parse(&a.mix)?, None, None),
        Some("1mrc") => (Mix::parse("event")?, Some(a.users.max(1)), Some(1_000_000)),
        Some("counter") => (Mix::parse("counter")?, None, Some(10_000)),
        Some("relay") => (Mix::parse("relay")?, None, None),
        Some(other) => return Err(format!("unknown scenario {other:?} (1mrc, counter or relay)")),
    };
    // 1mrc needs a known N; the counter check holds for any number of requests.
    let budget = match (a.duration, a.requests.or(default_total)) {
        (Some(d), _) if a.scenario.as_deref() != Some("1mrc") && a.requests.is_none() => Budget::For(d),
        (_, Some(n)) => Budget::Total(n),
        (Some(d), None) => Budget::For(d),
        (None, None) => Budget::PerSocket(a.requests_per_socket),
    };
    let run_tag = loadclient::run_tag(a.seed);
    let needs_users = mix.kinds().any(Kind::needs_users);
    let fixture = if needs_users {
        let samples = mix
            .kinds()
            .any(|k| matches!(k, Kind::GetSample | Kind::ListSamples));
        scenario::setup(&target, &run_tag, a.setup_users.max(1), samples)?
    } else {
        loadclient::mix::Fixture {
            run: run_tag,
            ..Default::default()
        }
    };
    let before_stats = if a.scenario.as_deref() == Some("1mrc") {
        Some(scenario::stats(&target)?)
    } else {
        None
    };
    let counter_start = if a.scenario.as_deref() == Some("counter") {
        Some(scenario::counter_value(&target)?)
    } else {
        None
    };
    let count_url = a.upstream_count_url.as_deref().map(CountUrl::parse).transpose()?;
    let upstream_before = count_url.as_ref().map(CountUrl::total).transpose()?;

    let plan = Plan {
        threads: a.threads,
        sockets_per_thread: a.sockets_per_thread,
        budget,
        pipeline: a.pipeline,
        rate: a.rate,
        mix,
        seed: a.seed,
        sequential_events: sequential,
        source_ips: a.source_ips,
        relay: Keys {
            prefix: a.relay_prefix.clone(),
            keys: a.relay_keys.max(1),
            ttl: a.relay_ttl,
            size: a.relay_bytes,
            delay_ms: a.relay_delay_ms,
        },
    };
    let live = Live::default();
    let json_to_stdout = a.json.as_deref() == Some("-");
    let show = !a.quiet && !json_to_stdout && std::io::stderr().is_terminal();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let outcome = std::thread::scope(|s| {
        let progress = show.then(|| {
            let live = &live;
            s.spawn(move || progress(live))
        });
        let r = engine::run(&plan, &target, &fixture, &live);
        live.stop.store(true, Relaxed);
        if let Some(p) = progress {
            let _ = p.join();
        }
        r
    })?;
    let cpu = cpu_seconds() - cpu0;
    let elapsed = started.elapsed();

    // Scenario checks.
    let mut problems = Vec::new();
    if let Some(before) = &before_stats {
        let after = scenario::stats(&target)?;
        let n = match plan.budget {
            Budget::Total(n) => n,
            _ => 0,
        };
        problems.extend(scenario::check_1mrc(before, &after, n, a.users.max(1)));
        let failed: u64 = outcome.stats.values().map(|s| s.error_count()).sum();
        if failed > 0 {
            problems.push(format!("{failed} events were not accepted"));
        }
    }
    if let Some(start) = counter_start {
        let end = scenario::counter_value(&target)?;
        problems.extend(scenario::check_counter(start, end, &outcome.counter_values));
    }
    let upstream = match (&count_url, upstream_before) {
        (Some(url), Some(before)) => Some((before, url.total()?)),
        _ => None,
    };
    let cache = outcome.cache;
    let relayed = plan.mix.kinds().any(|k| k == Kind::Relay);
    if relayed && cache.get(XCache::None) > 0 {
        problems.push(format!(
            "{} relay answers had no X-Cache header (is the server started with --relay-upstream?)",
            cache.get(XCache::None)
        ));
    }

    let completed: u64 = outcome.stats.values().map(|s| s.count()).sum();
    let errors: u64 = outcome.stats.values().map(|s| s.error_count()).sum();
    let achieved = completed as f64 / elapsed.as_secs_f64().max(1e-9);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(a.threads) as f64;
    let cpu_share = cpu / elapsed.as_secs_f64().max(1e-9) / cores;
    let client_bound = cpu_share >= 0.9;
    let offered = match a.rate {
        Some(r) => format!("{r:.0} req/s (open model)"),
        None => format!(
            "closed loop, {} sockets × pipeline {}",
            a.threads * a.sockets_per_thread,
            a.pipeline
        ),
    };

    let mut text = report::table(&outcome.stats, elapsed);
    text.push_str(&format!(
        "\n\noffered: {offered}; achieved: {achieved:.0} req/s over {:.2}s; client CPU {:.0}% of {} core(s){}",
        elapsed.as_secs_f64(),
        cpu_share * 100.0,
        cores,
        if client_bound { " — CLIENT-BOUND: the client, not the server, limited this run" } else { "" }
    ));
    if let Some(start) = counter_start {
        text.push_str(&format!(
            "\ncounter: start {start}, {} increments answered",
            outcome.counter_values.len()
        ));
    }
    if relayed {
        text.push_str(&format!("\nrelay: {}", cache.line()));
    }
    if let Some((before, after)) = upstream {
        text.push_str(&format!(
            "\nupstream: {} requests during the run (total {before} before, {after} after)",
            after.saturating_sub(before)
        ));
    }
    for p in &problems {
        text.push_str(&format!("\nCHECK FAILED: {p}"));
    }
    let limited: u64 = outcome
        .stats
        .values()
        .flat_map(|s| &s.errors)
        .filter(|(reason, _)| reason.starts_with("status 429"))
        .map(|(_, n)| n)
        .sum();
    if limited > 0 {
        text.push_str(&format!(
            "\n{limited} requests were rate-limited (429): a load test wants the server started with \
`--rate-limits off` (or limits sized for it, with --source-ips for per-IP keys)"
        ));
    }
    match a.scenario.as_deref() {
        Some(name @ ("1mrc" | "counter")) if problems.is_empty() => {
            text.push_str(&format!("\nscenario {name}: server state verified exactly"));
        }
        Some("relay") if problems.is_empty() => {
            text.push_str("\nscenario relay: every answer carried X-Cache");
        }
        _ => {}
    }

    let doc = json!({
        "offered": offered,
        "rate_offered": a.rate,
        "achieved_rate": achieved,
        "elapsed_s": elapsed.as_secs_f64(),
        "completed": completed,
        "errors": errors,
        "client_cpu_share": cpu_share,
        "client_bound": client_bound,
        "threads": a.threads, "sockets_per_thread": a.sockets_per_thread, "pipeline": a.pipeline,
        "kinds": report::rows_json(&outcome.stats, elapsed),
        "per_second": outcome.per_second,
        "scenario": a.scenario,
        "checks_failed": problems,
        "x_cache": relayed.then(|| cache.json()),
        "upstream_requests": upstream.map(|(before, after)| after.saturating_sub(before)),
    });
    report::emit(&text, &doc, a.json.as_deref())?;
    Ok(errors == 0 && problems.is_empty())
}

fn progress(live: &Live) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut last = (Instant::now(), 0u64);
    while !live.stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let done = live.completed.load(Relaxed);
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
        last = (Instant::now(), done);
        bar.set_message(format!(
            "completed {done}  rate {rate:.0}/s  errors {}  open sockets {}",
            live.errors.load(Relaxed),
            live.open_sockets.load(Relaxed)
        ));
        bar.tick();
    }
    bar.finish_and_clear();
}
