//! Cached reads of this API: a sample and the listing pages come from memory
//! with an ETag (304 on If-None-Match), and every write that changes them, in
//! this process or another one on the same database, invalidates them.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The MD5 of tests/fixtures/example.png.
const PNG_MD5: &str = "a84c28046b82d832d9d7dac7e740bc65";

fn create(api: &Api, token: &str, md5: &str) -> i64 {
    let mut v: serde_json::Value = serde_json::from_str(&fixture_body()).unwrap();
    v["img_md5"] = serde_json::json!(md5);
    let r = api.post("/api/sample", Some(token), &v);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().unwrap()
}

fn get(addr: SocketAddr, path: &str, token: &str, headers: &str) -> Response {
    get_with(addr, path, &format!("Authorization: Bearer {token}\r\n{headers}"))
}

fn reads_figures(api: &Api, key: &str) -> serde_json::Value {
    let caches = api.get("/admin/api/caches", Some(key)).json();
    caches
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "reads")
        .unwrap()
        .clone()
}

#[test]
fn reads_come_from_the_cache_with_an_etag_until_a_write_changes_them() {
    let db = TestDb::new("reads_local");
    let server = Server::start(&db.url, &["2", "--create-admin", "root"]);
    let key = admin_key(&server);
    let api = Api::new(server.addr);
    let token = api.user("reader");
    let id = create(&api, &token, PNG_MD5);
    let path = format!("/api/sample/{id}");

    let first = get(server.addr, &path, &token, "");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("private, no-cache"));
    let etag = first.header("etag").unwrap().to_string();
    assert_eq!(first.json()["image_present"], false);
    let again = get(server.addr, &path, &token, "");
    assert_eq!(
        (again.body.clone(), again.header("etag")),
        (first.body.clone(), Some(etag.as_str()))
    );
    assert_eq!(reads_figures(&api, &key)["hits"], 1);
    let not_modified = get(server.addr, &path, &token, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    // Still authenticated: the cache answers only who may read.
    assert_eq!(get(server.addr, &path, "nobody", "").status, 401);

    // The page, cached, then stale once a sample is inserted.
    let page = get(server.addr, "/api/samples?limit=10", &token, "");
    assert_eq!(page.json()["samples"].as_array().unwrap().len(), 1);
    let second = create(&api, &token, &format!("{:032x}", 7));
    let page = get(server.addr, "/api/samples?limit=10", &token, "");
    let ids: Vec<i64> = page.json()["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id, second]);

    // Uploading the image the sample names changes image_present: a new ETag.
    assert_eq!(upload(server.addr, &token, "image/png", &png()).status, 201);
    let changed = get(server.addr, &path, &token, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["image_present"], true);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

#[test]
fn another_instances_writes_invalidate_this_ones_cache() {
    let db = TestDb::new("reads_cluster");
    let writer = Server::start(&db.url, &["1"]);
    let reader = Server::start(&db.url, &["1"]);
    let token = Api::new(writer.addr).user("writer");
    let id = create(&Api::new(writer.addr), &token, PNG_MD5);
    let path = format!("/api/sample/{id}");
    let count = |addr| {
        get(addr, "/api/samples", &token, "").json()["samples"]
            .as_array()
            .unwrap()
            .len()
    };
    // Cached on the reader: one sample, image absent.
    assert_eq!(count(reader.addr), 1);
    assert_eq!(get(reader.addr, &path, &token, "").json()["image_present"], false);

    create(&Api::new(writer.addr), &token, &format!("{:032x}", 9));
    let started = Instant::now();
    assert!(eventually(Duration::from_secs(1), || count(reader.addr) == 2));
    let page_delay = started.elapsed();

    assert_eq!(upload(writer.addr, &token, "image/png", &png()).status, 201);
    let started = Instant::now();
    assert!(eventually(Duration::from_secs(1), || {
        get(reader.addr, &path, &token, "").json()["image_present"] == true
    }));
    eprintln!(
        "another instance saw the new sample after {page_delay:?} and the new image after {:?}",
        started.elapsed()
    );
}
