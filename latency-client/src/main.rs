//! Placeholder: the latency-client is the subject of its own issue.

fn main() {
    eprintln!("latency-client: not built yet");
    std::process::exit(2);
}
