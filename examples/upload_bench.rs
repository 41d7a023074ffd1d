//! Upload throughput: CLIENTS keep-alive connections each POST /api/file bodies of
//! SIZE bytes (unique content: the first bytes carry a counter) for SECONDS, and
//! report uploads/s and MB/s of bodies answered 201.
//!
//!     cargo run --release --example upload_bench -- ADDR TOKEN SIZE CLIENTS SECONDS

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: upload_bench ADDR TOKEN SIZE CLIENTS SECONDS");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let token = args[2].clone();
    let size: usize = args[3].parse().expect("SIZE");
    let clients: usize = args[4].parse().expect("CLIENTS");
    let secs: u64 = args[5].parse().expect("SECONDS");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (addr, token) = (addr.clone(), token.clone());
            std::thread::spawn(move || run(&addr, &token, size, t, deadline))
        })
        .collect();
    let (mut ok, mut bad) = (0u64, 0u64);
    for t in threads {
        let (o, b) = t.join().expect("client thread");
        ok += o;
        bad += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{:.1} uploads/s {:.1} MB/s ({} ok, {} failed, {} clients, {} bytes each)",
        ok as f64 / elapsed,
        ok as f64 * size as f64 / elapsed / 1e6,
        ok,
        bad,
        clients,
        size
    );
    if bad > 0 {
        std::process::exit(1);
    }
}

fn run(addr: &str, token: &str, size: usize, thread: usize, deadline: Instant) -> (u64, u64) {
    let mut body: Vec<u8> = (0..size).map(|i| (i * 31 + thread * 7) as u8).collect();
    let head = format!(
        "POST /api/file HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let (mut ok, mut bad) = (0, 0);
    let mut n: u64 = 0;
    let mut resp = vec![0u8; 4096];
    while Instant::now() < deadline {
        n += 1;
        // Unique content per upload: thread, counter and a per-run nonce up front.
        let tag = format!("{thread:04}-{n:012}-{nonce:032}");
        let k = tag.len().min(size);
        body[..k].copy_from_slice(&tag.as_bytes()[..k]);
        s.write_all(head.as_bytes()).expect("write head");
        s.write_all(&body).expect("write body");
        let mut got = 0;
        let status = loop {
            let r = s.read(&mut resp[got..]).expect("read");
            assert!(r > 0, "server closed");
            got += r;
            if let Some(end) = resp[..got].windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&resp[..end]).to_string();
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while got < end + 4 + len {
                    got += s.read(&mut resp[got..]).expect("read body");
                }
                break text.split(' ').nth(1).unwrap_or("0").to_string();
            }
        };
        if status == "201" {
            ok += 1;
        } else {
            bad += 1;
        }
    }
    (ok, bad)
}
