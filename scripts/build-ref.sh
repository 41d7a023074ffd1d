#!/usr/bin/env bash
# Builds the comparison-only reference service (bench/ref/warp-1mrc: warp + DashSet,
# the 1MRC official Rust shape) into .ref/ (git-ignored). It is never part of
# crudrs; only scripts/bench-events.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --manifest-path bench/ref/warp-1mrc/Cargo.toml --target-dir .ref/warp-1mrc/target
