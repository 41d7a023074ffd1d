//! The admin API and dashboard: `GET /admin` (one self-contained HTML page compiled
//! into the binary) and JSON under `/admin/api/` for accounts whose role is
//! `admin` (401 without a valid key, 403 for everyone else): the figures the
//! dashboard draws, the circuit breakers (view, force open or closed), the caches
//! (view, clear), a user's tier (view, set) and revoking every token of a user.
//!
//! `create_admin` (`server --create-admin NAME`) makes or promotes an admin at
//! start-up and returns a new key for it, shown once.

use super::auth::{authenticate, note, tell, News};
use super::error::{ApiError, Error};
use super::json::Fields;
use super::request::{Reply, Request};
use super::route::{CacheName, Name};
use super::state::State;
use super::tokens::{self, Principal, Tier};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The dashboard page.
const PAGE: &str = include_str!("admin.html");

/// The longest an operator may force the breaker open for, in seconds.
const MAX_FORCED_OPEN_SECS: u64 = 24 * 3600;

/// The caller, when it is an admin: 401 without a valid key, 403 otherwise.
fn admin(st: &State, req: &Request<'_>) -> Result<Principal, Error> {
    let (who, _) = authenticate(st, req)?;
    if !who.admin {
        return Err(ApiError::Forbidden.into());
    }
    Ok(who)
}

fn json(out: &mut Vec<u8>, value: &serde_json::Value) -> Result<Reply, Error> {
    serde_json::to_writer(out, value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Reply::json(200))
}

pub fn page(out: &mut Vec<u8>) -> Result<Reply, Error> {
    out.extend_from_slice(PAGE.as_bytes());
    Ok(Reply {
        content_type: Some("text/html; charset=utf-8"),
        ..Reply::json(200)
    })
}

/// Everything the dashboard draws, cumulative since start (the page turns counts
/// into rates and windowed percentiles between two reads).
pub fn stats(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    admin(st, req)?;
    let figures = st.metrics.figures();
    let (open, idle) = st.db.pool_state();
    let (tiers, logins) = st.limits.refusals();
    let rate_limited: serde_json::Map<String, serde_json::Value> = tiers
        .iter()
        .map(|(tier, n)| (tier.name().to_string(), (*n).into()))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    json(
        out,
        &serde_json::json!({
            "time": now,
            "figures": figures,
            "db": {"open": open, "idle": idle, "max": st.db.pool_size()},
            "breakers": breakers_json(st),
            "rate_limited": rate_limited,
            "login_limited": logins,
            "caches": caches_json(st, false),
            "counter_increments": st.increments.load(Relaxed),
            "events": st.events.stats().total,
            "uploads": st.uploads.load(Relaxed),
        }),
    )
}

fn breakers_json(st: &State) -> serde_json::Value {
    let mut breakers = vec![serde_json::json!({
        "dependency": "database",
        "state": st.db.breaker_state().as_str(),
        "opened": st.db.breaker_opened(),
    })];
    if let Some(relay) = &st.relay {
        breakers.push(serde_json::json!({
            "dependency": "upstream",
            "state": relay.breaker_state().as_str(),
            "opened": relay.breaker_opened(),
        }));
    }
    breakers.into()
}

/// Every cache's figures; `with_shared`: the relay's level 2 too, which costs
/// a query (the dashboard's once-a-second poll leaves it out).
fn caches_json(st: &State, with_shared: bool) -> serde_json::Value {
    let cache = |name: CacheName, c: tokens::CacheCounts| {
        serde_json::json!({"name": name.as_str(), "entries": c.entries, "hits": c.hits,
                           "misses": c.misses, "stale": c.stale})
    };
    let mut caches = vec![
        cache(CacheName::Tokens, st.tokens.counts()),
        cache(CacheName::BadTokens, st.bad_tokens.counts()),
    ];
    let (samples, pages) = st.reads.counts();
    caches.push(serde_json::json!({
        "name": CacheName::Reads.as_str(),
        "entries": samples.entries + pages.entries,
        "bytes": samples.bytes + pages.bytes,
        "capacity_bytes": samples.capacity + pages.capacity,
        "hits": samples.hits + pages.hits,
        "misses": samples.misses + pages.misses,
    }));
    if let Some(relay) = &st.relay {
        let f = &relay.figures;
        let memory = relay.memory_counts();
        let (flights, queued) = relay.in_flight();
        caches.push(serde_json::json!({
            "name": CacheName::Relay.as_str(),
            "entries": memory.entries,
            "bytes": memory.bytes,
            "capacity_bytes": memory.capacity,
            "hits": f.hits.load(Relaxed),
            "misses": f.misses.load(Relaxed),
            "stale": f.stale.load(Relaxed),
            "revalidated": f.revalidated.load(Relaxed),
            "upstream_requests": f.upstream_requests.load(Relaxed),
            "upstream_failures": f.upstream_failures.load(Relaxed),
            "refused": f.refused.load(Relaxed),
            "expired_in_queue": f.expired.load(Relaxed),
            "in_flight": flights,
            "fetches_queued": queued,
        }));
        let mut shared = serde_json::json!({
            "name": CacheName::RelayShared.as_str(),
            "hits": f.shared_hits.load(Relaxed),
            "writes_queued": f.shared_writes.load(Relaxed),
            "writes_dropped": f.shared_dropped.load(Relaxed),
        });
        if with_shared {
            if let Ok((entries, bytes)) = relay.shared_size() {
                shared["entries"] = entries.into();
                shared["bytes"] = bytes.into();
            }
        }
        caches.push(shared);
    }
    caches.into()
}

pub fn breakers(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    admin(st, req)?;
    json(out, &breakers_json(st))
}

/// `{"state": "open", "seconds": N}` holds the database breaker open for N
/// seconds (default: the reset period); `{"state": "closed"}` closes it.
pub fn set_breaker(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    admin(st, req)?;
    let mut f = Fields::parse(req.body, &["state", "seconds"])?;
    let state = f.string("state", 1, 16);
    let seconds = f.optional_u64("seconds", 1, MAX_FORCED_OPEN_SECS);
    if state.as_deref().is_some_and(|s| s != "open" && s != "closed") {
        f.problem("state", "must be \"open\" or \"closed\"");
    }
    f.finish()?;
    let hold = match state.as_deref() {
        Some("open") => Some(seconds.map_or(st.config.breaker_reset, Duration::from_secs)),
        _ => None,
    };
    st.db.force_breaker(hold);
    json(out, &breakers_json(st))
}

pub fn caches(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    admin(st, req)?;
    json(out, &caches_json(st, true))
}

/// Empties a cache: its entries are looked up again when next needed.
pub fn clear_cache(
    st: &State,
    req: &Request<'_>,
    cache: CacheName,
    out: &mut Vec<u8>,
) -> Result<Reply, Error> {
    admin(st, req)?;
    let relay = || st.relay.as_ref().ok_or(ApiError::NotFound);
    match cache {
        CacheName::Tokens => st.tokens.clear(),
        CacheName::BadTokens => st.bad_tokens.clear(),
        CacheName::Relay => relay()?.clear_memory(),
        CacheName::Reads => st.reads.clear(),
        CacheName::RelayShared => {
            relay()?.clear_shared()?;
        }
    }
    json(out, &caches_json(st, true))
}

pub fn tier(st: &State, req: &Request<'_>, name: Name, out: &mut Vec<u8>) -> Result<Reply, Error> {
    admin(st, req)?;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let rows = db
        .client
        .query(crate::store::sql::USER_TIER, &[&name.as_str()])
        .map_err(|e| note(st, e))?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    json(
        out,
        &serde_json::json!({
            "username": name.as_str(),
            "tier": row.get::<_, &str>(1),
            "role": row.get::<_, &str>(2),
        }),
    )
}

/// `{"tier": "pro"}`: takes effect at once in this process (the user's cached
/// tokens are dropped, so their next request reads the new tier).
pub fn set_tier(st: &State, req: &Request<'_>, name: Name, out: &mut Vec<u8>) -> Result<Reply, Error> {
    admin(st, req)?;
    let mut f = Fields::parse(req.body, &["tier"])?;
    let tier = f.string("tier", 1, 16);
    if tier
        .as_deref()
        .is_some_and(|t| !matches!(t, "free" | "pro" | "enterprise"))
    {
        f.problem("tier", "must be \"free\", \"pro\" or \"enterprise\"");
    }
    f.finish()?;
    let tier = Tier::from_db(tier.as_deref().unwrap_or("free"));
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let rows = db
        .client
        .query(crate::store::sql::SET_TIER, &[&name.as_str(), &tier.name()])
        .map_err(|e| note(st, e))?;
    let user_id: i64 = rows.first().ok_or(ApiError::NotFound)?.get(0);
    st.tokens.remove_user(user_id);
    tell(st, &mut db.client, &News::User(user_id));
    json(
        out,
        &serde_json::json!({"username": name.as_str(), "tier": tier.name()}),
    )
}

/// Revokes every live token of a user, in the database and in this process.
pub fn revoke(st: &State, req: &Request<'_>, name: Name, out: &mut Vec<u8>) -> Result<Reply, Error> {
    admin(st, req)?;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let user_id: i64 = db
        .client
        .query(crate::store::sql::USER_TIER, &[&name.as_str()])
        .map_err(|e| note(st, e))?
        .first()
        .ok_or(ApiError::NotFound)?
        .get(0);
    let rows = db
        .client
        .query(crate::store::sql::REVOKE_USER_TOKENS, &[&name.as_str()])
        .map_err(|e| note(st, e))?;
    for row in &rows {
        let bytes: &[u8] = row.get(0);
        if let Ok(hash) = <tokens::TokenHash>::try_from(bytes) {
            st.tokens.remove(&hash);
            st.bad_tokens.insert(hash);
        }
    }
    tell(st, &mut db.client, &News::User(user_id));
    json(
        out,
        &serde_json::json!({"username": name.as_str(), "revoked": rows.len()}),
    )
}

/// Makes `name` an admin (creating the account if need be, with a password
/// nobody is told: an admin signs in with its key) and returns a new key for it.
pub fn create_admin(st: &State, name: &str) -> Result<String, String> {
    let name = Name::parse_str(name).map_err(|_| format!("{name:?} is not a valid username"))?;
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("os rng: {e}"))?;
    let phc = st
        .passwords
        .hash(&crate::store::hex::encode_hex(&secret))
        .map_err(|e| format!("argon2: {e}"))?;
    let (key, hash) = tokens::generate()?;
    let mut pooled = st.db.get().map_err(|e| e.to_string())?;
    let db = &mut *pooled;
    let email = format!("{}@admin.invalid", name.as_str());
    let row = db
        .client
        .query_one(crate::store::sql::CREATE_ADMIN, &[&name.as_str(), &email, &phc])
        .map_err(|e| format!("cannot create admin {}: {e}", name.as_str()))?;
    let user_id: i64 = row.get(0);
    let ttl = st.config.token_ttl.as_secs_f64();
    db.client
        .execute(&db.st.insert_token, &[&&hash[..], &user_id, &ttl])
        .map_err(|e| format!("cannot issue the admin key: {e}"))?;
    // A promoted user's cached tokens elsewhere still say "not an admin".
    tell(st, &mut db.client, &News::User(user_id));
    Ok(key)
}
