//! GET /metrics: every figure in the Prometheus text format (0.0.4), optionally
//! behind `--metrics-token`. Never rate-limited or shed (its route costs nothing),
//! so a scrape still sees an overloaded server.
//!
//! The per-request figures and the engine's gauges come from `obs::metrics`;
//! what this layer owns (the pool, the breakers, the limits, the caches, the
//! relay's upstream figures, the counter, events, uploads) is read here at scrape
//! time.

use super::error::{ApiError, Error};
use super::request::{Reply, Request};
use super::route::CacheName;
use super::state::State;
use crate::obs::metrics::{render_process, Exposition};
use std::sync::atomic::Ordering::Relaxed;

/// The media type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn metrics(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    if let Some(token) = &st.config.metrics_token {
        let given = req
            .authorization()
            .and_then(|a| a.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    let mut text = String::with_capacity(32 * 1024);
    let mut x = Exposition::new(&mut text);
    st.metrics.render(&mut x);

    let (open, idle) = st.db.pool_state();
    x.family(
        "crudrs_db_pool_connections",
        "gauge",
        "Pooled database connections, by state.",
    );
    x.sample(
        "crudrs_db_pool_connections",
        &[("state", "idle")],
        f64::from(idle),
    );
    x.sample(
        "crudrs_db_pool_connections",
        &[("state", "in_use")],
        f64::from(open.saturating_sub(idle)),
    );
    x.single(
        "crudrs_db_pool_max_connections",
        "gauge",
        "The database pool's size.",
        f64::from(st.db.pool_size()),
    );
    x.family(
        "crudrs_db_pool_wait_seconds",
        "histogram",
        "Time a request waited for a pooled database connection.",
    );
    st.db.checkouts.render(&mut x, "crudrs_db_pool_wait_seconds", &[]);

    let mut breakers = vec![("database", st.db.breaker_state(), st.db.breaker_opened())];
    if let Some(relay) = &st.relay {
        breakers.push(("upstream", relay.breaker_state(), relay.breaker_opened()));
    }
    x.family(
        "crudrs_circuit_breaker_state",
        "gauge",
        "1 for the state each dependency's circuit breaker is in.",
    );
    for (dependency, state, _) in &breakers {
        for s in ["closed", "open", "half-open"] {
            x.sample(
                "crudrs_circuit_breaker_state",
                &[("dependency", dependency), ("state", s)],
                f64::from(u8::from(s == state.as_str())),
            );
        }
    }
    x.family(
        "crudrs_circuit_breaker_opened_total",
        "counter",
        "Times each dependency's circuit breaker opened.",
    );
    for (dependency, _, opened) in &breakers {
        x.sample(
            "crudrs_circuit_breaker_opened_total",
            &[("dependency", dependency)],
            *opened as f64,
        );
    }

    let (tiers, logins) = st.limits.refusals();
    x.family(
        "crudrs_rate_limited_requests_total",
        "counter",
        "Requests refused 429 by the rate limits, by tier.",
    );
    for (tier, n) in tiers {
        x.sample(
            "crudrs_rate_limited_requests_total",
            &[("tier", tier.name())],
            n as f64,
        );
    }
    x.single(
        "crudrs_login_limited_total",
        "counter",
        "Logins refused 429 by the failed-login limits.",
        logins as f64,
    );

    render_caches(st, &mut x);

    let events = st.events.stats();
    x.single(
        "crudrs_events_total",
        "counter",
        "Events (POST /event) counted since start.",
        events.total as f64,
    );
    x.single(
        "crudrs_event_users",
        "gauge",
        "Distinct users among the events.",
        events.unique_users as f64,
    );
    x.single(
        "crudrs_counter_increments_total",
        "counter",
        "Counter increments committed by this process.",
        st.increments.load(Relaxed) as f64,
    );
    x.single(
        "crudrs_uploads_total",
        "counter",
        "Files uploaded and stored.",
        st.uploads.load(Relaxed) as f64,
    );
    x.single(
        "crudrs_upload_bytes_total",
        "counter",
        "Bytes of the files uploaded and stored.",
        st.upload_bytes.load(Relaxed) as f64,
    );
    if let Some(id) = &st.config.instance_id {
        x.family(
            "crudrs_instance_info",
            "gauge",
            "Which instance this is (--instance-id).",
        );
        x.sample("crudrs_instance_info", &[("instance", id)], 1.0);
    }
    render_process(&mut x, st.metrics.started);
    out.extend_from_slice(text.as_bytes());
    Ok(Reply {
        content_type: Some(TEXT_FORMAT),
        ..Reply::json(200)
    })
}

/// Compares two byte strings in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One cache's figures, as the metrics show them.
struct CacheFigures {
    name: &'static str,
    /// Lookups by result.
    results: Vec<(&'static str, u64)>,
    entries: u64,
    /// Bytes held, where the cache is bounded in bytes.
    bytes: Option<u64>,
}

fn render_caches(st: &State, x: &mut Exposition<'_>) {
    let mut caches: Vec<CacheFigures> = [
        (CacheName::Tokens, st.tokens.counts()),
        (CacheName::BadTokens, st.bad_tokens.counts()),
    ]
    .into_iter()
    .map(|(name, c)| CacheFigures {
        name: name.as_str(),
        results: vec![("hit", c.hits), ("miss", c.misses), ("stale", c.stale)],
        entries: c.entries,
        bytes: None,
    })
    .collect();
    let (samples, pages) = st.reads.counts();
    caches.push(CacheFigures {
        name: CacheName::Reads.as_str(),
        results: vec![
            ("hit", samples.hits + pages.hits),
            ("miss", samples.misses + pages.misses),
        ],
        entries: samples.entries + pages.entries,
        bytes: Some(samples.bytes + pages.bytes),
    });
    if let Some(relay) = &st.relay {
        let f = &relay.figures;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        let memory = relay.memory_counts();
        caches.push(CacheFigures {
            name: CacheName::Relay.as_str(),
            results: vec![
                ("hit", load(&f.hits)),
                ("miss", load(&f.misses)),
                ("stale", load(&f.stale)),
                ("revalidated", load(&f.revalidated)),
            ],
            entries: memory.entries,
            bytes: Some(memory.bytes),
        });
    }
    x.family(
        "crudrs_cache_requests_total",
        "counter",
        "Cache lookups by cache and result (stale: found, but expired or due for a re-check; for the relay, answered stale).",
    );
    for c in &caches {
        for (result, n) in &c.results {
            x.sample(
                "crudrs_cache_requests_total",
                &[("cache", c.name), ("result", result)],
                *n as f64,
            );
        }
    }
    x.family("crudrs_cache_entries", "gauge", "Entries held, by cache.");
    for c in &caches {
        x.sample("crudrs_cache_entries", &[("cache", c.name)], c.entries as f64);
    }
    x.family(
        "crudrs_cache_bytes",
        "gauge",
        "Bytes held, by cache bounded in bytes.",
    );
    for c in &caches {
        if let Some(bytes) = c.bytes {
            x.sample("crudrs_cache_bytes", &[("cache", c.name)], bytes as f64);
        }
    }
    if let Some(relay) = &st.relay {
        let f = &relay.figures;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
        x.single(
            "crudrs_relay_upstream_requests_total",
            "counter",
            "Requests the relay made to its upstream.",
            load(&f.upstream_requests),
        );
        x.single(
            "crudrs_relay_upstream_failures_total",
            "counter",
            "Upstream requests that failed (no answer, or a 5xx).",
            load(&f.upstream_failures),
        );
    }
}
