//! A relayed response as the caches keep it: status, the end-to-end header
//! fields to pass on (hop-by-hop ones removed), the body, its validators and its
//! lifetime.
//!
//! Invariant: `lines` is valid header text (each field `\r\nName: value`, no
//! CR or LF inside a value) and never holds a field the server writes itself
//! (`Content-Length`, `Age`, `Connection`, `X-Request-Id`, ...), nor any
//! hop-by-hop field, nor a field the upstream's `Connection` named. It starts
//! with exactly one valid `Date`: the upstream's, or, when it sent none (or one
//! that is not an HTTP-date), the time the response was received (RFC 9110
//! §6.6.1). A relayed answer carries that Date, not the time it is served, so a
//! cache downstream computes the age and the `Expires` lifetime the upstream
//! meant (with `Age`, RFC 9111 §4.2.3).

use crate::cache::memory::Weigh;
use crate::cache::policy::{self, delta_seconds, Decision, Defaults, Described, Directives, Lifetime};
use std::sync::Arc;

/// A response from the upstream, as received.
pub struct Received {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response ready to be answered (and, when `life` is set, kept).
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    /// The fields relayed, by name and value (kept to merge a 304's fields in).
    pub headers: Box<[(Box<str>, Box<str>)]>,
    /// The same fields as header text, ready to append to a response head.
    pub lines: Arc<[u8]>,
    /// The fields of a 304 made from this entry: without the representation's
    /// metadata (`Content-Type`, `Content-Encoding`, `Content-Language`), which
    /// a 304 should not carry (RFC 9110 §15.4.5).
    pub lines_304: Arc<[u8]>,
    pub body: Arc<[u8]>,
    pub etag: Option<Box<str>>,
    pub last_modified: Option<Box<str>>,
    /// How long it may be used; `None`: it may not be stored, only answered to
    /// the requests that waited for it.
    pub life: Option<Lifetime>,
    /// The response forbids shared caches to keep it (`no-store`, `private`,
    /// ...): an older copy of the key in a shared cache goes too.
    pub forbids_sharing: bool,
}

impl Weigh for Entry {
    fn weight(&self) -> u64 {
        (self.lines.len() * 2 + self.lines_304.len() + self.body.len() + 128) as u64
    }
}

/// Fields never relayed in either direction (RFC 9110 §7.6.1), plus those this
/// server writes itself.
fn dropped(name: &str) -> bool {
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    const OWN: &[&str] = &[
        "content-length",
        "age",
        "x-cache",
        "x-request-id",
        "x-instance-id",
        "ratelimit",
        "ratelimit-policy",
    ];
    HOP_BY_HOP.iter().chain(OWN).any(|h| name.eq_ignore_ascii_case(h))
}

impl Entry {
    /// Builds the entry for a response received at `now_ms`, deciding whether a
    /// shared cache may keep it.
    pub fn new(received: Received, defaults: &Defaults, now_ms: u64) -> Entry {
        let headers = relayed(&received.headers);
        let decision = policy::decide(&describe(received.status, &received.headers), defaults, now_ms);
        Entry::assemble(received.status, headers, received.body.into(), decision, now_ms)
    }

    /// Whether a 304 is about this entry (RFC 9111 §4.3.4): an ETag in the 304
    /// must name this entry's (compared weakly: `W/` aside); a 304 without one is
    /// taken as validating what was asked for.
    pub fn validated_by(&self, not_modified: &Received) -> bool {
        let named = not_modified
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
            .map(|(_, v)| v.trim());
        match named {
            None => true,
            Some(tag) => self
                .etag
                .as_deref()
                .is_some_and(|mine| policy::etag_matches(tag, mine)),
        }
    }

    /// This entry revalidated by a 304 received at `now_ms`: its body, with the
    /// 304's fields replacing the stored ones of the same name (RFC 9111 §4.3.4),
    /// and a lifetime decided anew. The stored Date goes whatever the 304 says:
    /// the 304's own, or the time it was received.
    pub fn renewed(&self, not_modified: &Received, defaults: &Defaults, now_ms: u64) -> Entry {
        let update = relayed(&not_modified.headers);
        let mut headers: Vec<(Box<str>, Box<str>)> = self
            .headers
            .iter()
            .filter(|(name, _)| {
                !name.eq_ignore_ascii_case("date")
                    && !update.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .cloned()
            .collect();
        headers.extend(update);
        let mut pairs: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        // The lifetime is the 304's: counted from its own Date (Expires - Date,
        // among the fields now) and Age, which is not kept among them.
        pairs.extend(
            not_modified
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("age"))
                .cloned(),
        );
        let decision = policy::decide(&describe(self.status, &pairs), defaults, now_ms);
        Entry::assemble(self.status, headers, Arc::clone(&self.body), decision, now_ms)
    }

    /// An entry read back from the shared cache. (A row written before entries
    /// kept their Date gets the time it was stored.)
    pub fn restore(status: u16, headers: Vec<(String, String)>, body: Arc<[u8]>, life: Lifetime) -> Entry {
        Entry::assemble(
            status,
            relayed(&headers),
            body,
            Decision::Store(life),
            life.stored_at,
        )
    }

    /// Builds the entry from its relayed fields; `received_ms`: when the
    /// response arrived, the Date it gets when it has no valid one.
    fn assemble(
        status: u16,
        mut headers: Vec<(Box<str>, Box<str>)>,
        body: Arc<[u8]>,
        decision: Decision,
        received_ms: u64,
    ) -> Entry {
        let forbids_sharing = decision.forbids_sharing();
        let life = match decision {
            Decision::Store(life) => Some(life),
            Decision::Pass(_) => None,
        };
        let is_date = |n: &str| n.eq_ignore_ascii_case("date");
        let date = headers
            .iter()
            .find(|(n, v)| is_date(n) && httpdate::parse_http_date(v).is_ok())
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(received_ms);
                httpdate::fmt_http_date(at).into()
            });
        headers.retain(|(n, _)| !is_date(n));
        headers.insert(0, ("Date".into(), date));
        let render = |keep: &dyn Fn(&str) -> bool| {
            let mut lines = Vec::new();
            for (name, value) in headers.iter().filter(|(n, _)| keep(n)) {
                lines.extend_from_slice(b"\r\n");
                lines.extend_from_slice(name.as_bytes());
                lines.extend_from_slice(b": ");
                lines.extend_from_slice(value.as_bytes());
            }
            lines
        };
        let lines = render(&|_| true);
        let lines_304 = render(&|name| {
            !["content-type", "content-encoding", "content-language"]
                .iter()
                .any(|m| name.eq_ignore_ascii_case(m))
        });
        let find = |wanted: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
                .map(|(_, v)| v.clone())
        };
        Entry {
            status,
            etag: find("etag"),
            last_modified: find("last-modified"),
            lines: lines.into(),
            lines_304: lines_304.into(),
            headers: headers.into(),
            body,
            life,
            forbids_sharing,
        }
    }

    /// Its age in seconds at `now_ms` (0 for a response that is not kept).
    pub fn age(&self, now_ms: u64) -> u64 {
        self.life.map_or(0, |l| l.age(now_ms))
    }
}

/// The fields of `headers` that are relayed: not hop-by-hop, not named by
/// `Connection`, not the server's own, and with values that are valid header
/// text; names in their usual spelling (see [`spelled`]).
fn relayed(headers: &[(String, String)]) -> Vec<(Box<str>, Box<str>)> {
    let named: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    headers
        .iter()
        .filter(|(n, v)| {
            !dropped(n)
                && !named.iter().any(|c| c.eq_ignore_ascii_case(n))
                && is_token(n)
                && v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        })
        .map(|(n, v)| (spelled(n), v.as_str().into()))
        .collect()
}

/// A field name as HTTP/1.1 usually spells it. The upstream client hands names
/// over in lower case (as HTTP/2 writes them); relayed next to this server's
/// own fields they would read `content-type` beside `Content-Length`. Names are
/// case-insensitive, so this is only their look: a lower-case name gets each
/// `-`-separated word capitalised, with the usual exceptions (`ETag`,
/// `WWW-Authenticate`, ...); a name with a capital in it is kept as it is.
fn spelled(name: &str) -> Box<str> {
    const EXCEPTIONS: &[&str] = &[
        "ETag",
        "WWW-Authenticate",
        "Content-MD5",
        "X-XSS-Protection",
        "X-UA-Compatible",
        "DNT",
    ];
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return name.into();
    }
    if let Some(known) = EXCEPTIONS.iter().find(|e| e.eq_ignore_ascii_case(name)) {
        return (*known).into();
    }
    let mut out = String::with_capacity(name.len());
    let mut word_start = true;
    for c in name.chars() {
        out.push(if word_start { c.to_ascii_uppercase() } else { c });
        word_start = c == '-';
    }
    out.into()
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What the response says about its caching.
fn describe(status: u16, headers: &[(String, String)]) -> Described<'_> {
    let mut directives = Directives::default();
    let mut described = Described {
        status,
        ..Described::default()
    };
    for (name, value) in headers {
        let name = name.as_str();
        if name.eq_ignore_ascii_case("cache-control") {
            directives.add(value);
        } else if name.eq_ignore_ascii_case("expires") {
            described.expires = Some(value);
        } else if name.eq_ignore_ascii_case("date") {
            described.date = Some(value);
        } else if name.eq_ignore_ascii_case("age") {
            described.age = delta_seconds(value);
        } else if name.eq_ignore_ascii_case("set-cookie") {
            described.sets_cookie = true;
        } else if name.eq_ignore_ascii_case("vary") {
            // Several Vary fields make one list: once one says `*`, keep it.
            let star = |v: &str| v.split(',').any(|f| f.trim() == "*");
            if !described.vary.is_some_and(star) {
                described.vary = Some(value);
            }
        }
    }
    described.directives = directives;
    described
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DEFAULTS: Defaults = Defaults {
        ttl: Duration::from_secs(60),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
    };

    fn received(headers: &[(&str, &str)]) -> Received {
        Received {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_renewal_counts_its_lifetime_from_the_304s_date_and_age() {
        // The origin's clock is 100 s behind ours: Expires - Date is what it means.
        let now = 1_700_000_000_000u64;
        let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(now - 100_000));
        let expires = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(now - 40_000));
        let e = Entry::new(
            received(&[("Date", &date), ("Expires", &expires), ("ETag", "\"v1\"")]),
            &DEFAULTS,
            now,
        );
        let not_modified = Received {
            status: 304,
            ..received(&[("Date", &date), ("Expires", &expires), ("Age", "10")])
        };
        let life = e.renewed(&not_modified, &DEFAULTS, now).life.expect("kept");
        assert_eq!((life.fresh, life.initial_age), (60, 10));
    }

    #[test]
    fn a_304_validates_only_the_entry_its_strong_etag_names() {
        let e = Entry::new(
            received(&[("ETag", "\"v1\""), ("Cache-Control", "max-age=0")]),
            &DEFAULTS,
            0,
        );
        let not_modified = |headers: &[(&str, &str)]| Received {
            status: 304,
            ..received(headers)
        };
        assert!(e.validated_by(&not_modified(&[("ETag", "\"v1\"")])));
        assert!(e.validated_by(&not_modified(&[])), "no validator in the 304");
        assert!(
            e.validated_by(&not_modified(&[("ETag", "W/\"v1\"")])),
            "compared weakly"
        );
        assert!(!e.validated_by(&not_modified(&[("ETag", "\"v2\"")])));
        assert!(!e.validated_by(&not_modified(&[("ETag", "W/\"v2\"")])));
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_not_relayed() {
        let e = Entry::new(
            received(&[
                ("Content-Type", "application/json"),
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Content-Length", "2"),
                ("X-End-To-End", "kept"),
            ]),
            &DEFAULTS,
            0,
        );
        assert_eq!(
            std::str::from_utf8(&e.lines).unwrap(),
            "\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: application/json\r\nX-End-To-End: kept"
        );
    }

    #[test]
    fn validators_are_found_and_a_304_renews_fields_and_lifetime() {
        let e = Entry::new(
            received(&[("ETag", "\"v1\""), ("Cache-Control", "max-age=1"), ("X-A", "a")]),
            &DEFAULTS,
            1_000,
        );
        assert_eq!(e.etag.as_deref(), Some("\"v1\""));
        assert_eq!(e.life.unwrap().fresh, 1);
        let renewed = e.renewed(
            &Received {
                status: 304,
                headers: vec![("Cache-Control".into(), "max-age=30".into())],
                body: Vec::new(),
            },
            &DEFAULTS,
            5_000,
        );
        assert_eq!(renewed.status, 200);
        assert_eq!(&*renewed.body, b"{}");
        let life = renewed.life.unwrap();
        assert_eq!((life.fresh, life.stored_at), (30, 5_000));
        let text = std::str::from_utf8(&renewed.lines).unwrap();
        assert!(
            text.contains("ETag: \"v1\"") && text.contains("max-age=30") && !text.contains("max-age=1\r")
        );
    }

    #[test]
    fn a_304_leaves_out_the_representation_metadata() {
        let e = Entry::new(
            received(&[
                ("Content-Type", "application/json"),
                ("ETag", "\"v1\""),
                ("Cache-Control", "max-age=9"),
            ]),
            &DEFAULTS,
            0,
        );
        assert_eq!(
            std::str::from_utf8(&e.lines_304).expect("header lines are text"),
            "\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nETag: \"v1\"\r\nCache-Control: max-age=9"
        );
    }

    #[test]
    fn what_may_not_be_shared_has_no_lifetime() {
        for h in [
            ("Cache-Control", "no-store"),
            ("Cache-Control", "private"),
            ("Set-Cookie", "a=b"),
        ] {
            assert!(Entry::new(received(&[h]), &DEFAULTS, 0).life.is_none(), "{h:?}");
        }
    }

    #[test]
    fn lower_case_names_get_their_usual_spelling() {
        let e = Entry::new(
            received(&[
                ("content-type", "application/json"),
                ("etag", "\"v1\""),
                ("x-end-to-end", "kept"),
                ("www-authenticate", "Bearer"),
                ("X-MiXeD", "as sent"),
            ]),
            &DEFAULTS,
            0,
        );
        assert_eq!(
            std::str::from_utf8(&e.lines).expect("header lines are text"),
            "\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Type: application/json\r\nETag: \"v1\"\r\n\
X-End-To-End: kept\r\nWWW-Authenticate: Bearer\r\nX-MiXeD: as sent"
        );
        assert_eq!(e.etag.as_deref(), Some("\"v1\""), "validators are still found");
    }

    #[test]
    fn values_that_are_not_header_text_are_dropped() {
        let e = Entry::new(
            received(&[("X-Bad", "a\r\nInjected: 1"), ("Bad Name", "x")]),
            &DEFAULTS,
            0,
        );
        assert_eq!(&*e.lines, b"\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn every_entry_keeps_one_date_the_upstreams_or_when_it_arrived() {
        let date_of = |e: &Entry| {
            let text = std::str::from_utf8(&e.lines)
                .expect("header lines are text")
                .to_string();
            assert_eq!(text.matches("Date: ").count(), 1, "{text}");
            text.strip_prefix("\r\nDate: ").expect("Date comes first")[..29].to_string()
        };
        let at = |ms: u64| httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms));
        let now = 1_700_000_000_000u64;
        // The upstream's own Date stays, however far its clock is from ours.
        let theirs = at(now - 3_600_000);
        let e = Entry::new(
            received(&[("Cache-Control", "max-age=60"), ("Date", &theirs)]),
            &DEFAULTS,
            now,
        );
        assert_eq!(date_of(&e), theirs);
        assert!(std::str::from_utf8(&e.lines_304)
            .expect("header lines are text")
            .starts_with(&format!("\r\nDate: {theirs}")));
        // None, or one that is no HTTP-date: the time it was received.
        for h in [
            vec![],
            vec![("Date", "yesterday")],
            vec![("Date", "yesterday"), ("date", &*theirs)],
        ] {
            let e = Entry::new(received(&h), &DEFAULTS, now);
            let expected = if h.len() == 2 { theirs.clone() } else { at(now) };
            assert_eq!(date_of(&e), expected, "{h:?}");
        }
        // A 304 brings its own Date, or stands for one of when it came.
        let renewed = e.renewed(
            &Received {
                status: 304,
                ..received(&[("Date", &at(now + 5_000))])
            },
            &DEFAULTS,
            now + 6_000,
        );
        assert_eq!(date_of(&renewed), at(now + 5_000));
        let renewed = e.renewed(
            &Received {
                status: 304,
                ..received(&[])
            },
            &DEFAULTS,
            now + 6_000,
        );
        assert_eq!(date_of(&renewed), at(now + 6_000));
        // A level-2 row keeps its Date; one written without gets its storing time.
        let life = e.life.expect("kept");
        let restored = Entry::restore(200, vec![("Date".into(), theirs.clone())], e.body.clone(), life);
        assert_eq!(date_of(&restored), theirs);
        let restored = Entry::restore(200, vec![], e.body.clone(), life);
        assert_eq!(date_of(&restored), at(life.stored_at));
    }
}
