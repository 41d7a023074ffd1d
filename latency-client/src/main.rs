//! `latency-client [COUNT]`: every `--interval` sends one request drawn from a
//! catalogue of valid and invalid cases, checks each answer's status against what
//! that case must get, and reports latency per case. Exits non-zero on any wrong
//! answer or a hang past the timeout. Meant to run beside load-client to show
//! latency under load. Latency counts from when a request was due on the schedule,
//! so a slow answer that delays later requests shows in their latency too.

use clap::Parser;
use loadclient::http::{self, Target};
use loadclient::mix::{hex, sample_body, PASSWORD};
use loadclient::report::{self, Stats};
use loadclient::{parse_duration, scenario, Rng};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "latency-client",
    version,
    about = "Latency and edge-case tester for crudrs"
)]
struct Args {
    /// Requests to send.
    #[arg(default_value_t = 100)]
    count: u64,
    /// Time between requests.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Write the results as JSON to this file ("-" for stdout).
    #[arg(long)]
    json: Option<String>,
    /// How long an answer may take before the case counts as failed.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Data the cases need, made in set-up.
struct Ctx {
    host: String,
    token: String,
    revoked: String,
    sample_id: i64,
    run: String,
    n: u64,
}

/// The byte chunks to send (written with a short pause between them) and the
/// statuses that must come back, in order.
type Exchange = (Vec<Vec<u8>>, Vec<u16>);

/// One case of the catalogue.
struct Case {
    name: &'static str,
    build: fn(&mut Ctx) -> Exchange,
}

fn req(ctx: &Ctx, method: &str, path: &str, auth: Option<&str>, ct: Option<&str>, body: &[u8]) -> Vec<u8> {
    let a = auth.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &a {
        h.push(("Authorization", a));
    }
    if let Some(ct) = ct {
        h.push(("Content-Type", ct));
    }
    let mut out = Vec::new();
    http::encode(&mut out, method, path, &ctx.host, &h, body);
    out
}

const JSON: Option<&str> = Some("application/json");

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "health",
            build: |c| (vec![req(c, "GET", "/health", None, None, b"")], vec![200]),
        },
        Case {
            name: "ready",
            build: |c| (vec![req(c, "GET", "/ready", None, None, b"")], vec![200]),
        },
        Case {
            name: "create",
            build: |c| {
                c.n += 1;
                let name = format!("lat{}x{}", c.run, c.n);
                let body = format!(
                    r#"{{"username":"{name}","password":"{PASSWORD}","email":"{name}@example.org"}}"#
                );
                (
                    vec![req(c, "POST", "/auth/create", None, JSON, body.as_bytes())],
                    vec![201],
                )
            },
        },
        Case {
            name: "login",
            build: |c| {
                let body = format!(r#"{{"username":"lat{}x0","password":"{PASSWORD}"}}"#, c.run);
                (
                    vec![req(c, "POST", "/auth/login", None, JSON, body.as_bytes())],
                    vec![200],
                )
            },
        },
        Case {
            name: "sample",
            build: |c| {
                c.n += 1;
                let md5 = hex(&<md5_hash::Md5 as md5_hash::Digest>::digest(
                    format!("lat-{}-{}", c.run, c.n).as_bytes(),
                ));
                (
                    vec![req(
                        c,
                        "POST",
                        "/api/sample",
                        Some(&c.token),
                        JSON,
                        sample_body(&md5).as_bytes(),
                    )],
                    vec![201],
                )
            },
        },
        Case {
            name: "get-sample",
            build: |c| {
                (
                    vec![req(
                        c,
                        "GET",
                        &format!("/api/sample/{}", c.sample_id),
                        Some(&c.token),
                        None,
                        b"",
                    )],
                    vec![200],
                )
            },
        },
        Case {
            name: "list-samples",
            build: |c| {
                (
                    vec![req(c, "GET", "/api/samples?limit=5", Some(&c.token), None, b"")],
                    vec![200],
                )
            },
        },
        Case {
            name: "counter",
            build: |c| {
                (
                    vec![req(c, "POST", "/api/v1/counter", None, None, b"")],
                    vec![200],
                )
            },
        },
        Case {
            name: "event",
            build: |c| {
                (
                    vec![req(
                        c,
                        "POST",
                        "/event",
                        None,
                        JSON,
                        br#"{"userId":"latency","value":1}"#,
                    )],
                    vec![200],
                )
            },
        },
        Case {
            name: "stats",
            build: |c| (vec![req(c, "GET", "/stats", None, None, b"")], vec![200]),
        },
        Case {
            name: "malformed-request-line",
            build: |_| (vec![b"GET /health HTTP/1.1 x\r\n\r\n".to_vec()], vec![400]),
        },
        Case {
            name: "bare-cr",
            build: |_| (vec![b"GET /health HTTP/1.1\rHost: x\r\n\r\n".to_vec()], vec![400]),
        },
        Case {
            name: "bad-json",
            build: |c| {
                (
                    vec![req(c, "POST", "/auth/login", None, JSON, b"{\"username\":")],
                    vec![400],
                )
            },
        },
        Case {
            name: "wrong-types",
            build: |c| {
                (
                    vec![req(
                        c,
                        "POST",
                        "/api/sample",
                        Some(&c.token),
                        JSON,
                        br#"{"img_md5":5,"latitude":"x"}"#,
                    )],
                    vec![400],
                )
            },
        },
        Case {
            name: "wrong-content-type",
            build: |c| {
                (
                    vec![req(c, "POST", "/auth/login", None, Some("text/plain"), b"{}")],
                    vec![415],
                )
            },
        },
        Case {
            name: "missing-content-length",
            build: |c| {
                let raw = format!(
                    "POST /api/file HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\n\r\n",
                    c.host, c.token
                );
                (vec![raw.into_bytes()], vec![411])
            },
        },
        Case {
            name: "oversized-content-length",
            build: |c| {
                let raw = format!(
                    "POST /auth/login HTTP/1.1\r\nHost: {}\r\nContent-Length: 99999999\r\n\r\n",
                    c.host
                );
                (vec![raw.into_bytes()], vec![413])
            },
        },
        Case {
            name: "oversized-header",
            build: |_| {
                (
                    vec![
                        format!("GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n", "x".repeat(10_000)).into_bytes(),
                    ],
                    vec![431],
                )
            },
        },
        Case {
            name: "smuggling-cl-te",
            build: |_| {
                (vec![b"POST /event HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()], vec![400])
            },
        },
        Case {
            name: "bad-token",
            build: |c| {
                (
                    vec![req(c, "GET", "/api/samples", Some(&"0".repeat(64)), None, b"")],
                    vec![401],
                )
            },
        },
        Case {
            name: "revoked-token",
            build: |c| {
                (
                    vec![req(c, "GET", "/api/samples", Some(&c.revoked.clone()), None, b"")],
                    vec![401],
                )
            },
        },
        Case {
            name: "unknown-path",
            build: |c| (vec![req(c, "GET", "/no/such/path", None, None, b"")], vec![404]),
        },
        Case {
            name: "wrong-method",
            build: |c| (vec![req(c, "DELETE", "/health", None, None, b"")], vec![405]),
        },
        Case {
            name: "pipelined-pair",
            build: |c| {
                let mut both = req(c, "GET", "/health", None, None, b"");
                both.extend(req(c, "GET", "/missing", None, None, b""));
                (vec![both], vec![200, 404])
            },
        },
        Case {
            name: "split-across-writes",
            build: |c| {
                let r = req(
                    c,
                    "POST",
                    "/event",
                    None,
                    JSON,
                    br#"{"userId":"split","value":2}"#,
                );
                let (a, b) = r.split_at(r.len() / 2);
                (vec![a.to_vec(), b.to_vec()], vec![200])
            },
        },
    ]
}

mod md5_hash {
    pub use md5::{Digest, Md5};
}

/// Sends the chunks on a new connection and reads the expected number of answers.
fn exchange(
    target: &Target,
    chunks: &[Vec<u8>],
    answers: usize,
    timeout: Duration,
) -> Result<Vec<u16>, String> {
    let mut s = TcpStream::connect_timeout(&target.addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    for (i, c) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        s.write_all(c).map_err(|e| format!("write: {e}"))?;
    }
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    while got.len() < answers {
        match http::parse(&buf, false)? {
            Some(p) => {
                buf.drain(..p.len);
                got.push(p.status);
            }
            None => match std::io::Read::read(&mut s, &mut chunk) {
                Ok(0) => return Err(format!("closed after {} of {answers} answers", got.len())),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    return Err(match e.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout".into(),
                        k => format!("read: {k}"),
                    })
                }
            },
        }
    }
    Ok(got)
}

fn setup(target: &Target, run: &str) -> Result<Ctx, String> {
    let host = target.host.clone();
    let name = format!("lat{run}x0");
    let call = |method: &str, path: &str, token: Option<&str>, body: &str| {
        scenario::call(target, method, path, token, body)
    };
    let body = format!(r#"{{"username":"{name}","password":"{PASSWORD}","email":"{name}@example.org"}}"#);
    let (st, v) = call("POST", "/auth/create", None, &body)?;
    let token = v["api_key"]
        .as_str()
        .filter(|_| st == 201)
        .ok_or(format!("set-up: create answered {st}"))?
        .to_string();
    let (st, v) = call(
        "POST",
        "/auth/login",
        None,
        &format!(r#"{{"username":"{name}","password":"{PASSWORD}"}}"#),
    )?;
    let revoked = v["api_key"]
        .as_str()
        .filter(|_| st == 200)
        .ok_or(format!("set-up: login answered {st}"))?
        .to_string();
    let (st, _) = call("POST", "/auth/logout", Some(&revoked), "")?;
    if st != 204 {
        return Err(format!("set-up: logout answered {st}"));
    }
    let md5 = hex(&<md5_hash::Md5 as md5_hash::Digest>::digest(
        format!("lat-setup-{run}").as_bytes(),
    ));
    let (st, v) = call("POST", "/api/sample", Some(&token), &sample_body(&md5))?;
    let sample_id = v["id"]
        .as_i64()
        .filter(|_| st == 201)
        .ok_or(format!("set-up: sample answered {st}"))?;
    Ok(Ctx {
        host,
        token,
        revoked,
        sample_id,
        run: run.to_string(),
        n: 0,
    })
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("latency-client: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(a: &Args) -> Result<bool, String> {
    let target = Target::parse(&a.target)?;
    let run_tag = loadclient::run_tag(a.seed);
    let mut ctx = setup(&target, &run_tag)?;
    let catalogue = cases();
    let mut rng = Rng::new(a.seed);
    let mut rows: BTreeMap<String, Stats> = BTreeMap::new();
    let mut expected: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    let mut overall = Stats::default();
    let started = Instant::now();
    let mut next = Instant::now();
    for i in 0..a.count {
        // Every case at least once, in random order after that.
        let case = if (i as usize) < catalogue.len() {
            &catalogue[i as usize]
        } else {
            &catalogue[rng.below(catalogue.len() as u64) as usize]
        };
        let (chunks, want) = (case.build)(&mut ctx);
        // Latency counts from when the request was due, not from when it went out:
        // after a slow answer the next request leaves late, and timing it from its
        // actual send would hide that wait (coordinated omission).
        let t = Instant::now();
        let due = if a.interval.is_zero() { t } else { next.min(t) };
        let outcome = match exchange(&target, &chunks, want.len(), a.timeout) {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!("got {got:?}")),
            Err(e) => Err(e),
        };
        let latency = due.elapsed();
        overall.record(latency, outcome.clone().map(|_| ()));
        rows.entry(case.name.to_string())
            .or_default()
            .record(latency, outcome);
        expected.insert(case.name.to_string(), want);
        next += a.interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed();
    let failures: u64 = rows.values().map(Stats::error_count).sum();
    let mut text = String::from("| case | expected | count | wrong | p50 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|\n");
    for (name, s) in &rows {
        text.push_str(&format!(
            "| {name} | {:?} | {} | {} | {:.3} | {:.3} | {:.3} |\n",
            expected[name],
            s.count(),
            s.error_count(),
            s.hist.value_at_quantile(0.5) as f64 / 1000.0,
            s.hist.value_at_quantile(0.99) as f64 / 1000.0,
            s.hist.max() as f64 / 1000.0
        ));
    }
    for (name, s) in &rows {
        for (reason, n) in &s.errors {
            text.push_str(&format!(
                "\nWRONG: {name}: {n} × {reason} (expected {:?})",
                expected[name]
            ));
        }
    }
    text.push_str(&format!(
        "\n{} requests, {} wrong; mean latency {:.3} ms, p99 {:.3} ms",
        overall.count(),
        failures,
        overall.hist.mean() / 1000.0,
        overall.hist.value_at_quantile(0.99) as f64 / 1000.0
    ));
    let doc = serde_json::json!({
        "count": overall.count(), "wrong": failures, "elapsed_s": elapsed.as_secs_f64(),
        "overall": overall.percentiles_json(),
        "cases": report::rows_json(&rows, elapsed),
    });
    report::emit(&text, &doc, a.json.as_deref())?;
    Ok(failures == 0)
}
