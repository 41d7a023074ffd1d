//! Cached reads of this API: `GET /api/sample/{id}` and the listing pages,
//! answered from memory with an `ETag` (304 on a matching `If-None-Match`).
//!
//! Invalidation is by generation, not by key: a sample's JSON changes only when
//! the file it names is uploaded (`image_present`), and a page changes when a
//! sample is inserted, so an entry remembers the two generations
//! (samples, files) it was read at, and every write bumps one: locally at once,
//! and in every other process when its notification (sent by the INSERT itself,
//! `store::notify`) arrives. While this process's listener is not connected,
//! news may be missed, so nothing is served from the cache until it is back.
//!
//! Invariant: an entry is served only if no write this process has heard of
//! happened since the read it holds began (the generations are read before the
//! query), and only while the listener is connected; so a sample or page is
//! never older than the notification delay (milliseconds after the writer's
//! commit).

use crate::cache::memory::{Counts, MemoryCache, Weigh};
use crate::cache::policy::etag_matches;
use crate::store::hex::encode_hex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One cached answer.
pub struct Read {
    pub body: Box<[u8]>,
    /// Quoted, strong.
    pub etag: Arc<str>,
    /// The (samples, files) generations it was read at.
    generations: (u64, u64),
}

impl Weigh for Read {
    fn weight(&self) -> u64 {
        (self.body.len() + self.etag.len() + 48) as u64
    }
}

/// The generations a read started at: a cached answer is only as new as these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generations(u64, u64);

pub struct Reads {
    samples: MemoryCache<Read>,
    pages: MemoryCache<Read>,
    sample_generation: AtomicU64,
    file_generation: AtomicU64,
    /// Whether news from other processes is being heard.
    listening: AtomicBool,
    enabled: bool,
}

impl Reads {
    /// A cache of at most `bytes` bytes (half for samples, half for pages); 0:
    /// off.
    pub fn new(bytes: u64) -> Reads {
        Reads {
            samples: MemoryCache::new(bytes / 2, 1024),
            pages: MemoryCache::new(bytes / 2, 16 * 1024),
            sample_generation: AtomicU64::new(0),
            file_generation: AtomicU64::new(0),
            listening: AtomicBool::new(true),
            enabled: bytes > 0,
        }
    }

    /// The generations now (read them before querying what will be cached).
    pub fn generations(&self) -> Generations {
        Generations(
            self.sample_generation.load(Ordering::Acquire),
            self.file_generation.load(Ordering::Acquire),
        )
    }

    /// The cached sample `key` (its id), if still current.
    pub fn sample(&self, key: &str) -> Option<Arc<Read>> {
        self.current(&self.samples, key, false)
    }

    /// The cached page for `key` (its query), if still current.
    pub fn page(&self, key: &str) -> Option<Arc<Read>> {
        self.current(&self.pages, key, true)
    }

    fn current(&self, cache: &MemoryCache<Read>, key: &str, page: bool) -> Option<Arc<Read>> {
        if !self.enabled || !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let Generations(samples, files) = self.generations();
        // A sample's JSON does not change when other samples are inserted.
        cache.get_valid(key, |read| {
            read.generations.1 == files && (!page || read.generations.0 == samples)
        })
    }

    /// Keeps a sample's answer, read at `at`.
    pub fn keep_sample(&self, key: &str, body: &[u8], at: Generations) -> Option<Arc<Read>> {
        self.keep(&self.samples, key, body, at)
    }

    /// Keeps a page's answer, read at `at`.
    pub fn keep_page(&self, key: &str, body: &[u8], at: Generations) -> Option<Arc<Read>> {
        self.keep(&self.pages, key, body, at)
    }

    fn keep(&self, cache: &MemoryCache<Read>, key: &str, body: &[u8], at: Generations) -> Option<Arc<Read>> {
        if !self.enabled {
            return None;
        }
        let read = Arc::new(Read {
            body: body.into(),
            etag: etag_of(body).into(),
            generations: (at.0, at.1),
        });
        cache.insert(key, Arc::clone(&read));
        Some(read)
    }

    /// Samples were inserted (here or elsewhere): every page is stale.
    pub fn samples_changed(&self) {
        self.sample_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A file was stored: samples naming it changed, and so did pages.
    pub fn files_changed(&self) {
        self.file_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The listener lost its connection: news may be missed until `heard_again`.
    pub fn deaf(&self) {
        self.listening.store(false, Ordering::Release);
    }

    /// The listener is connected again: what was missed is forgotten.
    pub fn heard_again(&self) {
        self.samples_changed();
        self.files_changed();
        self.listening.store(true, Ordering::Release);
    }

    pub fn clear(&self) {
        self.samples.clear();
        self.pages.clear();
    }

    /// (samples, pages) figures.
    pub fn counts(&self) -> (Counts, Counts) {
        (self.samples.counts(), self.pages.counts())
    }
}

/// A strong validator of `body`: the first 64 bits of its MD5, quoted.
pub fn etag_of(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    format!("\"{}\"", encode_hex(&Md5::digest(body)[..8]))
}

/// Whether the request's `If-None-Match` matches `read`.
pub fn not_modified(if_none_match: Option<&str>, read: &Read) -> bool {
    if_none_match.is_some_and(|inm| etag_matches(inm, &read.etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_stale_after_any_insert_and_a_sample_only_after_a_file() {
        let r = Reads::new(1 << 20);
        let at = r.generations();
        r.keep_sample("1", b"{\"id\":1}", at);
        r.keep_page("", b"{\"samples\":[]}", at);
        assert!(r.sample("1").is_some() && r.page("").is_some());
        r.samples_changed();
        assert!(r.sample("1").is_some(), "other samples do not change this one");
        assert!(r.page("").is_none());
        r.files_changed();
        assert!(r.sample("1").is_none());
    }

    #[test]
    fn a_read_that_raced_a_write_is_never_served() {
        let r = Reads::new(1 << 20);
        let before = r.generations();
        r.samples_changed(); // the write committed while the query ran
        r.keep_page("", b"old", before);
        assert!(r.page("").is_none());
    }

    #[test]
    fn nothing_is_served_while_news_may_be_missed() {
        let r = Reads::new(1 << 20);
        r.keep_sample("1", b"x", r.generations());
        r.deaf();
        assert!(r.sample("1").is_none());
        r.heard_again();
        // Whatever was missed meanwhile: the old entries are gone for good.
        assert!(r.sample("1").is_none());
        r.keep_sample("1", b"x", r.generations());
        assert!(r.sample("1").is_some());
    }

    #[test]
    fn etags_are_strong_and_follow_the_body() {
        assert_eq!(etag_of(b"a"), etag_of(b"a"));
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
        assert_eq!(etag_of(b"a").len(), 18);
        let read = Read {
            body: b"a".to_vec().into(),
            etag: etag_of(b"a").into(),
            generations: (0, 0),
        };
        assert!(not_modified(Some(&etag_of(b"a")), &read));
        assert!(!not_modified(Some("\"x\""), &read));
        assert!(!not_modified(None, &read));
    }

    #[test]
    fn off_means_never_kept() {
        let r = Reads::new(0);
        assert!(r.keep_sample("1", b"x", r.generations()).is_none());
        assert!(r.sample("1").is_none());
    }
}
