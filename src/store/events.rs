//! The One Million Request Challenge aggregate: event count, exact sum and unique
//! users, in memory.
//!
//! Exact means: every event is counted once (count, sum and the user set of a shard
//! change under one lock), and the sum is kept as an integer number of nano-units
//! (10^-9) in an i128, so decimal values add without binary floating-point drift.
//! A value is read from its JSON text: negative values are fine; a value with more
//! than nine decimal places, or beyond ±10^18, is refused rather than rounded. The
//! average is the exact sum divided by the count, written out to 40 decimal places
//! and rounded once to the nearest f64 ([`Stats::average`]).
//! Users are kept as their full strings (no hash-only counting, so no collisions):
//! about 56 bytes plus the id's length per user. Nothing here survives a restart.
//!
//! Shared (several instances, `--shared-stats`): each shard also keeps what it has
//! not yet handed over (events, their sum, users first seen) as a [`Delta`];
//! `take_delta` hands it over under the same locks that count, so every event is in
//! exactly one delta, and a delta that could not be published goes back with
//! `restore`.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

const SHARDS: usize = 64;
/// Decimal places kept exactly.
pub const SCALE_DIGITS: u32 = 9;
const SCALE: i128 = 1_000_000_000;
/// Largest accepted magnitude of one value, in whole units.
const MAX_UNITS: i128 = 1_000_000_000_000_000_000;

#[derive(Default)]
struct Shard {
    count: u64,
    sum_nanos: i128,
    users: HashSet<Box<str>>,
    /// Not yet handed over (only when shared).
    delta: Delta,
}

/// Events, their sum and the users first seen since the last hand-over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub count: u64,
    pub sum_nanos: i128,
    pub users: Vec<Box<str>>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.users.is_empty()
    }

    fn add(&mut self, other: Delta) {
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
        self.users.extend(other.users);
    }
}

pub struct Events {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Whether deltas are kept for other instances.
    shared: bool,
}

/// A consistent-per-shard snapshot of the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub total: u64,
    pub unique_users: u64,
    pub sum_nanos: i128,
}

impl Stats {
    /// The sum over the count (0 when there are no events), from the exact quotient
    /// to 40 decimal places, so the f64 is rounded once instead of after each of a
    /// conversion and two divisions.
    pub fn average(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        // |sum| < 2^127 and the divisor < 2^94, so `rem * 10` fits in a u128.
        let divisor = u128::from(self.total) * SCALE as u128;
        let n = self.sum_nanos.unsigned_abs();
        let mut rem = n % divisor;
        let mut text = String::with_capacity(88);
        if self.sum_nanos < 0 {
            text.push('-');
        }
        text.push_str(itoa::Buffer::new().format(n / divisor));
        text.push('.');
        for _ in 0..40 {
            rem *= 10;
            text.push(char::from(b'0' + (rem / divisor) as u8));
            rem %= divisor;
        }
        text.parse().unwrap_or(f64::NAN)
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new(false)
    }
}

impl Events {
    /// An empty aggregate; `shared`: keep deltas for other instances.
    pub fn new(shared: bool) -> Events {
        Events {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            shared,
        }
    }

    /// Records one event. Allocates only the first time a user is seen.
    pub fn record(&self, user: &str, value_nanos: i128) {
        let shard = &self.shards[(self.hasher.hash_one(user) as usize) % SHARDS];
        let mut s = shard.lock();
        s.count += 1;
        s.sum_nanos += value_nanos;
        let new = !s.users.contains(user);
        if new {
            s.users.insert(user.into());
        }
        if self.shared {
            s.delta.count += 1;
            s.delta.sum_nanos += value_nanos;
            if new {
                s.delta.users.push(user.into());
            }
        }
    }

    /// Everything not yet handed over, which is then no longer held here.
    pub fn take_delta(&self) -> Delta {
        let mut all = Delta::default();
        for shard in self.shards.iter() {
            all.add(std::mem::take(&mut shard.lock().delta));
        }
        all
    }

    /// Gives back a delta that could not be handed over (it goes out next time).
    pub fn restore(&self, delta: Delta) {
        self.shards[0].lock().delta.add(delta);
    }

    pub fn stats(&self) -> Stats {
        let mut st = Stats {
            total: 0,
            unique_users: 0,
            sum_nanos: 0,
        };
        for shard in self.shards.iter() {
            let s = shard.lock();
            st.total += s.count;
            st.unique_users += s.users.len() as u64;
            st.sum_nanos += s.sum_nanos;
        }
        st
    }
}

/// Parses a JSON number's text into nano-units, exactly, or says why not.
pub fn parse_nanos(text: &str) -> Result<i128, &'static str> {
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let (mantissa, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
        Some(p) => {
            let exp = std::str::from_utf8(&rest[p + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok());
            (&rest[..p], exp.ok_or("invalid exponent")?)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(p) => (&mantissa[..p], &mantissa[p + 1..]),
        None => (mantissa, &[][..]),
    };
    if int_part.is_empty() || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
        return Err("value must be a number");
    }
    // digits × 10^(exponent − fraction length) is the value; scale it to nano-units.
    let digits = int_part.iter().chain(frac_part);
    let shift = i64::from(exponent) - frac_part.len() as i64 + i64::from(SCALE_DIGITS);
    let mut n: i128 = 0;
    let mut significant = 0usize;
    for &d in digits {
        n = n * 10 + i128::from(d - b'0');
        if n != 0 {
            significant += 1;
        }
        if significant > 30 {
            return Err("value is too large");
        }
    }
    let nanos = if shift >= 0 {
        if shift > 30 {
            if n == 0 {
                0
            } else {
                return Err("value is too large");
            }
        } else {
            n.checked_mul(10i128.pow(shift as u32))
                .ok_or("value is too large")?
        }
    } else {
        let div = 10i128
            .checked_pow((-shift) as u32)
            .ok_or("value has more than 9 decimal places")?;
        if n % div != 0 {
            return Err("value has more than 9 decimal places");
        }
        n / div
    };
    if nanos > MAX_UNITS * SCALE {
        return Err("value is too large");
    }
    Ok(if negative { -nanos } else { nanos })
}

/// Writes nano-units as a plain decimal (no exponent, no trailing zeros).
pub fn format_nanos(nanos: i128, out: &mut String) {
    use std::fmt::Write;
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let whole = abs / SCALE as u128;
    let frac = abs % SCALE as u128;
    let _ = write!(out, "{sign}{whole}");
    if frac != 0 {
        let digits = format!("{frac:09}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_is_the_exact_quotient_rounded_once() {
        let avg = |sum_nanos: i128, total: u64| {
            Stats {
                total,
                unique_users: 0,
                sum_nanos,
            }
            .average()
        };
        assert_eq!(avg(0, 0), 0.0);
        assert_eq!(avg(10_500_000_000, 1), 10.5);
        assert_eq!(avg(-3_000_000_000, 2), -1.5);
        // Division is correctly rounded in f64, so these are the nearest f64s.
        assert_eq!(avg(1_000_000_000, 3), 1.0 / 3.0);
        assert_eq!(avg(-2_000_000_000, 7), -2.0 / 7.0);
        // 0.1 + 0.2 as events: exactly 0.15 on average, not 0.15000000000000002.
        assert_eq!(avg(300_000_000, 2), 0.15);
        // Far past f64's integers: still the nearest f64 to the true quotient.
        let big = 999_999_999_999_999_999_i128 * SCALE;
        assert_eq!(avg(big * 3, 3), 999_999_999_999_999_999.0);
    }

    fn fmt(n: i128) -> String {
        let mut s = String::new();
        format_nanos(n, &mut s);
        s
    }

    #[test]
    fn decimal_text_becomes_exact_nano_units() {
        assert_eq!(parse_nanos("0"), Ok(0));
        assert_eq!(parse_nanos("42"), Ok(42 * SCALE));
        assert_eq!(parse_nanos("-0.1"), Ok(-100_000_000));
        assert_eq!(parse_nanos("1.5e2"), Ok(150 * SCALE));
        assert_eq!(parse_nanos("25E-3"), Ok(25_000_000));
        assert_eq!(parse_nanos("0.000000001"), Ok(1));
        assert_eq!(parse_nanos("1e-9"), Ok(1));
        assert!(parse_nanos("0.0000000001").is_err());
        assert!(parse_nanos("1e19").is_err());
        assert!(parse_nanos("1e400").is_err());
        assert_eq!(parse_nanos("0e400"), Ok(0));
        assert!(parse_nanos("abc").is_err());
    }

    #[test]
    fn tenths_add_up_exactly() {
        // 0.1 added ten million times is exactly 1,000,000, unlike in f64.
        let e = Events::default();
        for i in 0..10_000 {
            e.record(&format!("u{}", i % 7), parse_nanos("0.1").expect("valid"));
        }
        let st = e.stats();
        assert_eq!(fmt(st.sum_nanos), "1000");
        assert_eq!(st.total, 10_000);
        assert_eq!(st.unique_users, 7);
        assert_eq!(fmt(-1_500_000_000), "-1.5");
        assert_eq!(fmt(0), "0");
    }

    #[test]
    fn every_event_is_in_exactly_one_delta() {
        let e = Events::new(true);
        e.record("a", 1_000_000_000);
        e.record("b", 2);
        e.record("a", 3);
        let first = e.take_delta();
        assert_eq!(
            (first.count, first.sum_nanos, first.users.len()),
            (3, 1_000_000_005, 2)
        );
        e.record("a", 4);
        e.record("c", 5);
        let second = e.take_delta();
        assert_eq!((second.count, second.sum_nanos), (2, 9));
        assert_eq!(second.users, vec![Box::<str>::from("c")]);
        e.restore(second.clone());
        assert_eq!(e.take_delta(), second);
        assert!(e.take_delta().is_empty());
        // Not shared: nothing is kept.
        let local = Events::default();
        local.record("a", 1);
        assert!(local.take_delta().is_empty());
    }
}
