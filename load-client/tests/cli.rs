//! The command line: help, argument errors, and a refused unknown scenario.
//! (Runs against a real server live in the workspace root's tests/clients.rs.)

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_load-client"))
        .args(args)
        .output()
        .expect("run load-client")
}

#[test]
fn help_names_the_c_arguments_and_flags() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "THREADS",
        "SOCKETS_PER_THREAD",
        "REQUESTS_PER_SOCKET",
        "--mix",
        "--rate",
        "--pipeline",
        "--scenario",
    ] {
        assert!(text.contains(word), "{word} missing from --help");
    }
}

#[test]
fn bad_arguments_are_refused_with_exit_2() {
    assert_eq!(
        run(&["--mix", "bogus=1", "--target", "http://127.0.0.1:9"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["--scenario", "nope", "--target", "http://127.0.0.1:9"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run(&["--target", "ftp://x"]).status.code(), Some(2));
}
