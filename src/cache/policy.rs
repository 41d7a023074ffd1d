//! What RFC 9111 lets a shared cache do with a response, decided from its status
//! and header values alone: whether it may be stored, and for how long it is
//! fresh, may be served stale while it is refreshed (`stale-while-revalidate`,
//! RFC 5861) or when the origin fails (`stale-if-error`).
//!
//! No I/O, and no rule reads the clock: the caller passes the current time
//! (milliseconds since the Unix epoch, so a lifetime means the same in every
//! process that reads it from the shared level-2 cache). The one exception is
//! [`now_ms`], a helper that reads the system clock for callers.
//!
//! Invariant: a response marked `no-store` or `private`, one that sets a cookie,
//! one that varies on every request (`Vary: *`), or one whose status a cache may
//! not store without being told is never [`Decision::Store`]d.

use std::time::{Duration, SystemTime};

/// A response's `Cache-Control` directives, merged across its fields.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// Adds the directives of one `Cache-Control` field value. Unknown
    /// directives are ignored; a malformed delta-seconds is treated as 0 (stale),
    /// the safe reading (RFC 9111 §4.2.1).
    pub fn add(&mut self, value: &str) {
        for item in value.split(',') {
            let item = item.trim();
            let (name, arg) = match item.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (item, None),
            };
            let seconds = || arg.and_then(delta_seconds).unwrap_or(0);
            if name.eq_ignore_ascii_case("no-store") {
                self.no_store = true;
            } else if name.eq_ignore_ascii_case("private") {
                self.private = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                self.no_cache = true;
            } else if name.eq_ignore_ascii_case("must-revalidate")
                || name.eq_ignore_ascii_case("proxy-revalidate")
            {
                self.must_revalidate = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                self.max_age = Some(seconds());
            } else if name.eq_ignore_ascii_case("s-maxage") {
                self.s_maxage = Some(seconds());
            } else if name.eq_ignore_ascii_case("stale-while-revalidate") {
                self.stale_while_revalidate = Some(seconds());
            } else if name.eq_ignore_ascii_case("stale-if-error") {
                self.stale_if_error = Some(seconds());
            }
        }
    }
}

/// What the response said about itself, as far as caching goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Described<'a> {
    pub status: u16,
    pub directives: Directives,
    /// `Expires`, as a raw value (an invalid date means already expired).
    pub expires: Option<&'a str>,
    /// The origin's `Date`.
    pub date: Option<&'a str>,
    /// The origin's `Age`, in seconds.
    pub age: Option<u64>,
    pub sets_cookie: bool,
    /// `Vary`, when present.
    pub vary: Option<&'a str>,
}

/// The largest delta-seconds a cache keeps (RFC 9111 §1.2.2): a larger value,
/// even one that overflows, is taken as 2^31 s, so arithmetic on lifetimes in
/// milliseconds cannot overflow.
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// A delta-seconds value (`max-age`, `Age`, ...): digits only, capped at
/// [`MAX_DELTA_SECONDS`]; `None` when malformed.
pub fn delta_seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<u64>()
            .map_or(MAX_DELTA_SECONDS, |n| n.min(MAX_DELTA_SECONDS)),
    )
}

/// Lifetimes used when the origin says nothing (`--relay-default-ttl` and the
/// stale flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// When a stored response was made and how long it may be used, in a form that
/// means the same to every process (wall-clock milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// When it was received (ms since the epoch).
    pub stored_at: u64,
    /// Its age when received (the origin's `Age`), in seconds.
    pub initial_age: u64,
    /// Seconds it is fresh, counted from its age 0.
    pub fresh: u64,
    /// Seconds after it goes stale that it may still be served while one refresh
    /// runs.
    pub stale_while_revalidate: u64,
    /// Seconds after it goes stale that it may still be served when the origin
    /// fails.
    pub stale_if_error: u64,
}

/// What a cache may do with a stored response at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it, and refresh it once in the background.
    StaleWhileRevalidate,
    /// Refresh it first; if the origin fails, it may still be served.
    StaleIfError,
    /// Refresh it first; it may not be served any more.
    Expired,
}

impl Lifetime {
    /// Its current age in seconds (RFC 9111 §4.2.3, with the origin's `Age` as
    /// the age at receipt).
    pub fn age(&self, now_ms: u64) -> u64 {
        self.initial_age + now_ms.saturating_sub(self.stored_at) / 1000
    }

    pub fn freshness(&self, now_ms: u64) -> Freshness {
        // Compared in milliseconds, so an entry fresh for 1 s is stale after 1 s,
        // not after 1.999 s.
        let age_ms = self.initial_age * 1000 + now_ms.saturating_sub(self.stored_at);
        let fresh_ms = self.fresh * 1000;
        if age_ms < fresh_ms {
            Freshness::Fresh
        } else if age_ms < fresh_ms + self.stale_while_revalidate * 1000 {
            Freshness::StaleWhileRevalidate
        } else if age_ms < fresh_ms + self.stale_if_error * 1000 {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// The last moment (ms since the epoch) at which it could be served at all.
    pub fn useless_after(&self) -> u64 {
        let stale = self.stale_while_revalidate.max(self.stale_if_error);
        (self.stored_at + (self.fresh + stale) * 1000).saturating_sub(self.initial_age * 1000)
    }
}

/// The statuses a cache may store without explicit freshness (RFC 9110 §15.1,
/// "heuristically cacheable"); no other status is stored at all here.
fn cacheable_status(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether and how a response may be stored by a shared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Store(Lifetime),
    /// Not stored, and why.
    Pass(&'static str),
}

/// The reason of a [`Decision::Pass`] for a status a cache may not store unless
/// told it may (the only reason that is not the response forbidding it).
const STATUS: &str = "status";

impl Decision {
    /// Whether the response itself forbids shared caches to keep it (`no-store`,
    /// `private`, `Set-Cookie`, `Vary: *`): what such a cache kept of the same
    /// resource before should go too. A status a cache may not store unasked
    /// (a 5xx, say) says nothing about an earlier answer.
    pub fn forbids_sharing(&self) -> bool {
        matches!(self, Decision::Pass(why) if *why != STATUS)
    }
}

/// Decides what a shared cache may do with a response received at `now_ms`.
pub fn decide(resp: &Described<'_>, defaults: &Defaults, now_ms: u64) -> Decision {
    let d = &resp.directives;
    if d.no_store {
        return Decision::Pass("no-store");
    }
    if d.private {
        return Decision::Pass("private");
    }
    if resp.sets_cookie {
        return Decision::Pass("set-cookie");
    }
    if resp.vary.is_some_and(|v| v.split(',').any(|f| f.trim() == "*")) {
        return Decision::Pass("vary: *");
    }
    if !cacheable_status(resp.status) {
        return Decision::Pass(STATUS);
    }
    let fresh = if d.no_cache {
        0
    } else if let Some(s) = d.s_maxage.or(d.max_age) {
        s
    } else if let Some(expires) = resp.expires {
        // Expires - Date, or - now when the origin sent no Date; an invalid
        // Expires means "already expired".
        let base = resp
            .date
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .map_or(now_ms / 1000, unix_seconds);
        httpdate::parse_http_date(expires)
            .ok()
            .map_or(0, |t| unix_seconds(t).saturating_sub(base))
    } else {
        defaults.ttl.as_secs()
    }
    .min(MAX_DELTA_SECONDS);
    // A stale answer is never served when the origin forbids it: no-cache wants
    // every use validated, must-revalidate (and proxy-revalidate) any stale one
    // (RFC 9111 §4.2.4). s-maxage implies proxy-revalidate (§5.2.2.10): only the
    // origin's own stale-* directives apply then, not this cache's defaults.
    let stale = |given: Option<u64>, default: Duration| {
        if d.must_revalidate || d.no_cache {
            0
        } else if d.s_maxage.is_some() {
            given.unwrap_or(0)
        } else {
            given.unwrap_or(default.as_secs().min(MAX_DELTA_SECONDS))
        }
    };
    Decision::Store(Lifetime {
        stored_at: now_ms,
        initial_age: resp.age.unwrap_or(0).min(MAX_DELTA_SECONDS),
        fresh,
        stale_while_revalidate: stale(d.stale_while_revalidate, defaults.stale_while_revalidate),
        stale_if_error: stale(d.stale_if_error, defaults.stale_if_error),
    })
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC 9110
/// §13.1.2: `W/` prefixes are ignored on both sides). The value is `*` or a
/// list of entity tags, each a quoted string (which may hold commas); an `etag`
/// that is not a quoted string matches no tag, and a malformed list matches
/// nothing from where it goes wrong.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    let quoted = etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"');
    let mut rest = if_none_match.trim_start();
    if rest.trim_end() == "*" {
        return true;
    }
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(inner) = tag.strip_prefix('"') else {
            return false;
        };
        let Some(end) = inner.find('"') else {
            return false;
        };
        if quoted && tag[..end + 2] == *etag {
            return true;
        }
        rest = &inner[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        ttl: Duration::from_secs(60),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
    };
    const NOW: u64 = 1_700_000_000_000;

    fn described(cache_control: &str) -> Described<'static> {
        let mut directives = Directives::default();
        directives.add(cache_control);
        Described {
            status: 200,
            directives,
            ..Described::default()
        }
    }

    fn lifetime(d: &Described<'_>) -> Lifetime {
        match decide(d, &DEFAULTS, NOW) {
            Decision::Store(l) => l,
            Decision::Pass(why) => panic!("not stored: {why}"),
        }
    }

    #[test]
    fn directives_parse_case_insensitively_with_arguments() {
        let mut d = Directives::default();
        d.add("Max-Age=30, s-maxage=\"10\", stale-while-revalidate=5");
        d.add("stale-if-error=100, MUST-REVALIDATE, x-unknown=1");
        assert_eq!(d.max_age, Some(30));
        assert_eq!(d.s_maxage, Some(10));
        assert_eq!(d.stale_while_revalidate, Some(5));
        assert_eq!(d.stale_if_error, Some(100));
        assert!(d.must_revalidate);
        let mut bad = Directives::default();
        bad.add("max-age=soon");
        assert_eq!(bad.max_age, Some(0), "a malformed delta means stale");
    }

    #[test]
    fn no_store_private_cookies_vary_star_and_odd_statuses_are_not_stored() {
        assert_eq!(
            decide(&described("no-store, max-age=60"), &DEFAULTS, NOW),
            Decision::Pass("no-store")
        );
        assert_eq!(
            decide(&described("private, max-age=60"), &DEFAULTS, NOW),
            Decision::Pass("private")
        );
        let cookie = Described {
            sets_cookie: true,
            ..described("max-age=60")
        };
        assert_eq!(decide(&cookie, &DEFAULTS, NOW), Decision::Pass("set-cookie"));
        let vary = Described {
            vary: Some("Accept, *"),
            ..described("max-age=60")
        };
        assert_eq!(decide(&vary, &DEFAULTS, NOW), Decision::Pass("vary: *"));
        // Those forbid sharing (an older copy goes too); a status does not.
        for d in [&described("no-store"), &described("private"), &cookie, &vary] {
            assert!(decide(d, &DEFAULTS, NOW).forbids_sharing(), "{d:?}");
        }
        assert!(!decide(&described("max-age=60"), &DEFAULTS, NOW).forbids_sharing());
        for status in [201, 302, 500, 502, 503] {
            let d = Described {
                status,
                ..described("max-age=60")
            };
            assert_eq!(decide(&d, &DEFAULTS, NOW), Decision::Pass("status"), "{status}");
            assert!(!decide(&d, &DEFAULTS, NOW).forbids_sharing(), "{status}");
        }
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_both_over_expires() {
        assert_eq!(lifetime(&described("max-age=30, s-maxage=10")).fresh, 10);
        let d = Described {
            expires: Some("Thu, 01 Jan 2037 00:00:00 GMT"),
            ..described("max-age=30")
        };
        assert_eq!(lifetime(&d).fresh, 30);
    }

    #[test]
    fn expires_counts_from_the_origins_date_and_an_invalid_one_is_stale() {
        let d = Described {
            expires: Some("Sun, 06 Nov 1994 08:50:37 GMT"),
            date: Some("Sun, 06 Nov 1994 08:49:37 GMT"),
            ..described("")
        };
        assert_eq!(lifetime(&d).fresh, 60);
        let bad = Described {
            expires: Some("0"),
            ..described("")
        };
        assert_eq!(lifetime(&bad).fresh, 0);
    }

    #[test]
    fn silence_means_the_default_ttl_and_no_cache_means_always_revalidate() {
        assert_eq!(lifetime(&described("")).fresh, 60);
        assert_eq!(lifetime(&described("no-cache, max-age=60")).fresh, 0);
    }

    #[test]
    fn freshness_moves_through_its_windows() {
        let l = Lifetime {
            stored_at: NOW,
            initial_age: 2,
            fresh: 10,
            stale_while_revalidate: 5,
            stale_if_error: 20,
        };
        assert_eq!(l.age(NOW + 1_500), 3);
        assert_eq!(l.freshness(NOW + 7_999), Freshness::Fresh);
        assert_eq!(l.freshness(NOW + 8_000), Freshness::StaleWhileRevalidate);
        assert_eq!(l.freshness(NOW + 13_000), Freshness::StaleIfError);
        assert_eq!(l.freshness(NOW + 28_000), Freshness::Expired);
        assert_eq!(l.useless_after(), NOW + 28_000);
    }

    #[test]
    fn must_revalidate_forbids_serving_stale() {
        let l = lifetime(&described(
            "max-age=1, must-revalidate, stale-while-revalidate=60, stale-if-error=60",
        ));
        assert_eq!((l.stale_while_revalidate, l.stale_if_error), (0, 0));
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("W/\"a\"", "\"a\""));
        assert!(etag_matches("\"x\", \"a\"", "W/\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
        // A tag may hold a comma; empty members are no tags.
        assert!(etag_matches("\"x\", \"a,b\"", "\"a,b\""));
        assert!(!etag_matches("\"a\"", "\"a,b\""));
        assert!(!etag_matches(",", ""));
        assert!(!etag_matches(" , ", "\"\""));
        assert!(etag_matches("\"\"", "\"\""));
        // Malformed lists match nothing from where they go wrong.
        assert!(!etag_matches("a", "a"));
        assert!(!etag_matches("\"a", "\"a"));
        assert!(etag_matches("\"a\", b", "\"a\""));
        assert!(!etag_matches("b, \"a\"", "\"a\""));
    }

    #[test]
    fn huge_delta_seconds_are_capped_not_wrapped() {
        assert_eq!(
            delta_seconds("18446744073709552"),
            Some(18446744073709552u64.min(MAX_DELTA_SECONDS))
        );
        assert_eq!(delta_seconds("99999999999999999999999"), Some(MAX_DELTA_SECONDS));
        assert_eq!(delta_seconds(" 30 "), Some(30));
        assert_eq!(delta_seconds("-1"), None);
        assert_eq!(delta_seconds("1e3"), None);
        let l = lifetime(&described(
            "max-age=99999999999999999999, stale-if-error=18446744073709551615",
        ));
        assert_eq!(
            (l.fresh, l.stale_if_error),
            (MAX_DELTA_SECONDS, MAX_DELTA_SECONDS)
        );
        // No overflow anywhere in the arithmetic, and an old entry stays old.
        assert!(l.useless_after() > NOW);
        assert_eq!(l.freshness(NOW + 1_000), Freshness::Fresh);
        let old = Described {
            age: delta_seconds("18446744073709552"),
            ..described("max-age=60")
        };
        assert_eq!(lifetime(&old).freshness(NOW), Freshness::Expired);
    }

    #[test]
    fn no_cache_is_never_served_stale_and_s_maxage_takes_no_stale_default() {
        let lenient = Defaults {
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
        };
        let life = |cc: &str| match decide(&described(cc), &lenient, NOW) {
            Decision::Store(l) => (l.fresh, l.stale_while_revalidate, l.stale_if_error),
            Decision::Pass(why) => panic!("not stored: {why}"),
        };
        assert_eq!(
            life("no-cache, stale-while-revalidate=30, stale-if-error=60"),
            (0, 0, 0)
        );
        assert_eq!(life("no-cache"), (0, 0, 0));
        assert_eq!(life("s-maxage=10"), (10, 0, 0), "no stale default with s-maxage");
        assert_eq!(
            life("s-maxage=10, stale-while-revalidate=5"),
            (10, 5, 0),
            "the origin's own"
        );
        assert_eq!(life("max-age=10"), (10, 30, 300), "defaults otherwise");
    }
}
