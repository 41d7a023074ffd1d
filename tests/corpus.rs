//! The malformed-request corpus (tests/corpus/*.http, made by generate.py there):
//! each file gets its documented status, and the connection closes when the name
//! says so; the same holds when the file is sent whole, one byte at a time, and
//! split in two at every offset. A canary request follows every file: it must be
//! answered after a request that keeps the connection, and never after one that
//! closes it (nothing after a refused request is processed).
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

const CANARY: &[u8] = b"GET /health HTTP/1.1\r\nX-Request-Id: canary\r\n\r\n";

struct Case {
    name: String,
    status: u16,
    close: bool,
    bytes: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.strip_suffix(".http")?.to_string();
            let mut parts = name.splitn(3, '-');
            let status = parts.next()?.parse().ok()?;
            let close = match parts.next()? {
                "close" => true,
                "open" => false,
                other => panic!("{name}: {other} is neither close nor open"),
            };
            let bytes = std::fs::read(&path).unwrap();
            Some(Case {
                name,
                status,
                close,
                bytes,
            })
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Sends `parts` (each its own write) then the canary, and checks the answers;
/// `how` names the split in a failure.
fn check(addr: std::net::SocketAddr, case: &Case, parts: &[&[u8]], how: &str) -> Result<(), String> {
    let mut s = connect(addr);
    for part in parts {
        // A close may come before everything is written; that is an answer too.
        if s.write_all(part).is_err() {
            break;
        }
    }
    let _ = s.write_all(CANARY);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let answers = Reader::new(s).until_close();
    let fail = |why: String| Err(format!("{} ({how}): {why}", case.name));
    let Some(first) = answers.first() else {
        return fail("no answer".into());
    };
    if first.status != case.status {
        return fail(format!(
            "status {} ({}), expected {}",
            first.status,
            first.text(),
            case.status
        ));
    }
    let canary = answers.iter().any(|r| r.header("x-request-id") == Some("canary"));
    match (case.close, canary) {
        (true, true) => fail("the canary after a closing answer was served".into()),
        (false, false) => fail(format!("the canary was not served ({} answers)", answers.len())),
        _ => Ok(()),
    }
}

/// The ways a case is sent: whole, a byte at a time, and in two at every offset
/// (for the long cases, at 64 offsets spread over it and all of the first and
/// last 32 bytes; a byte at a time only up to 4 KiB).
fn splits(bytes: &[u8]) -> Vec<(String, Vec<&[u8]>)> {
    let mut out = vec![("whole".to_string(), vec![bytes])];
    if bytes.len() <= 4096 {
        out.push(("byte by byte".into(), bytes.chunks(1).collect()));
    }
    let n = bytes.len();
    let offsets: Vec<usize> = if n <= 512 {
        (1..n).collect()
    } else {
        let mut o: Vec<usize> = (1..32)
            .chain(n - 32..n)
            .chain((1..64).map(|i| i * n / 64))
            .collect();
        o.sort_unstable();
        o.dedup();
        o
    };
    for at in offsets {
        out.push((format!("split at {at}"), vec![&bytes[..at], &bytes[at..]]));
    }
    out
}

#[test]
fn every_case_gets_its_answer_however_it_arrives() {
    let cases = corpus();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let db = TestDb::new("corpus");
    let server = Server::start(&db.url, &["2"]);
    let addr = server.addr;
    let failures = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    let sent = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(case) = cases.get(i) else { break };
                for (how, parts) in splits(&case.bytes) {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Err(e) = check(addr, case, &parts, &how) {
                        failures.lock().unwrap().push(e);
                        // One failure per case is enough to read.
                        break;
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "{} cases sent {} times in all (whole, byte by byte, split)",
        cases.len(),
        sent.into_inner()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
