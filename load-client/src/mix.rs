//! Request kinds: how each is built and what its answer must be.
//!
//! Every response is validated against its request (status and body), so a wrong
//! answer is an error with a reason, never a success. Requests that create things
//! use unique names and unique bytes, so their expected status is always the
//! "created" one.

use crate::relay::Keys;
use crate::Rng;
use md5::{Digest, Md5};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Create,
    Login,
    Sample,
    File,
    Event,
    Counter,
    Health,
    GetSample,
    ListSamples,
    Relay,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Create,
        Kind::Login,
        Kind::Sample,
        Kind::File,
        Kind::Event,
        Kind::Counter,
        Kind::Health,
        Kind::GetSample,
        Kind::ListSamples,
        Kind::Relay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Login => "login",
            Kind::Sample => "sample",
            Kind::File => "file",
            Kind::Event => "event",
            Kind::Counter => "counter",
            Kind::Health => "health",
            Kind::GetSample => "get-sample",
            Kind::ListSamples => "list-samples",
            Kind::Relay => "relay",
        }
    }

    fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether requests of this kind need user tokens from set-up.
    pub fn needs_users(self) -> bool {
        matches!(
            self,
            Kind::Login | Kind::Sample | Kind::File | Kind::GetSample | Kind::ListSamples
        )
    }
}

/// Samples per page a `list-samples` request asks for.
pub const PAGE: usize = 20;

/// Weighted choice of request kinds, e.g. `create=1,login=1,sample=1`.
#[derive(Debug, Clone)]
pub struct Mix {
    table: Vec<(Kind, u32)>,
    total: u32,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut table = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let kind = Kind::from_name(name.trim()).ok_or_else(|| {
                let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown request kind {name:?} (one of {})", names.join(", "))
            })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("invalid weight in {part:?}"))?;
            if weight > 0 {
                table.push((kind, weight));
            }
        }
        let total = table.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err("the mix is empty".into());
        }
        Ok(Mix { table, total })
    }

    pub fn kinds(&self) -> impl Iterator<Item = Kind> + '_ {
        self.table.iter().map(|(k, _)| *k)
    }

    pub fn pick(&self, rng: &mut Rng) -> Kind {
        let mut r = rng.below(u64::from(self.total)) as u32;
        for (kind, w) in &self.table {
            if r < *w {
                return *kind;
            }
            r -= w;
        }
        self.table[0].0
    }
}

/// Users and data made during set-up, shared by every thread.
#[derive(Debug, Default, Clone)]
pub struct Fixture {
    /// A tag unique to this run, in every name and body made.
    pub run: String,
    pub users: Vec<(String, String)>,
    pub tokens: Vec<String>,
    pub sample_ids: Vec<i64>,
}

pub const PASSWORD: &str = "load-client-password";

/// What a response must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `{"api_key": <64 hex>, ...}`
    ApiKey,
    /// `{"id": <integer>}`
    NewId,
    /// `{"md5": <this>, ...}`
    Md5(String),
    /// Exactly these bytes.
    Body(&'static [u8]),
    /// `{"value": <integer>}`; the value is reported back.
    CounterValue,
    /// `{"id": <this>, ...}`
    SampleId(i64),
    /// A body of exactly this many bytes.
    Len(usize),
    /// `{"samples": [...]}` with at least this many and at most [`PAGE`] samples.
    Page(usize),
    /// Any body.
    Any,
}

#[derive(Debug, Clone)]
pub struct Expect {
    pub kind: Kind,
    pub status: u16,
    pub check: Check,
}

impl Expect {
    /// Checks an answer; returns the counter value for counter requests.
    pub fn validate(&self, status: u16, body: &[u8]) -> Result<Option<i64>, String> {
        if status != self.status {
            return Err(format!("status {status}, expected {}", self.status));
        }
        let json =
            || serde_json::from_slice::<serde_json::Value>(body).map_err(|_| "body is not JSON".to_string());
        match &self.check {
            Check::Any => Ok(None),
            Check::Page(min) => match json()?["samples"].as_array().map(Vec::len) {
                Some(n) if (*min..=PAGE).contains(&n) => Ok(None),
                Some(n) => Err(format!("a page of {n} samples, expected {min} to {PAGE}")),
                None => Err("no samples array in body".into()),
            },
            Check::Len(n) => {
                if body.len() == *n {
                    Ok(None)
                } else {
                    Err(format!("body of {} bytes, expected {n}", body.len()))
                }
            }
            Check::Body(b) => {
                if body == *b {
                    Ok(None)
                } else {
                    Err("unexpected body".into())
                }
            }
            Check::ApiKey => {
                let v = json()?;
                let key = v["api_key"].as_str().unwrap_or("");
                if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(None)
                } else {
                    Err("no api_key in body".into())
                }
            }
            Check::NewId => match json()?["id"].as_i64() {
                Some(_) => Ok(None),
                None => Err("no id in body".into()),
            },
            Check::SampleId(id) => match json()?["id"].as_i64() {
                Some(got) if got == *id => Ok(None),
                _ => Err("wrong sample id in body".into()),
            },
            Check::Md5(m) => match json()?["md5"].as_str() {
                Some(got) if got == m => Ok(None),
                _ => Err("wrong md5 in body".into()),
            },
            Check::CounterValue => match json()?["value"].as_i64() {
                Some(v) => Ok(Some(v)),
                None => Err("no value in body".into()),
            },
        }
    }
}

/// Builds requests for one thread.
pub struct Gen<'a> {
    pub fixture: &'a Fixture,
    pub host: &'a str,
    pub rng: Rng,
    pub thread: usize,
    /// For the 1mrc scenario: events follow the global sequence number
    /// (user_{seq % users}, value seq % 1000) instead of random draws.
    pub sequential_events: Option<u64>,
    /// What relay requests ask for.
    relay: &'a Keys,
    /// The relay target being built, reused so a relay request allocates nothing.
    path: String,
    n: u64,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

impl<'a> Gen<'a> {
    pub fn new(
        fixture: &'a Fixture,
        host: &'a str,
        seed: u64,
        thread: usize,
        sequential_events: Option<u64>,
        relay: &'a Keys,
    ) -> Self {
        Gen {
            fixture,
            host,
            rng: Rng::new(seed ^ ((thread as u64 + 1) * 0x1000_0001)),
            thread,
            sequential_events,
            relay,
            path: String::new(),
            n: 0,
        }
    }

    fn token(&mut self) -> String {
        let t = &self.fixture.tokens;
        format!("Bearer {}", t[self.rng.below(t.len() as u64) as usize])
    }

    /// Appends one request of `kind` to `out`; `seq` is its global sequence number.
    pub fn build(&mut self, kind: Kind, seq: u64, out: &mut Vec<u8>) -> Expect {
        self.n += 1;
        // Made only by the kinds that need it: the others allocate nothing here.
        let (fixture, thread, n) = (self.fixture, self.thread, self.n);
        let unique = || format!("{}-{thread}-{n}", fixture.run);
        let host = self.host;
        let (status, check) = match kind {
            Kind::Create => {
                let name = format!("lc{}", hex(&Md5::digest(unique().as_bytes()))[..24].to_owned());
                let body = format!(
                    r#"{{"username":"{name}","password":"{PASSWORD}","email":"{name}@example.org"}}"#
                );
                crate::http::encode(out, "POST", "/auth/create", host, &[JSON], body.as_bytes());
                (201, Check::ApiKey)
            }
            Kind::Login => {
                let users = &self.fixture.users;
                let (user, pw) = &users[self.rng.below(users.len() as u64) as usize];
                let body = format!(r#"{{"username":"{user}","password":"{pw}"}}"#);
                crate::http::encode(out, "POST", "/auth/login", host, &[JSON], body.as_bytes());
                (200, Check::ApiKey)
            }
            Kind::Sample => {
                let md5 = hex(&Md5::digest(unique().as_bytes()));
                let body = sample_body(&md5);
                let auth = self.token();
                crate::http::encode(
                    out,
                    "POST",
                    "/api/sample",
                    host,
                    &[JSON, ("Authorization", &auth)],
                    body.as_bytes(),
                );
                (201, Check::NewId)
            }
            Kind::File => {
                let mut body = vec![b'.'; 1024];
                let unique = unique();
                let tag = unique.as_bytes();
                body[..tag.len().min(1024)].copy_from_slice(&tag[..tag.len().min(1024)]);
                let md5 = hex(&Md5::digest(&body));
                let auth = self.token();
                crate::http::encode(
                    out,
                    "POST",
                    "/api/file",
                    host,
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Authorization", &auth),
                    ],
                    &body,
                );
                (201, Check::Md5(md5))
            }
            Kind::Event => {
                let (user, value) = match self.sequential_events {
                    Some(users) => (seq % users, seq % 1000),
                    None => (self.rng.below(75_000), self.rng.below(1000)),
                };
                let body = format!(r#"{{"userId":"user_{user}","value":{value}}}"#);
                crate::http::encode(out, "POST", "/event", host, &[JSON], body.as_bytes());
                (200, Check::Any)
            }
            Kind::Counter => {
                crate::http::encode(out, "POST", "/api/v1/counter", host, &[], b"");
                (200, Check::CounterValue)
            }
            Kind::Health => {
                crate::http::encode(out, "GET", "/health", host, &[], b"");
                (200, Check::Body(br#"{"status":"ok"}"#))
            }
            Kind::GetSample => {
                let ids = &self.fixture.sample_ids;
                let id = ids[self.rng.below(ids.len() as u64) as usize];
                let auth = self.token();
                crate::http::encode(
                    out,
                    "GET",
                    &format!("/api/sample/{id}"),
                    host,
                    &[("Authorization", &auth)],
                    b"",
                );
                (200, Check::SampleId(id))
            }
            Kind::ListSamples => {
                let auth = self.token();
                let path = format!("/api/samples?limit={PAGE}");
                crate::http::encode(out, "GET", &path, host, &[("Authorization", &auth)], b"");
                // Every sample set-up made is in the table, so the first page holds
                // at least as many of them as fit.
                (200, Check::Page(self.fixture.sample_ids.len().min(PAGE)))
            }
            Kind::Relay => {
                self.relay.path_into(seq, &mut self.path);
                crate::http::encode(out, "GET", &self.path, host, &[], b"");
                let size = usize::try_from(self.relay.size).unwrap_or(usize::MAX);
                (200, Check::Len(size))
            }
        };
        Expect { kind, status, check }
    }
}

/// The C project's sample body with the given image md5.
pub fn sample_body(md5: &str) -> String {
    format!(
        r#"{{"img_md5":"{md5}","timestamp":"2000-12-09","latitude":4743.546754,"longitude":729.55436546,"altitude":4935.3,"metadata":35983465,"flora":["ORCHID","DAFFODIL","GRASS","MINECRAFTGRASS"],"fauna":["GOBLIN","TROLL","ORC","GOOBER"],"calls":["MORDECAI","RIGBY","BENSON","POPS","MUSCLE MAN"]}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let m = Mix::parse("create=1, login=3").expect("mix");
        let mut rng = Rng::new(1);
        let logins = (0..4000).filter(|_| m.pick(&mut rng) == Kind::Login).count();
        assert!((2700..3300).contains(&logins), "{logins}");
        assert!(Mix::parse("bogus=1").is_err());
        assert!(Mix::parse("health=0").is_err());
    }

    #[test]
    fn validation_rejects_wrong_answers() {
        let e = Expect {
            kind: Kind::Health,
            status: 200,
            check: Check::Body(br#"{"status":"ok"}"#),
        };
        assert!(e.validate(200, br#"{"status":"ok"}"#).is_ok());
        assert!(e.validate(200, b"{}").is_err());
        assert!(e.validate(500, br#"{"status":"ok"}"#).is_err());
        let c = Expect {
            kind: Kind::Counter,
            status: 200,
            check: Check::CounterValue,
        };
        assert_eq!(c.validate(200, br#"{"value":7}"#), Ok(Some(7)));
        assert!(c.validate(200, br#"{"value":"7"}"#).is_err());
        let page = Expect {
            kind: Kind::ListSamples,
            status: 200,
            check: Check::Page(2),
        };
        assert!(page
            .validate(200, br#"{"samples":[{},{}],"next_after":null}"#)
            .is_ok());
        assert!(
            page.validate(200, br#"{"samples":[{}]}"#).is_err(),
            "fewer than set-up made"
        );
        let too_many = format!(r#"{{"samples":[{}]}}"#, vec!["{}"; PAGE + 1].join(","));
        assert!(
            page.validate(200, too_many.as_bytes()).is_err(),
            "more than a page"
        );
        assert!(page.validate(200, b"{}").is_err());
    }
}
