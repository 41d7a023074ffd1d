//! The relay scenario: which cached resources it asks crudrs's relay for, how each
//! answer was made according to its `X-Cache` header, and the test upstream's
//! request total read before and after a run.
//!
//! It owns no sockets of the run itself (the engine sends the requests and hands
//! each answer's head here to be classified); the upstream's `/__count` is read on
//! a connection of its own, outside the run.

use crate::http::{self, Target};
use std::fmt::Write as _;
use std::time::Duration;

/// How long reading the upstream's `/__count` may take before the run is abandoned.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the relay scenario asks for: `GET /relay/<prefix>/<i>?max_age=<ttl>&bytes=<size>`
/// for `i` in `0..keys`, with `&delay_ms=<delay_ms>` when that is not zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The path segment before the key number: a fresh one makes every key a miss.
    pub prefix: String,
    /// How many distinct resources; request `seq` asks for key `seq % keys`.
    pub keys: u64,
    /// The upstream's `max-age` for each resource, in seconds.
    pub ttl: u64,
    /// The body size the upstream pads each resource to, in bytes.
    pub size: u64,
    /// How long the upstream waits before answering, in milliseconds (0: not asked).
    pub delay_ms: u64,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            prefix: "k".into(),
            keys: 10,
            ttl: 600,
            size: 559,
            delay_ms: 0,
        }
    }
}

impl Keys {
    /// Replaces `path` with the target of request `seq` (no allocation once `path`
    /// has grown to the longest target).
    pub fn path_into(&self, seq: u64, path: &mut String) {
        path.clear();
        let key = seq % self.keys.max(1);
        // Writing to a String cannot fail.
        let _ = write!(
            path,
            "/relay/{}/{key}?max_age={}&bytes={}",
            self.prefix, self.ttl, self.size
        );
        if self.delay_ms > 0 {
            let _ = write!(path, "&delay_ms={}", self.delay_ms);
        }
    }
}

/// How the relay made one answer, from its `X-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XCache {
    /// Served from the cache, fresh.
    Hit,
    /// Fetched from the upstream.
    Miss,
    /// Served stale from the cache (stale-while-revalidate or stale-if-error).
    Stale,
    /// Revalidated with the upstream (a 304) and served from the cache.
    Revalidated,
    /// No `X-Cache` header, or a value the relay never sends.
    None,
}

impl XCache {
    /// Every value, in report order.
    pub const ALL: [XCache; 5] = [
        XCache::Hit,
        XCache::Miss,
        XCache::Stale,
        XCache::Revalidated,
        XCache::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            XCache::Hit => "HIT",
            XCache::Miss => "MISS",
            XCache::Stale => "STALE",
            XCache::Revalidated => "REVALIDATED",
            XCache::None => "none",
        }
    }

    /// Classifies a response head (status line and fields, with or without the
    /// blank line that ends it) by its first `X-Cache` field; names match in any
    /// case, values exactly (after surrounding blanks).
    pub fn from_head(head: &[u8]) -> XCache {
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if !line[..colon].eq_ignore_ascii_case(b"x-cache") {
                continue;
            }
            return match line[colon + 1..].trim_ascii() {
                b"HIT" => XCache::Hit,
                b"MISS" => XCache::Miss,
                b"STALE" => XCache::Stale,
                b"REVALIDATED" => XCache::Revalidated,
                _ => XCache::None,
            };
        }
        XCache::None
    }
}

/// How many answers had each `X-Cache` value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts([u64; 5]);

impl CacheCounts {
    pub fn add(&mut self, x: XCache) {
        self.0[x as usize] += 1;
    }

    pub fn get(&self, x: XCache) -> u64 {
        self.0[x as usize]
    }

    pub fn merge(&mut self, other: &CacheCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// HIT answers over all answers counted (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.get(XCache::Hit) as f64 / n as f64,
        }
    }

    /// One report line: `X-Cache: HIT 9990, MISS 10, ...; hit ratio 99.90%`.
    pub fn line(&self) -> String {
        let parts: Vec<String> = XCache::ALL
            .iter()
            .map(|&x| format!("{} {}", x.name(), self.get(x)))
            .collect();
        format!(
            "X-Cache: {}; hit ratio {:.2}%",
            parts.join(", "),
            self.hit_ratio() * 100.0
        )
    }

    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for x in XCache::ALL {
            m.insert(x.name().to_string(), self.get(x).into());
        }
        m.insert("hit_ratio".into(), self.hit_ratio().into());
        serde_json::Value::Object(m)
    }
}

/// Where the test upstream's `GET /__count` is.
#[derive(Debug, Clone)]
pub struct CountUrl {
    target: Target,
    path: String,
}

impl CountUrl {
    /// Parses `http://host:port/path` (the path defaults to `/__count`).
    pub fn parse(url: &str) -> Result<CountUrl, String> {
        let target = Target::parse(url)?;
        let after_scheme = url.strip_prefix("http://").unwrap_or(url);
        let path = match after_scheme.find('/') {
            Some(i) => after_scheme[i..].to_string(),
            None => "/__count".to_string(),
        };
        Ok(CountUrl { target, path })
    }

    /// The upstream's total of counted requests, now.
    pub fn total(&self) -> Result<u64, String> {
        let mut raw = Vec::new();
        http::encode(&mut raw, "GET", &self.path, &self.target.host, &[], b"");
        let (status, body) = http::roundtrip(&self.target, &raw, COUNT_TIMEOUT)?;
        if status != 200 {
            return Err(format!("GET {} answered {status}", self.path));
        }
        upstream_total(&body).ok_or_else(|| format!("GET {}: no \"total\" in the answer", self.path))
    }
}

/// The `total` of a `/__count` answer (`{"total": N, "by_target": {...}}`).
pub fn upstream_total(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body).ok()?["total"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_cache_values_are_read_from_the_head() {
        let cases: &[(&[u8], XCache)] = &[
            (b"HTTP/1.1 200 OK\r\nAge: 3\r\nX-Cache: HIT\r\n\r\n", XCache::Hit),
            (b"HTTP/1.1 200 OK\r\nx-cache:MISS\r\n", XCache::Miss),
            (b"HTTP/1.1 200 OK\r\nX-CACHE:  STALE \r\n\r\n", XCache::Stale),
            (b"HTTP/1.1 200 OK\r\nX-Cache: REVALIDATED", XCache::Revalidated),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", XCache::None),
            (b"HTTP/1.1 200 OK\r\nX-Cache: hit\r\n\r\n", XCache::None),
            (b"HTTP/1.1 200 OK\r\nX-Cache-Status: HIT\r\n\r\n", XCache::None),
            (b"HTTP/1.1 200 X-Cache: HIT\r\n\r\n", XCache::None),
            (
                b"HTTP/1.1 200 OK\r\nX-Cache: MISS\r\nX-Cache: HIT\r\n\r\n",
                XCache::Miss,
            ),
            (b"", XCache::None),
        ];
        for (head, want) in cases {
            assert_eq!(
                XCache::from_head(head),
                *want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn counts_merge_and_give_the_hit_ratio() {
        let mut a = CacheCounts::default();
        assert_eq!(a.hit_ratio(), 0.0);
        for x in [XCache::Hit, XCache::Hit, XCache::Hit, XCache::Miss] {
            a.add(x);
        }
        let mut b = CacheCounts::default();
        b.add(XCache::None);
        a.merge(&b);
        assert_eq!((a.total(), a.get(XCache::Hit), a.get(XCache::None)), (5, 3, 1));
        assert_eq!(a.hit_ratio(), 0.6);
        assert!(a
            .line()
            .contains("HIT 3, MISS 1, STALE 0, REVALIDATED 0, none 1; hit ratio 60.00%"));
    }

    #[test]
    fn keys_cycle_through_their_targets() {
        let keys = Keys::default();
        let mut path = String::new();
        keys.path_into(13, &mut path);
        assert_eq!(path, "/relay/k/3?max_age=600&bytes=559");
        let slow = Keys {
            prefix: "m1".into(),
            delay_ms: 200,
            ..Keys::default()
        };
        slow.path_into(9, &mut path);
        assert_eq!(path, "/relay/m1/9?max_age=600&bytes=559&delay_ms=200");
    }

    #[test]
    fn count_urls_and_answers_parse() {
        let u = CountUrl::parse("http://127.0.0.1:9/__count").expect("url");
        assert_eq!(u.path, "/__count");
        assert_eq!(
            CountUrl::parse("http://127.0.0.1:9").expect("url").path,
            "/__count"
        );
        assert_eq!(
            upstream_total(br#"{"total": 12, "by_target": {"/k/1": 12}}"#),
            Some(12)
        );
        assert_eq!(upstream_total(b"{}"), None);
        assert_eq!(upstream_total(b"not json"), None);
    }
}
