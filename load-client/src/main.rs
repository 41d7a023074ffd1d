//! Placeholder: the load-client is the subject of its own issue.

fn main() {
    eprintln!("load-client: not built yet");
    std::process::exit(2);
}
