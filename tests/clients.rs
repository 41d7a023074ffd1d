//! load-client and latency-client against the real server: a short run of each,
//! the 1mrc and counter scenarios verified, and a fake server with wrong answers
//! that the load client must catch.

// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};

/// A client binary of the workspace, next to the server binary.
fn client(name: &str) -> Command {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_server")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `make test` (cargo test --workspace)",
        path.display()
    );
    Command::new(path)
}

fn run(name: &str, server: &Server, args: &[&str]) -> Output {
    let target = format!("http://{}", server.addr);
    let out = client(name)
        .args(args)
        .args(["--target", &target])
        .output()
        .unwrap();
    eprintln!(
        "{name} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn load_client_runs_the_c_mix_and_writes_json() {
    let db = TestDb::new("loadmix");
    let server = Server::start(&db.url, &["2"]);
    let json = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("load-{}.json", std::process::id()));
    let out = run(
        "load-client",
        &server,
        &["2", "4", "--requests", "300", "--json", json.to_str().unwrap()],
    );
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["completed"], 300);
    assert_eq!(doc["errors"], 0);
    for kind in ["create", "login", "sample"] {
        assert!(doc["kinds"][kind]["ok"].as_u64().unwrap() > 0, "{kind}");
        assert!(doc["kinds"][kind]["latency"]["p99_ms"].as_f64().is_some());
    }
    let users: i64 = db
        .client()
        .query_one("SELECT count(*) FROM users", &[])
        .unwrap()
        .get(0);
    assert!(users > 8, "creates were counted but not made");
    let _ = std::fs::remove_file(json);

    // Every other kind, pipelined, at a fixed rate.
    let out = run(
        "load-client",
        &server,
        &[
            "1",
            "4",
            "--mix",
            "file,event,counter,health,get-sample",
            "--requests",
            "200",
            "--pipeline",
            "4",
            "--rate",
            "2000",
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("open model"));
}

#[test]
fn scenarios_verify_server_state_exactly() {
    let db = TestDb::new("scenarios");
    let server = Server::start(&db.url, &["4"]);
    let out = run(
        "load-client",
        &server,
        &[
            "2",
            "8",
            "--scenario",
            "1mrc",
            "--requests",
            "20000",
            "--users",
            "7500",
            "--pipeline",
            "8",
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("server state verified exactly"));
    // The same scenario again cannot be verified on a server that already has events.
    let again = run(
        "load-client",
        &server,
        &["1", "2", "--scenario", "1mrc", "--requests", "100"],
    );
    assert_eq!(again.status.code(), Some(1));

    let out = run(
        "load-client",
        &server,
        &["2", "8", "--scenario", "counter", "--requests", "2000"],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("server state verified exactly"));
}

#[test]
fn load_client_catches_a_server_that_answers_wrongly() {
    // Answers 200 to everything, with a body no endpoint would send.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let requests = buf[..n].windows(4).filter(|w| w == b"\r\n\r\n").count();
                    for _ in 0..requests {
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    let out = client("load-client")
        .args([
            "1",
            "2",
            "--requests",
            "50",
            "--mix",
            "health,counter",
            "--target",
            &format!("http://{addr}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(1), "wrong answers must fail the run");
    assert!(
        text.contains("unexpected body") || text.contains("no value in body"),
        "{text}"
    );
}

#[test]
fn latency_client_checks_every_case() {
    let db = TestDb::new("latency");
    let server = Server::start(&db.url, &["2"]);
    let out = run("latency-client", &server, &["50", "--interval", "1ms"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("50 requests, 0 wrong"), "{text}");
    for case in [
        "smuggling-cl-te",
        "pipelined-pair",
        "revoked-token",
        "oversized-header",
        "split-across-writes",
    ] {
        assert!(text.contains(case), "{case} missing");
    }
}
