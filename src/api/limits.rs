//! Rate-limit policy: who the client is, the bucket and tier a request is charged
//! to, the `RateLimit-Policy`/`RateLimit` fields of its response, and the separate
//! limits on failed logins. The buckets themselves are `traffic::limit` (GCRA);
//! this module decides what goes into them, and `admission` when.
//!
//! A user's requests are charged to the user, in a bucket per tier (so a changed
//! tier starts from a full bucket); requests without a valid token to the client
//! IP at the anonymous tier.
//!
//! The client IP is the socket peer's, unless the peer is a trusted proxy: then it
//! is the right-most X-Forwarded-For address that is not a trusted proxy, the
//! first one a client could not have written itself. IPv6 clients are keyed by
//! their /64, the block one host usually holds.

use super::error::ApiError;
use super::tokens::{Principal, Tier};
use crate::config::{Cidr, Config, RateSpec};
use crate::http::parse::Head;
use crate::store::db::Db;
use crate::store::sql;
use crate::traffic::limit::{Limiter, Rate, Verdict};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The limiters and their settings.
pub struct Limits {
    /// Per tier (indexed by [`Tier`]); `None`: rate limiting is off.
    tiers: Option<[Rate; 4]>,
    /// Each tier's `RateLimit-Policy` line, which never changes.
    policies: [Vec<u8>; 4],
    by_ip: Limiter,
    by_user: Limiter,
    login_by_name: Option<(Rate, Limiter)>,
    login_by_ip: Option<(Rate, Limiter)>,
    trusted: Vec<Cidr>,
    /// Requests refused 429, by tier (indexed like `tiers`), and logins refused
    /// by the failed-login limits.
    refused: [AtomicU64; 4],
    login_refused: AtomicU64,
    /// With `--shared-limits`: units leased from the shared buckets and not yet
    /// spent, by bucket key (`None`: buckets are this process's own).
    leases: Option<Mutex<HashMap<String, u64>>>,
    /// Keys usernames for the failed-login table (keyed, so names cannot be chosen
    /// to collide).
    names: RandomState,
}

fn rate(spec: RateSpec) -> Rate {
    Rate::new(spec.quota, spec.window)
}

fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Anonymous => 0,
        Tier::Free => 1,
        Tier::Pro => 2,
        Tier::Enterprise => 3,
    }
}

/// The bucket key of a client IP: IPv4 as is, IPv6 by its /64 (an IPv4-mapped
/// address counts as IPv4).
fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
    }
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        let keys = config.rate_limit_keys;
        let login = |spec: Option<RateSpec>| spec.map(|s| (rate(s), Limiter::new(keys)));
        let logins = config.login_limits;
        let tiers = config
            .rate_limits
            .map(|t| [rate(t.anonymous), rate(t.free), rate(t.pro), rate(t.enterprise)]);
        let policy = |tier: Tier| match &tiers {
            Some(t) => policy_line(tier, &t[tier_index(tier)]),
            None => Vec::new(),
        };
        Limits {
            policies: [Tier::Anonymous, Tier::Free, Tier::Pro, Tier::Enterprise].map(policy),
            tiers,
            by_ip: Limiter::new(keys),
            by_user: Limiter::new(keys),
            login_by_name: login(logins.and_then(|l| l.per_username)),
            login_by_ip: login(logins.and_then(|l| l.per_ip)),
            trusted: config.trusted_proxies.clone(),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            leases: config.shared_limits.then(|| Mutex::new(HashMap::new())),
            login_refused: AtomicU64::new(0),
            names: RandomState::new(),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client's address: the peer, or behind trusted proxies the right-most
    /// forwarded address they did not write themselves. A malformed entry there
    /// (no trusted proxy writes one) leaves the last trusted hop as the client.
    pub fn client_ip(&self, peer: IpAddr, head: &Head, buf: &[u8]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for field in head.forwarded_for().iter().rev() {
            for entry in field.str(buf).rsplit(',') {
                match entry.trim().parse::<IpAddr>() {
                    Ok(ip) if self.trusts(ip) => client = ip,
                    Ok(ip) => return ip,
                    Err(_) => return client,
                }
            }
        }
        client
    }

    /// Whether requests are rate-limited at all.
    pub fn enabled(&self) -> bool {
        self.tiers.is_some()
    }

    /// Refuses (429) a request of `cost` from `client` when its anonymous bucket
    /// could not pay for it, without charging anything; `quota` gets the fields
    /// of the refusal.
    pub fn afford_anonymous(
        &self,
        client: IpAddr,
        cost: u64,
        quota: &mut QuotaFields,
    ) -> Result<(), ApiError> {
        let Some(tiers) = &self.tiers else {
            return Ok(());
        };
        let i = tier_index(Tier::Anonymous);
        let v = self.by_ip.peek(ip_key(client), &tiers[i], cost, self.by_ip.now());
        if v.allowed {
            return Ok(());
        }
        quota.set(&self.policies[i], Tier::Anonymous, &v);
        self.refused[i].fetch_add(1, Relaxed);
        Err(ApiError::RateLimited(v.retry_after_secs))
    }

    /// Charges `cost` to the user (`who`) or else to the client IP, and writes the
    /// response's fields into `quota`; `charge` false only reports the quota (for
    /// a request charged before it waited). A refusal is 429. With
    /// `--shared-limits` and `db`, the units come from leases on the shared
    /// buckets (see [`shared_verdict`]).
    pub fn charge(
        &self,
        who: Option<&Principal>,
        client: IpAddr,
        cost: u64,
        charge: bool,
        quota: &mut QuotaFields,
        db: Option<&Db>,
    ) -> Result<(), ApiError> {
        let Some(tiers) = &self.tiers else {
            return Ok(());
        };
        let (tier, limiter, key) = match who {
            Some(p) => (
                p.tier,
                &self.by_user,
                (p.user_id as u64) << 2 | tier_index(p.tier) as u64,
            ),
            None => (Tier::Anonymous, &self.by_ip, ip_key(client)),
        };
        let i = tier_index(tier);
        if let (Some(leases), Some(db)) = (&self.leases, db) {
            let name = format!("{}:{key}", if who.is_some() { "user" } else { "ip" });
            let verdict = shared_verdict(leases, db, &name, &tiers[i], cost, charge)?;
            quota.set(&self.policies[i], tier, &verdict);
            return if verdict.allowed {
                Ok(())
            } else {
                self.refused[i].fetch_add(1, Relaxed);
                Err(ApiError::RateLimited(verdict.retry_after_secs))
            };
        }
        let now = limiter.now();
        let verdict = if charge {
            limiter.check(key, &tiers[i], cost, now)
        } else {
            Verdict {
                allowed: true,
                ..limiter.peek(key, &tiers[i], 0, now)
            }
        };
        quota.set(&self.policies[i], tier, &verdict);
        if verdict.allowed {
            Ok(())
        } else {
            self.refused[i].fetch_add(1, Relaxed);
            Err(ApiError::RateLimited(verdict.retry_after_secs))
        }
    }

    /// Refuses a login (429) when the username or the client IP has used up its
    /// failed logins; says nothing about whether the user exists.
    pub fn login_allowed(&self, username: &str, client: IpAddr) -> Result<(), ApiError> {
        let name = self.names.hash_one(username);
        for (table, key) in [(&self.login_by_name, name), (&self.login_by_ip, ip_key(client))] {
            if let Some((rate, limiter)) = table {
                let v = limiter.peek(key, rate, 1, limiter.now());
                if !v.allowed {
                    self.login_refused.fetch_add(1, Relaxed);
                    return Err(ApiError::RateLimited(v.retry_after_secs));
                }
            }
        }
        Ok(())
    }

    /// Requests refused by the rate limits, per tier, and logins refused by the
    /// failed-login limits.
    pub fn refusals(&self) -> ([(Tier, u64); 4], u64) {
        let tiers = [Tier::Anonymous, Tier::Free, Tier::Pro, Tier::Enterprise];
        (
            tiers.map(|t| (t, self.refused[tier_index(t)].load(Relaxed))),
            self.login_refused.load(Relaxed),
        )
    }

    /// Counts a failed login against the username and the client IP.
    pub fn login_failed(&self, username: &str, client: IpAddr) {
        let name = self.names.hash_one(username);
        for (table, key) in [(&self.login_by_name, name), (&self.login_by_ip, ip_key(client))] {
            if let Some((rate, limiter)) = table {
                limiter.check(key, rate, 1, limiter.now());
            }
        }
    }
}

/// Keys with a lease held at once; past it, spent leases are dropped first.
const MAX_LEASES: usize = 100_000;

/// The verdict for `cost` units of a shared bucket: spent from this process's
/// lease when it holds enough, otherwise a new lease (a twentieth of the quota, or
/// just `cost` when that much no longer fits) is charged to the bucket in
/// PostgreSQL first. Every unit spent anywhere was charged there, so all instances
/// together never allow more than the quota; what a lease leaves unspent is lost
/// to its key (at most a twentieth of the quota per instance), so a client may be
/// refused a little early, never late. One database round trip per lease, not per
/// request. The remaining count shown is this process's lease.
fn shared_verdict(
    leases: &Mutex<HashMap<String, u64>>,
    db: &Db,
    key: &str,
    rate: &Rate,
    cost: u64,
    charge: bool,
) -> Result<Verdict, ApiError> {
    let held = |left: u64| Verdict {
        allowed: true,
        remaining: left,
        reset_secs: rate.window_secs,
        retry_after_secs: 0,
    };
    let cost = cost.min(rate.quota);
    {
        let mut leases = leases.lock();
        let left = leases.get(key).copied().unwrap_or(0);
        if !charge {
            return Ok(held(left));
        }
        if left >= cost {
            leases.insert(key.to_string(), left - cost);
            return Ok(held(left - cost));
        }
    }
    let lease = rate.quota.div_ceil(20).clamp(cost, rate.quota);
    let mut tried = lease;
    loop {
        let mut pooled = db.get()?;
        let conn = &mut *pooled;
        let units = i64::try_from(tried.saturating_mul(rate.emission_ns())).unwrap_or(i64::MAX);
        let capacity = i64::try_from(rate.capacity()).unwrap_or(i64::MAX);
        let row = conn
            .client
            .query_one(sql::LEASE_RATE, &[&key, &units, &capacity])
            .map_err(|e| ApiError::from(db.failed(e)))?;
        let (new_tat, old_tat, now): (Option<i64>, Option<i64>, i64) = (row.get(0), row.get(1), row.get(2));
        if new_tat.is_some() {
            let mut leases = leases.lock();
            if leases.len() >= MAX_LEASES {
                // Unspent units are only lost to their keys (a refusal a little
                // early, never a request allowed late).
                leases.retain(|_, left| *left > 0);
                if leases.len() >= MAX_LEASES {
                    leases.clear();
                }
            }
            let left = leases.get(key).copied().unwrap_or(0) + tried - cost;
            leases.insert(key.to_string(), left);
            return Ok(held(left));
        }
        if tried > cost {
            // The whole lease no longer fits: just what this request needs might.
            tried = cost;
            continue;
        }
        let start = old_tat.unwrap_or(now).max(now);
        let after = start.saturating_add(units);
        let wait = after.saturating_sub(now.saturating_add(capacity)).max(1) as u64;
        return Ok(Verdict {
            allowed: false,
            remaining: 0,
            reset_secs: (start.saturating_sub(now) as u64).div_ceil(1_000_000_000),
            retry_after_secs: wait.div_ceil(1_000_000_000).max(1),
        });
    }
}

/// A tier's `RateLimit-Policy` header line: `"free";q=1000;w=60`.
fn policy_line(tier: Tier, rate: &Rate) -> Vec<u8> {
    format!(
        "\r\nRateLimit-Policy: \"{}\";q={};w={}",
        tier.name(),
        rate.quota,
        rate.window_secs
    )
    .into_bytes()
}

/// The rate-limit header lines of one response (draft-ietf-httpapi-ratelimit-
/// headers, structured fields): the tier's `RateLimit-Policy` and the key's
/// `RateLimit: "free";r=998;t=1`. Kept on the stack, in a scratch each worker
/// reuses; empty for a route that is not limited.
#[derive(Clone)]
pub struct QuotaFields {
    bytes: [u8; QUOTA_LINES],
    len: usize,
}

/// Room for both lines with the longest tier name and five 20-digit numbers.
const QUOTA_LINES: usize = 160;

impl Default for QuotaFields {
    fn default() -> QuotaFields {
        QuotaFields {
            bytes: [0; QUOTA_LINES],
            len: 0,
        }
    }
}

impl QuotaFields {
    /// No fields (a route that is not limited).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    fn set(&mut self, policy: &[u8], tier: Tier, v: &Verdict) {
        self.len = 0;
        self.push(policy);
        self.push(b"\r\nRateLimit: \"");
        self.push(tier.name().as_bytes());
        self.push(b"\";r=");
        self.push(itoa::Buffer::new().format(v.remaining).as_bytes());
        self.push(b";t=");
        self.push(itoa::Buffer::new().format(v.reset_secs).as_bytes());
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(QUOTA_LINES);
        self.bytes[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }

    /// Both fields as header lines, each starting with CRLF (empty: none).
    pub fn lines(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_head, Limits as HeadLimits};

    fn limits(trusted: &str) -> Limits {
        Limits::new(&Config::for_tests(&["--trusted-proxies", trusted]))
    }

    fn client(l: &Limits, peer: &str, req: &str) -> String {
        let head = parse_head(
            req.as_bytes(),
            &HeadLimits {
                max_head_bytes: 8192,
                max_headers: 64,
            },
        )
        .expect("valid")
        .expect("complete");
        l.client_ip(peer.parse().expect("ip"), &head, req.as_bytes())
            .to_string()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let xff = "GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 1.2.3.4\r\n\r\n";
        // Nobody trusted: the peer, whatever the header says.
        assert_eq!(client(&limits(""), "9.9.9.9", xff), "9.9.9.9");
        let l = limits("10.0.0.0/8,127.0.0.1");
        // A trusted peer: the right-most address it did not write itself.
        assert_eq!(client(&l, "127.0.0.1", xff), "1.2.3.4");
        // An untrusted peer's header is ignored.
        assert_eq!(client(&l, "8.8.8.8", xff), "8.8.8.8");
        // Trusted hops are skipped, across fields, right to left.
        let chain =
            "GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.7\r\n\r\n";
        assert_eq!(client(&l, "10.1.1.1", chain), "1.2.3.4");
        let split = "GET / HTTP/1.1\r\nX-Forwarded-For: 5.5.5.5\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n";
        assert_eq!(client(&l, "10.1.1.1", split), "5.5.5.5");
        // Only trusted addresses: the left-most of them; no header: the peer.
        let inside = "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.7, 10.0.0.8\r\n\r\n";
        assert_eq!(client(&l, "127.0.0.1", inside), "10.0.0.7");
        assert_eq!(client(&l, "127.0.0.1", "GET / HTTP/1.1\r\n\r\n"), "127.0.0.1");
        // Garbage where a proxy would have written an address: the last trusted hop.
        let junk = "GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4, junk, 10.0.0.9\r\n\r\n";
        assert_eq!(client(&l, "127.0.0.1", junk), "10.0.0.9");
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let v4: IpAddr = "1.2.3.4".parse().expect("ip");
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().expect("ip");
        assert_eq!(ip_key(v4), ip_key(mapped));
    }

    #[test]
    fn quota_fields_are_structured_fields() {
        let r = Rate::new(1000, std::time::Duration::from_secs(60));
        let v = Verdict {
            allowed: true,
            remaining: 998,
            reset_secs: 1,
            retry_after_secs: 0,
        };
        let mut q = QuotaFields::default();
        assert!(q.lines().is_empty());
        q.set(&policy_line(Tier::Free, &r), Tier::Free, &v);
        assert_eq!(
            q.lines(),
            b"\r\nRateLimit-Policy: \"free\";q=1000;w=60\r\nRateLimit: \"free\";r=998;t=1"
        );
        // The longest there can be fits.
        let max = Verdict {
            allowed: false,
            remaining: u64::MAX,
            reset_secs: u64::MAX,
            retry_after_secs: u64::MAX,
        };
        let big = Rate::new(u64::MAX, std::time::Duration::from_secs(u64::MAX / 2));
        let policy = policy_line(Tier::Enterprise, &big);
        q.set(&policy, Tier::Enterprise, &max);
        assert!(q.lines().ends_with(b";t=18446744073709551615"), "{:?}", q.lines());
        q.clear();
        assert!(q.lines().is_empty());
    }

    #[test]
    fn failed_logins_are_limited_per_name_and_per_ip() {
        let l = Limits::new(&Config::for_tests(&["--login-limits", "username=2/m,ip=3/m"]));
        let ip: IpAddr = "1.1.1.1".parse().expect("ip");
        let other: IpAddr = "2.2.2.2".parse().expect("ip");
        for _ in 0..2 {
            assert!(l.login_allowed("alice", ip).is_ok());
            l.login_failed("alice", ip);
        }
        assert!(matches!(l.login_allowed("alice", other), Err(ApiError::RateLimited(s)) if s >= 1));
        assert!(l.login_allowed("bob", ip).is_ok());
        l.login_failed("bob", ip);
        // The IP has now failed three times, whatever the names.
        assert!(l.login_allowed("carol", ip).is_err());
        assert!(l.login_allowed("carol", other).is_ok());
    }
}
