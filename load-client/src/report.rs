//! Latency histograms and counts per request kind, merged across threads, rendered
//! as a table and as JSON. Percentiles always, never only a mean.

use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency recorded, in microseconds (60 s); slower answers saturate here.
const MAX_MICROS: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Counts and latencies of one request kind (or one latency-client case).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of every answer, refused ones included.
    pub hist: Histogram<u64>,
    /// Latency of the accepted (validated) answers only: under load shedding the
    /// refusals are fast, and this is what the served clients saw.
    pub ok_hist: Histogram<u64>,
    /// The accepted answers' latency from when the request was actually written,
    /// not from its intended time: without the wait for a free socket or for the
    /// client's own CPU (the open model's schedule lag), so what is left is the
    /// server's (and the network's) part. The same as `ok_hist` in the closed model.
    pub ok_sent_hist: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hist: new_histogram(),
            ok_hist: new_histogram(),
            ok_sent_hist: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    pub fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        self.record_sent(latency, latency, outcome);
    }

    /// Records an answer `latency` after its intended time and `since_sent` after
    /// it was written.
    pub fn record_sent(&mut self, latency: Duration, since_sent: Duration, outcome: Result<(), String>) {
        let micros = |d: Duration| (d.as_micros() as u64).clamp(1, MAX_MICROS);
        let us = micros(latency);
        let _ = self.hist.record(us);
        match outcome {
            Ok(()) => {
                self.ok += 1;
                let _ = self.ok_hist.record(us);
                let _ = self.ok_sent_hist.record(micros(since_sent));
            }
            Err(reason) => *self.errors.entry(reason).or_default() += 1,
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn count(&self) -> u64 {
        self.ok + self.error_count()
    }

    pub fn merge(&mut self, other: &Stats) {
        let _ = self.hist.add(&other.hist);
        let _ = self.ok_hist.add(&other.ok_hist);
        let _ = self.ok_sent_hist.add(&other.ok_sent_hist);
        self.ok += other.ok;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn percentiles_json(&self) -> serde_json::Value {
        json!({
            "p50_ms": self.ms(0.50), "p90_ms": self.ms(0.90), "p99_ms": self.ms(0.99),
            "p999_ms": self.ms(0.999), "max_ms": self.hist.max() as f64 / 1000.0,
            "mean_ms": self.hist.mean() / 1000.0,
        })
    }
}

/// A markdown table: one row per label, then a total row.
pub fn table(rows: &BTreeMap<String, Stats>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut out = String::from(
        "| kind | count | ok | errors | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut total = Stats::default();
    for (name, s) in rows {
        total.merge(s);
        out.push_str(&row(name, s, secs));
    }
    if rows.len() > 1 {
        out.push_str(&row("**total**", &total, secs));
    }
    for (name, s) in rows {
        for (reason, n) in &s.errors {
            out.push_str(&format!("\n{name}: {n} × {reason}"));
        }
    }
    out
}

fn row(name: &str, s: &Stats, secs: f64) -> String {
    format!(
        "| {name} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
        s.count(),
        s.ok,
        s.error_count(),
        s.count() as f64 / secs,
        s.ms(0.50),
        s.ms(0.90),
        s.ms(0.99),
        s.ms(0.999),
        s.hist.max() as f64 / 1000.0
    )
}

/// JSON for a set of rows.
pub fn rows_json(rows: &BTreeMap<String, Stats>, elapsed: Duration) -> serde_json::Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut m = serde_json::Map::new();
    for (name, s) in rows {
        m.insert(
            name.clone(),
            json!({
                "count": s.count(), "ok": s.ok, "errors": s.errors, "rate": s.count() as f64 / secs,
                "latency": s.percentiles_json(),
                "ok_p99_ms": s.ok_hist.value_at_quantile(0.99) as f64 / 1000.0,
                "ok_sent_p99_ms": s.ok_sent_hist.value_at_quantile(0.99) as f64 / 1000.0,
            }),
        );
    }
    serde_json::Value::Object(m)
}

/// Prints the table and writes the JSON document where `--json` says: a file (table
/// on stdout), `-` (JSON on stdout, table on stderr), or nowhere.
pub fn emit(text: &str, doc: &serde_json::Value, json: Option<&str>) -> Result<(), String> {
    match json {
        Some("-") => {
            eprintln!("{text}");
            println!("{doc:#}");
        }
        Some(path) => {
            std::fs::write(path, format!("{doc:#}\n")).map_err(|e| format!("writing {path}: {e}"))?;
            println!("{text}");
        }
        None => println!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_and_render() {
        let mut a = Stats::default();
        a.record(Duration::from_millis(2), Ok(()));
        let mut b = Stats::default();
        b.record(Duration::from_millis(4), Err("status 500, expected 200".into()));
        a.merge(&b);
        assert_eq!((a.count(), a.ok, a.error_count()), (2, 1, 1));
        let mut rows = BTreeMap::new();
        rows.insert("health".to_string(), a);
        let t = table(&rows, Duration::from_secs(1));
        assert!(t.contains("| health | 2 | 1 | 1 |"), "{t}");
        assert!(t.contains("1 × status 500"));
    }

    #[test]
    fn the_lag_before_sending_is_kept_apart() {
        let mut s = Stats::default();
        // Due 30 ms before it went out, answered 2 ms after.
        s.record_sent(Duration::from_millis(32), Duration::from_millis(2), Ok(()));
        s.record_sent(
            Duration::from_millis(50),
            Duration::from_millis(1),
            Err("status 503".into()),
        );
        let mut rows = BTreeMap::new();
        rows.insert("get".to_string(), s);
        let j = rows_json(&rows, Duration::from_secs(1));
        let ms = |key: &str| j["get"][key].as_f64().unwrap_or(f64::NAN);
        assert!((ms("ok_p99_ms") - 32.0).abs() < 0.1, "{j}");
        assert!(
            (ms("ok_sent_p99_ms") - 2.0).abs() < 0.01,
            "only accepted answers: {j}"
        );
    }
}
