//! The level-1 cache: entries in memory, bounded in bytes, evicted by
//! quick_cache's CLOCK-PRO (it keeps frequently used entries over recently
//! inserted one-hit wonders, which plain LRU does not), with the counts an admin
//! sees.
//!
//! Invariant: the bytes held (keys plus each value's [`Weigh::weight`]) never
//! exceed the capacity by more than one entry per shard; an entry heavier than a
//! shard's share is simply not kept.

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A value that knows how many bytes it holds.
pub trait Weigh {
    fn weight(&self) -> u64;
}

#[derive(Clone, Copy)]
struct Bytes;

impl<V: Weigh> Weighter<Box<str>, Arc<V>> for Bytes {
    fn weight(&self, key: &Box<str>, value: &Arc<V>) -> u64 {
        // At least 1: quick_cache never evicts weightless entries.
        (key.len() as u64 + value.weight()).max(1)
    }
}

/// What an admin sees of a cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub entries: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
}

pub struct MemoryCache<V> {
    cache: Cache<Box<str>, Arc<V>, Bytes>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V: Weigh> MemoryCache<V> {
    /// A cache holding at most `bytes` bytes; `typical` is a guess at an entry's
    /// size (it sizes the index, not the bound).
    pub fn new(bytes: u64, typical: u64) -> MemoryCache<V> {
        let items = (bytes / typical.max(1)).clamp(16, 1 << 24) as usize;
        MemoryCache {
            cache: Cache::with_weighter(items, bytes.max(1), Bytes),
            capacity: bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The entry for `key`, counted as a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        self.get_valid(key, |_| true)
    }

    /// The entry for `key` if `valid` accepts it, counted as a hit; a miss
    /// otherwise.
    pub fn get_valid(&self, key: &str, valid: impl Fn(&V) -> bool) -> Option<Arc<V>> {
        let got = self.cache.get(key).filter(|v| valid(v));
        let counter = if got.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Relaxed);
        got
    }

    /// The entry for `key`, not counted (a fetch looking again).
    pub fn peek(&self, key: &str) -> Option<Arc<V>> {
        self.cache.peek(key)
    }

    pub fn insert(&self, key: &str, value: Arc<V>) {
        self.cache.insert(key.into(), value);
    }

    pub fn remove(&self, key: &str) {
        self.cache.remove(key);
    }

    pub fn clear(&self) {
        self.cache.clear();
    }

    pub fn counts(&self) -> Counts {
        Counts {
            entries: self.cache.len() as u64,
            bytes: self.cache.weight(),
            capacity: self.capacity,
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Blob(usize);

    impl Weigh for Blob {
        fn weight(&self) -> u64 {
            self.0 as u64
        }
    }

    #[test]
    fn it_holds_no_more_bytes_than_its_capacity() {
        let c: MemoryCache<Blob> = MemoryCache::new(100_000, 1_000);
        for i in 0..1_000 {
            c.insert(&format!("key-{i}"), Arc::new(Blob(1_000)));
            assert!(c.counts().bytes <= 100_000 + 1_100 * 64, "{:?}", c.counts());
        }
        let counts = c.counts();
        assert!(counts.entries < 1_000 && counts.entries > 10, "{counts:?}");
    }

    #[test]
    fn hits_and_misses_are_counted_and_clear_empties_it() {
        let c: MemoryCache<Blob> = MemoryCache::new(10_000, 100);
        c.insert("a", Arc::new(Blob(10)));
        assert!(c.get("a").is_some());
        assert!(c.get("b").is_none());
        assert!(c.peek("b").is_none());
        let counts = c.counts();
        assert_eq!((counts.hits, counts.misses, counts.entries), (1, 1, 1));
        assert_eq!(counts.bytes, 11);
        c.clear();
        assert_eq!(c.counts().entries, 0);
    }
}
