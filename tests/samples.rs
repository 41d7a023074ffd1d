//! Sample inserts are group-committed: concurrent requests share multi-row
//! INSERTs, yet each is answered with its own id or its own 409, and nothing that
//! was acknowledged is lost when PostgreSQL restarts under the load.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// The C example body with its `img_md5` replaced.
fn body_with_md5(md5: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&fixture_body()).unwrap();
    v["img_md5"] = serde_json::json!(md5);
    v.to_string()
}

fn md5_of(n: usize) -> String {
    format!("{n:032x}")
}

/// Posts the samples `md5s` over one keep-alive connection, pipelined 8 at a time;
/// returns (md5, status, id) per answer, stopping early if the server closes.
fn post_samples(addr: SocketAddr, token: &str, md5s: &[String]) -> Vec<(String, u16, Option<i64>)> {
    let mut r = Reader::new(connect(addr));
    let mut out = Vec::new();
    for chunk in md5s.chunks(8) {
        let mut raw = String::new();
        for md5 in chunk {
            let body = body_with_md5(md5);
            raw.push_str(&format!(
                "POST /api/sample HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        if r.stream.write_all(raw.as_bytes()).is_err() {
            return out;
        }
        for md5 in chunk {
            match r.next(false) {
                Some(resp) => {
                    let id = (resp.status == 201).then(|| resp.json()["id"].as_i64().unwrap());
                    out.push((md5.clone(), resp.status, id));
                }
                None => return out,
            }
        }
    }
    out
}

#[test]
fn concurrent_duplicates_get_one_201_and_409s_in_shared_batches() {
    let db = TestDb::new("samplebatch");
    let server = Server::start(&db.url, &["4"]);
    let token = Api::new(server.addr).user("sampler");
    // Eight clients post the same 60 md5s, each in its own order: every md5 is
    // inserted exactly once, by exactly one of the requests that carried it.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let token = token.clone();
            let addr = server.addr;
            std::thread::spawn(move || {
                let md5s: Vec<String> = (0..60).map(|i| md5_of((i * 7 + t * 13) % 60)).collect();
                post_samples(addr, &token, &md5s)
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(answers.len(), 480);
    let mut created: HashMap<String, i64> = HashMap::new();
    for (md5, status, id) in &answers {
        match status {
            201 => assert!(
                created.insert(md5.clone(), id.unwrap()).is_none(),
                "{md5} created twice"
            ),
            409 => {}
            other => panic!("unexpected status {other} for {md5}"),
        }
    }
    assert_eq!(created.len(), 60, "every md5 created once");
    let ids: HashSet<i64> = created.values().copied().collect();
    assert_eq!(ids.len(), 60, "ids are distinct");
    // Each id answered is the row of its own md5.
    let mut c = db.client();
    for (md5, id) in &created {
        let stored: Vec<u8> = c
            .query_one("SELECT image_md5 FROM samples WHERE id = $1", &[id])
            .unwrap()
            .get(0);
        let hex: String = stored.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex, md5, "id {id} answered for another sample");
    }
    let rows: i64 = c.query_one("SELECT count(*) FROM samples", &[]).unwrap().get(0);
    assert_eq!(rows, 60);
    // Validation still answers each request alone, before any batch.
    let bad = Api::new(server.addr).call("POST", "/api/sample", Some(&token), Some(r#"{"img_md5":"x"}"#));
    assert_eq!(bad.status, 400, "{}", bad.text());
}

#[test]
fn a_database_restart_mid_run_loses_no_acknowledged_sample() {
    let cluster = Cluster::new("sampledb");
    let url = cluster.start();
    let server = Server::start(&url, &["4", "--db-timeout", "1s"]);
    let addr = server.addr;
    let token = Api::new(addr).user("durable");
    let next = Arc::new(AtomicUsize::new(0));
    let answers = restart_under_load(&cluster, 6, move || {
        let md5s: Vec<String> = (0..8).map(|_| md5_of(next.fetch_add(1, Relaxed) + 1)).collect();
        let got = post_samples(addr, &token, &md5s);
        let ok = got.iter().filter(|a| a.1 == 201).count();
        let unavailable = got.iter().filter(|a| a.1 == 503).count();
        (ok, unavailable, got)
    });
    let mut acknowledged = Vec::new();
    for (md5, status, id) in answers {
        match status {
            201 => acknowledged.push((md5, id.unwrap())),
            503 => {}
            other => panic!("unexpected status {other} for {md5}"),
        }
    }
    // Every acknowledged sample is in the database, under the id it was given.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows = c.query("SELECT id, image_md5 FROM samples", &[]).unwrap();
    let stored: HashMap<i64, String> = rows
        .iter()
        .map(|r| {
            let md5: Vec<u8> = r.get(1);
            (
                r.get::<_, i64>(0),
                md5.iter().map(|b| format!("{b:02x}")).collect(),
            )
        })
        .collect();
    for (md5, id) in &acknowledged {
        assert_eq!(stored.get(id), Some(md5), "acknowledged sample {id} ({md5}) lost");
    }
    eprintln!(
        "{} samples acknowledged across the restart, {} stored",
        acknowledged.len(),
        stored.len()
    );
}
