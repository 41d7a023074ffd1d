//! Admission: the one step between a request's arrival and anything done for it.
//! It settles who the client is and, with rate limits on, who the token belongs to
//! and what the request costs them (`limits`), so that a refused request costs no
//! database work and runs no handler.
//!
//! Runs once per request, after its body has arrived (an upload: after its head).
//! A token the caches do not know costs a database lookup only if the client IP's
//! anonymous bucket could pay for it being bad; a bad one (unknown, expired,
//! revoked) is charged there and remembered (`tokens::BadTokens`), so random tokens
//! cost the database at most the anonymous quota per client IP. The price: while
//! that bucket is empty, a valid token this process has not seen yet is refused
//! too, until the bucket refills or the token is cached (logging in here caches
//! it). Routes of cost 0 (/health, /ready, /metrics, /openapi.json) are never
//! limited.

use super::auth::{self, Known};
use super::error::ApiError;
use super::limits::QuotaFields;
use super::route::Plan;
use super::state::State;
use super::tokens::{self, Principal, TokenHash};
use crate::http::parse::Head;
use std::net::IpAddr;

/// What admission lets through with a request.
pub struct Admitted {
    pub client: IpAddr,
    /// The token's owner (or 401), when admission had to resolve it.
    pub auth: Option<Result<(Principal, TokenHash), ApiError>>,
}

/// Admits a request: resolves its client and, with rate limits on, its token, and
/// charges its route's cost (`charge` false: the request was admitted and charged
/// before it waited; it is only told its quota). `quota` gets the rate-limit
/// fields of the response (left empty for a route that is not limited); a
/// refusal is 429, or 503 when a token could not be looked up.
pub fn admit(
    st: &State,
    plan: &Plan,
    head: &Head,
    buf: &[u8],
    peer: IpAddr,
    charge: bool,
    quota: &mut QuotaFields,
) -> Result<Admitted, ApiError> {
    quota.clear();
    let limits = &st.limits;
    let client = limits.client_ip(peer, head, buf);
    let unlimited = Admitted { client, auth: None };
    // The token is resolved here when limits need its tier, or the access log its
    // user; otherwise the handler resolves it if it needs to.
    let needs_user = limits.enabled() || st.config.access_log.is_some();
    if !needs_user || plan.cost == 0 {
        return Ok(unlimited);
    }
    let token = head
        .authorization
        .map(|a| a.str(buf))
        .and_then(tokens::from_header);
    let auth = match token {
        None => None,
        Some(hash) => Some(match auth::known(st, &hash) {
            Known::Valid(p) => Ok((p, hash)),
            Known::Bad => Err(ApiError::Unauthorized),
            // Charged before it waited, nothing to charge now: its handler
            // resolves the token if it needs it.
            Known::Unknown if !charge => return Ok(unlimited),
            Known::Unknown => {
                limits.afford_anonymous(client, plan.cost, quota)?;
                match auth::lookup(st, &hash) {
                    Ok(p) => Ok((p, hash)),
                    Err(ApiError::Unauthorized) => Err(ApiError::Unauthorized),
                    Err(error) => return Err(error),
                }
            }
        }),
    };
    let who = auth.as_ref().and_then(|a| a.as_ref().ok()).map(|(p, _)| p);
    limits.charge(who, client, plan.cost, charge, quota, Some(&st.db))?;
    Ok(Admitted { client, auth })
}

/// With `--shared-limits`, deletes the shared buckets that are full again (they
/// answer like absent ones) once a minute, for as long as `state` lives.
pub fn start_sweeping(state: &std::sync::Arc<State>) -> Result<(), String> {
    if !state.config.shared_limits {
        return Ok(());
    }
    let weak = std::sync::Arc::downgrade(state);
    std::thread::Builder::new()
        .name("limits-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
            let Some(st) = weak.upgrade() else { return };
            if let Ok(mut pooled) = st.db.get() {
                if let Err(e) = pooled.client.execute(crate::store::sql::SWEEP_RATE_BUCKETS, &[]) {
                    tracing::debug!("rate buckets not swept: {e}");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the rate-bucket sweeper: {e}"))
}
