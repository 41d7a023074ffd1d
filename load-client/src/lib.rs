//! The measuring side of crudrs: a runtime-free load engine (threads, each driving
//! many non-blocking sockets through its own readiness poller) that counts only
//! completed responses that passed validation, with HDR latency histograms.
//!
//! `http` speaks just enough HTTP/1.1 client; `mix` says what each request kind
//! sends and what its answer must look like; `engine` drives sockets (pipelining,
//! open or closed model); `report` merges histograms into tables and JSON;
//! `scenario` sets up users and checks server state after a run (1mrc, counter);
//! `relay` builds the relay scenario's targets and counts its `X-Cache` answers.
//! The `latency-client` binary reuses `http` and `report`.

pub mod engine;
pub mod http;
pub mod mix;
pub mod relay;
pub mod report;
pub mod scenario;

/// Parses `250ms`, `10s`, `5m`, `2h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    }
}

/// A tag unique to one run (time and seed), put in every name a run creates.
pub fn run_tag(seed: u64) -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    format!("{:x}", micros ^ seed)
}

/// A small, seedable PRNG (xorshift64*): reproducible runs without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rng() {
        assert_eq!(parse_duration("100ms"), Ok(std::time::Duration::from_millis(100)));
        assert_eq!(parse_duration("3"), Ok(std::time::Duration::from_secs(3)));
        assert!(parse_duration("1y").is_err());
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert!(a.below(10) < 10);
    }
}
