//! API tokens: generation, the wire form, hashing, and two bounded in-process caches.
//!
//! A token is 32 random bytes from the OS, shown to the client once as 64 lowercase
//! hex digits and stored only as its SHA-256. [`TokenCache`] maps that hash to the
//! owner, tier and expiry so an authenticated request costs no database round trip;
//! logout removes the entry, and other server processes hear of it (and of tier
//! changes and revocations by an admin) through `auth::listen` within a second; a
//! change made in the database directly is seen when the entry is re-checked:
//! entries are trusted for `--token-recheck`. [`BadTokens`] remembers hashes the database did
//! not know (unknown, expired or revoked), so a repeated bad token costs no lookup.
//!
//! Why the negative cache needs no expiry: tokens are made only here, from 256
//! random bits, and a token that was unknown, expired or revoked never becomes
//! valid again; so a remembered bad hash can be answered 401 for ever.

use crate::store::hex::{decode_hex, encode_hex};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub type TokenHash = [u8; 32];

/// A rate-limit tier: `anonymous` for requests without a valid token (keyed by
/// client IP), the others a column of `users` (keyed by user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Anonymous,
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    /// A user's tier as `users.tier` stores it (the schema allows nothing else;
    /// an unexpected value gets the lowest user tier).
    pub fn from_db(tier: &str) -> Tier {
        match tier {
            "pro" => Tier::Pro,
            "enterprise" => Tier::Enterprise,
            _ => Tier::Free,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Anonymous => "anonymous",
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    pub tier: Tier,
    /// Whether the user may use the admin API (`users.role = 'admin'`).
    pub admin: bool,
}

/// A new token: its wire form and its hash.
pub fn generate() -> Result<(String, TokenHash), String> {
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw).map_err(|e| format!("os rng: {e}"))?;
    Ok((encode_hex(&raw), hash_raw(&raw)))
}

fn hash_raw(raw: &[u8; 32]) -> TokenHash {
    Sha256::digest(raw).into()
}

/// The token hash from an `Authorization: Bearer <64 hex>` value, or `None` when the
/// value is not of that form.
pub fn from_header(value: &str) -> Option<TokenHash> {
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut raw = [0u8; 32];
    decode_hex(token.trim().as_bytes(), &mut raw)?;
    Some(hash_raw(&raw))
}

#[derive(Clone, Copy)]
struct Entry {
    principal: Principal,
    /// When the token itself expires.
    expires: Instant,
    /// When this cache entry must be re-checked against the database.
    stale: Instant,
}

/// Token hash → principal, bounded in size.
pub struct TokenCache {
    map: Mutex<HashMap<TokenHash, Entry>>,
    capacity: usize,
    /// How long an entry is trusted before the database is asked again.
    recheck: Duration,
    /// Lookups answered from the cache, not found, and found expired or due for a
    /// re-check (for metrics; bumped under the map's lock, so uncontended).
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
}

/// How a cache's lookups went since start.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CacheCounts {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
}

impl TokenCache {
    pub fn new(capacity: usize, recheck: Duration) -> TokenCache {
        TokenCache {
            map: Mutex::new(HashMap::with_capacity(capacity.min(1 << 16))),
            capacity,
            recheck,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            entries: self.len() as u64,
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            stale: self.stale.load(Relaxed),
        }
    }

    /// The principal for a cached, unexpired token.
    pub fn get(&self, hash: &TokenHash) -> Option<Principal> {
        let now = Instant::now();
        let mut map = self.map.lock();
        let Some(entry) = map.get(hash).copied() else {
            self.misses.fetch_add(1, Relaxed);
            return None;
        };
        if now >= entry.expires || now >= entry.stale {
            map.remove(hash);
            self.stale.fetch_add(1, Relaxed);
            return None;
        }
        self.hits.fetch_add(1, Relaxed);
        Some(entry.principal)
    }

    /// Remembers a token valid for `ttl` more.
    pub fn insert(&self, hash: TokenHash, principal: Principal, ttl: Duration) {
        let now = Instant::now();
        let entry = Entry {
            principal,
            expires: now + ttl,
            stale: now + self.recheck,
        };
        let mut map = self.map.lock();
        if map.len() >= self.capacity && !map.contains_key(&hash) {
            // Evict an arbitrary entry; it will be looked up again if still in use.
            if let Some(victim) = map.keys().next().copied() {
                map.remove(&victim);
            }
        }
        map.insert(hash, entry);
    }

    pub fn remove(&self, hash: &TokenHash) {
        self.map.lock().remove(hash);
    }

    /// Forgets every cached token of a user (its tier or tokens changed).
    pub fn remove_user(&self, user_id: i64) {
        self.map.lock().retain(|_, e| e.principal.user_id != user_id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }
}

/// Hashes of tokens the database does not accept, bounded in size (past it, an
/// arbitrary one is forgotten and costs one more lookup if it comes back).
pub struct BadTokens {
    set: Mutex<HashSet<TokenHash>>,
    capacity: usize,
    /// Requests answered from it (for metrics).
    hits: AtomicU64,
}

impl BadTokens {
    pub fn new(capacity: usize) -> BadTokens {
        BadTokens {
            set: Mutex::new(HashSet::with_capacity(capacity.min(1 << 12))),
            capacity,
            hits: AtomicU64::new(0),
        }
    }

    pub fn contains(&self, hash: &TokenHash) -> bool {
        let found = self.set.lock().contains(hash);
        if found {
            self.hits.fetch_add(1, Relaxed);
        }
        found
    }

    pub fn len(&self) -> usize {
        self.set.lock().len()
    }

    /// Its size and hits (a miss here is a token not known to be bad: the token
    /// cache's figures tell the rest).
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            entries: self.len() as u64,
            hits: self.hits.load(Relaxed),
            ..CacheCounts::default()
        }
    }

    pub fn clear(&self) {
        self.set.lock().clear();
    }

    pub fn insert(&self, hash: TokenHash) {
        let mut set = self.set.lock();
        if set.len() >= self.capacity && !set.contains(&hash) {
            if let Some(victim) = set.iter().next().copied() {
                set.remove(&victim);
            }
        }
        set.insert(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_round_trip_to_the_same_hash() {
        let (wire, hash) = generate().expect("rng");
        assert_eq!(wire.len(), 64);
        assert_eq!(from_header(&format!("Bearer {wire}")), Some(hash));
        assert_eq!(
            from_header(&format!("bearer {}", wire.to_uppercase())),
            Some(hash)
        );
        assert_eq!(from_header(&format!("Basic {wire}")), None);
        assert_eq!(from_header(&format!("Bearer {}", &wire[1..])), None);
        assert_eq!(from_header("Bearer zz"), None);
    }

    #[test]
    fn cache_is_bounded_and_forgets_removed_tokens() {
        let c = TokenCache::new(2, Duration::from_secs(60));
        let p = Principal {
            user_id: 1,
            tier: Tier::Free,
            admin: false,
        };
        for i in 0..5u8 {
            c.insert([i; 32], p, Duration::from_secs(60));
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&[4; 32]), Some(p));
        c.remove(&[4; 32]);
        assert_eq!(c.get(&[4; 32]), None);
    }

    #[test]
    fn expired_entries_are_not_returned() {
        let c = TokenCache::new(4, Duration::from_secs(60));
        let p = Principal {
            user_id: 1,
            tier: Tier::Pro,
            admin: false,
        };
        c.insert([1; 32], p, Duration::ZERO);
        assert_eq!(c.get(&[1; 32]), None);
        // Nor those due for a re-check.
        let c = TokenCache::new(4, Duration::ZERO);
        c.insert([1; 32], p, Duration::from_secs(60));
        assert_eq!(c.get(&[1; 32]), None);
    }

    #[test]
    fn bad_tokens_are_remembered_within_a_bound() {
        let b = BadTokens::new(3);
        for i in 0..10u8 {
            b.insert([i; 32]);
        }
        assert_eq!(b.set.lock().len(), 3);
        assert!(b.contains(&[9; 32]));
        assert_eq!(Tier::from_db("pro"), Tier::Pro);
        assert_eq!(Tier::from_db("enterprise").name(), "enterprise");
        assert_eq!(Tier::from_db("free"), Tier::Free);
    }
}
