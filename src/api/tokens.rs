//! API tokens: generation, the wire form, hashing, and the bounded in-process cache.
//!
//! A token is 32 random bytes from the OS, shown to the client once as 64 lowercase
//! hex digits and stored only as its SHA-256. The cache maps that hash to the owner,
//! tier and expiry so an authenticated request costs no database round trip; logout
//! removes the entry (revocation by another server process is seen when the entry
//! expires from this one: entries live at most `MAX_CACHE_AGE`).

use crate::store::hex::{decode_hex, encode_hex};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a cached entry is trusted before the database is asked again, so a token
/// revoked through another process stops working here within this time.
const MAX_CACHE_AGE: Duration = Duration::from_secs(60);

pub type TokenHash = [u8; 32];

/// Who a valid token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    /// The user's rate-limit tier, as stored (0 standard, 1 premium, 2 internal).
    pub tier: u8,
}

pub fn tier_code(tier: &str) -> u8 {
    match tier {
        "premium" => 1,
        "internal" => 2,
        _ => 0,
    }
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
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            map: Mutex::new(HashMap::with_capacity(capacity.min(1 << 16))),
            capacity,
        }
    }

    /// The principal for a cached, unexpired token.
    pub fn get(&self, hash: &TokenHash) -> Option<Principal> {
        let now = Instant::now();
        let mut map = self.map.lock();
        let entry = *map.get(hash)?;
        if now >= entry.expires || now >= entry.stale {
            map.remove(hash);
            return None;
        }
        Some(entry.principal)
    }

    /// Remembers a token valid for `ttl` more.
    pub fn insert(&self, hash: TokenHash, principal: Principal, ttl: Duration) {
        let now = Instant::now();
        let entry = Entry {
            principal,
            expires: now + ttl,
            stale: now + MAX_CACHE_AGE,
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

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
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
        let c = TokenCache::new(2);
        let p = Principal { user_id: 1, tier: 0 };
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
        let c = TokenCache::new(4);
        c.insert([1; 32], Principal { user_id: 1, tier: 0 }, Duration::ZERO);
        assert_eq!(c.get(&[1; 32]), None);
    }
}
