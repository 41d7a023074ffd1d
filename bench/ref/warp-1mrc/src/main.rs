// Reference only (git-ignored, never shipped): the 1MRC shape of the official Rust
// service -- warp on a current-thread tokio runtime, a DashSet of user ids, atomic
// count and a u64 micro-unit sum.
use dashmap::DashSet;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use warp::Filter;

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "userId")]
    user_id: String,
    value: f64,
}

struct St {
    total: AtomicU64,
    sum_micros: AtomicU64,
    users: DashSet<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(18090);
    let st = Arc::new(St { total: AtomicU64::new(0), sum_micros: AtomicU64::new(0), users: DashSet::new() });
    let s1 = st.clone();
    let post = warp::post().and(warp::path("event")).and(warp::body::json()).map(move |e: Event| {
        s1.total.fetch_add(1, Relaxed);
        s1.sum_micros.fetch_add((e.value * 1e6) as u64, Relaxed);
        s1.users.insert(e.user_id);
        warp::reply()
    });
    let s2 = st.clone();
    let stats = warp::get().and(warp::path("stats")).map(move || {
        let t = s2.total.load(Relaxed);
        let sum = s2.sum_micros.load(Relaxed) as f64 / 1e6;
        warp::reply::json(&serde_json::json!({"totalRequests": t, "uniqueUsers": s2.users.len(), "sum": sum, "avg": if t > 0 { sum / t as f64 } else { 0.0 }}))
    });
    warp::serve(post.or(stats)).run(([127, 0, 0, 1], port)).await;
}
