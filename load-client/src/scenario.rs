//! Set-up before a run (users, tokens, samples) and the checks of server state
//! after one: the 1mrc scenario's exact /stats and the counter scenario's distinct,
//! gap-free values.

use crate::http::{self, Target};
use crate::mix::{hex, sample_body, Fixture, PASSWORD};
use std::collections::HashSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One JSON request on a fresh connection; the body parsed as JSON (null if not).
pub fn call(
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, serde_json::Value), String> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let mut raw = Vec::new();
    http::encode(&mut raw, method, path, &target.host, &headers, body.as_bytes());
    let (status, body) = http::roundtrip(target, &raw, TIMEOUT)?;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

/// Creates `users` accounts (with a sample each when `samples`) for this run.
pub fn setup(target: &Target, run: &str, users: usize, samples: bool) -> Result<Fixture, String> {
    let mut fx = Fixture {
        run: run.to_string(),
        ..Fixture::default()
    };
    for i in 0..users {
        let name = format!("lcu{run}x{i}");
        let body = format!(r#"{{"username":"{name}","password":"{PASSWORD}","email":"{name}@example.org"}}"#);
        let (status, json) = call(target, "POST", "/auth/create", None, &body)?;
        let key = json["api_key"].as_str().filter(|_| status == 201);
        let key = key.ok_or_else(|| format!("set-up: creating user {name} got {status}"))?;
        fx.tokens.push(key.to_string());
        fx.users.push((name.clone(), PASSWORD.to_string()));
        if samples {
            let md5 = hex(&md5::Md5::digest(format!("setup-{run}-{i}").as_bytes()));
            let (status, json) = call(target, "POST", "/api/sample", Some(key), &sample_body(&md5))?;
            let id = json["id"].as_i64().filter(|_| status == 201);
            fx.sample_ids
                .push(id.ok_or_else(|| format!("set-up: creating a sample got {status}"))?);
        }
    }
    Ok(fx)
}

use md5::Digest;

/// /stats as the server reports it, with `sum` kept as its exact text.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStats {
    pub total: u64,
    pub unique_users: u64,
    pub sum: String,
    pub avg: f64,
}

pub fn stats(target: &Target) -> Result<ServerStats, String> {
    let mut raw = Vec::new();
    http::encode(&mut raw, "GET", "/stats", &target.host, &[], b"");
    let (status, body) = http::roundtrip(target, &raw, TIMEOUT)?;
    if status != 200 {
        return Err(format!("GET /stats answered {status}"));
    }
    let text = String::from_utf8_lossy(&body).to_string();
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| "GET /stats: not JSON".to_string())?;
    // The sum is compared as text: a JSON parser would round it to an f64.
    let sum = text
        .split("\"sum\":")
        .nth(1)
        .map(|s| s.split([',', '}']).next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    Ok(ServerStats {
        total: v["totalRequests"].as_u64().ok_or("no totalRequests")?,
        unique_users: v["uniqueUsers"].as_u64().ok_or("no uniqueUsers")?,
        sum,
        avg: v["avg"].as_f64().ok_or("no avg")?,
    })
}

/// What /stats must say after `n` 1mrc events (user_{i % users}, value i % 1000)
/// on a server that had seen none.
pub fn expected_1mrc(n: u64, users: u64) -> ServerStats {
    let sum = (n / 1000) * 499_500 + (0..n % 1000).sum::<u64>();
    ServerStats {
        total: n,
        unique_users: n.min(users),
        sum: sum.to_string(),
        avg: if n == 0 { 0.0 } else { sum as f64 / n as f64 },
    }
}

/// Compares /stats after a 1mrc run with the closed-form expectation. When the
/// server had events before (`before.total > 0`) only the differences in count
/// and sum can be checked, and that is reported as a failure to verify.
pub fn check_1mrc(before: &ServerStats, after: &ServerStats, n: u64, users: u64) -> Vec<String> {
    let want = expected_1mrc(n, users);
    let mut problems = Vec::new();
    if before.total != 0 {
        problems.push(format!(
            "the server already had {} events; 1mrc needs a fresh server to check uniqueUsers and avg exactly",
            before.total
        ));
        return problems;
    }
    if after.total != want.total {
        problems.push(format!(
            "totalRequests {} != expected {}",
            after.total, want.total
        ));
    }
    if after.unique_users != want.unique_users {
        problems.push(format!(
            "uniqueUsers {} != expected {}",
            after.unique_users, want.unique_users
        ));
    }
    if after.sum != want.sum {
        problems.push(format!("sum {} != expected {}", after.sum, want.sum));
    }
    if after.avg != want.avg {
        problems.push(format!("avg {} != expected {}", after.avg, want.avg));
    }
    problems
}

pub fn counter_value(target: &Target) -> Result<i64, String> {
    let mut raw = Vec::new();
    http::encode(&mut raw, "GET", "/api/v1/counter", &target.host, &[], b"");
    let (status, body) = http::roundtrip(target, &raw, TIMEOUT)?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    v["value"]
        .as_i64()
        .filter(|_| status == 200)
        .ok_or_else(|| format!("GET /api/v1/counter answered {status}"))
}

/// Every returned value distinct, and the counter moved by exactly the successes.
pub fn check_counter(start: i64, end: i64, values: &[i64]) -> Vec<String> {
    let mut problems = Vec::new();
    let distinct: HashSet<i64> = values.iter().copied().collect();
    if distinct.len() != values.len() {
        problems.push(format!(
            "{} duplicate counter values",
            values.len() - distinct.len()
        ));
    }
    if end != start + values.len() as i64 {
        problems.push(format!(
            "counter moved from {start} to {end}, but {} increments succeeded",
            values.len()
        ));
    }
    if let (Some(lo), Some(hi)) = (values.iter().min(), values.iter().max()) {
        if *lo <= start || *hi > end {
            problems.push(format!("values {lo}..={hi} outside ({start}, {end}]"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        let e = expected_1mrc(1_000_000, 75_000);
        assert_eq!(e.sum, "499500000");
        assert_eq!(e.avg, 499.5);
        assert_eq!(e.unique_users, 75_000);
        assert_eq!(
            expected_1mrc(1500, 75_000).sum,
            (0..1500u64).map(|i| i % 1000).sum::<u64>().to_string()
        );
    }

    #[test]
    fn counter_checks_catch_duplicates_and_drift() {
        assert!(check_counter(10, 13, &[11, 12, 13]).is_empty());
        assert!(!check_counter(10, 13, &[11, 11, 13]).is_empty());
        assert!(!check_counter(10, 14, &[11, 12, 13]).is_empty());
    }
}
