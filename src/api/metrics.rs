//! GET /metrics: every figure in the Prometheus text format (0.0.4), optionally
//! behind `--metrics-token`. Never rate-limited or shed (its route costs nothing),
//! so a scrape still sees an overloaded server.
//!
//! The per-request figures and the engine's gauges come from `obs::metrics`;
//! what this layer owns (the pool, the breaker, the limits, the counter, events,
//! uploads) is read here at scrape time.

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

    let state = st.db.breaker_state().as_str();
    x.family(
        "crudrs_circuit_breaker_state",
        "gauge",
        "1 for the state each dependency's circuit breaker is in.",
    );
    for s in ["closed", "open", "half-open"] {
        x.sample(
            "crudrs_circuit_breaker_state",
            &[("dependency", "database"), ("state", s)],
            f64::from(u8::from(s == state)),
        );
    }
    x.family(
        "crudrs_circuit_breaker_opened_total",
        "counter",
        "Times each dependency's circuit breaker opened.",
    );
    x.sample(
        "crudrs_circuit_breaker_opened_total",
        &[("dependency", "database")],
        st.db.breaker_opened() as f64,
    );

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

    x.family(
        "crudrs_cache_requests_total",
        "counter",
        "Cache lookups by cache and result (stale: found, but expired or due for a re-check).",
    );
    x.family("crudrs_cache_entries", "gauge", "Entries held, by cache.");
    for (name, c) in [
        (CacheName::Tokens, st.tokens.counts()),
        (CacheName::BadTokens, st.bad_tokens.counts()),
    ] {
        for (result, n) in [("hit", c.hits), ("miss", c.misses), ("stale", c.stale)] {
            x.sample(
                "crudrs_cache_requests_total",
                &[("cache", name.as_str()), ("result", result)],
                n as f64,
            );
        }
        x.sample(
            "crudrs_cache_entries",
            &[("cache", name.as_str())],
            c.entries as f64,
        );
    }

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
