//! The command line. (Runs against a real server live in the workspace root's
//! tests/clients.rs.)

use std::process::Command;

#[test]
fn help_and_unreachable_target() {
    let bin = env!("CARGO_BIN_EXE_latency-client");
    let out = Command::new(bin).arg("--help").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--interval"));
    // Nothing listens on port 9: set-up fails, exit 2.
    let out = Command::new(bin)
        .args(["1", "--target", "http://127.0.0.1:9"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
