//! The admin dashboard in a real browser: headless Chromium (Debian's, installed
//! by scripts/chromium.sh) driven by Selenium (PyPI, in the project's .venv),
//! against a server under load. It signs in with an admin key, and the numbers on
//! the page change between two reads; the browser console shows no error. A
//! screenshot goes to target/dashboard.png for a person to look at.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// The output of a project script (its last line), which must succeed.
fn script(name: &str) -> String {
    let out = Command::new("bash")
        .arg(format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("run script");
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

const DRIVER: &str = r#"
import json, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, key, driver_path, shot, wait_s = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
d = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
try:
    d.get(url + "/admin")
    d.find_element(By.ID, "key").send_keys(key)
    d.find_element(By.ID, "go").click()
    number = lambda id: d.find_element(By.ID, id).text
    # Rates need two reads of the stats: wait until the first rate shows.
    WebDriverWait(d, wait_s).until(lambda _: number("v-rps") not in ("", "–"))
    first = {i: number(i) for i in ["v-total", "v-rps", "v-conns"]}
    WebDriverWait(d, wait_s).until(lambda _: number("v-total") != first["v-total"])
    time.sleep(1.5)
    second = {i: number(i) for i in ["v-total", "v-rps", "v-conns"]}
    d.save_screenshot(shot)
    logs = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    print(json.dumps({"first": first, "second": second, "console": logs,
                      "breaker": number("v-breaker"), "title": d.title}))
finally:
    d.quit()
"#;

#[test]
fn the_dashboard_shows_live_figures_in_a_browser() {
    let driver = script("chromium.sh");
    let python = script("py-venv.sh");
    let db = TestDb::new("dashboard");
    let server = Server::start(&db.url, &["2", "--create-admin", "boss"]);
    let key = admin_key(&server);

    // Load: health checks and events, until the browser is done.
    let done = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|i| {
            let (done, addr) = (Arc::clone(&done), server.addr);
            std::thread::spawn(move || {
                let api = Api::new(addr);
                let mut n = 0u64;
                while !done.load(Relaxed) {
                    if i == 0 {
                        api.get("/health", None);
                    } else {
                        api.post(
                            "/event",
                            None,
                            &serde_json::json!({"userId": format!("u{}", n % 50), "value": 1}),
                        );
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let wait = bound(Duration::from_secs(10)).as_secs_f64().to_string();
    let out = Command::new(python)
        .args(["-c", DRIVER])
        .arg(format!("http://{}", server.addr))
        .arg(&key)
        .arg(&driver)
        .arg(&shot)
        .arg(&wait)
        .output()
        .expect("run the browser driver");
    done.store(true, Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(
        out.status.success(),
        "browser run failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["title"], "crudrs admin");
    assert_eq!(seen["console"], serde_json::json!([]), "console errors: {seen}");
    let total = |read: &str| seen[read]["v-total"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(total("second") > total("first"), "{seen}");
    let rps: f64 = seen["second"]["v-rps"].as_str().unwrap().parse().unwrap();
    assert!(rps > 0.0, "{seen}");
    assert_eq!(seen["breaker"], "database: closed");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "no screenshot");
}
