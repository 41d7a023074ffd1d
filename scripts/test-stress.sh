#!/usr/bin/env bash
# Runs the whole test suite while every CPU is kept busy by another process, the
# way a loaded CI machine or a small laptop runs it. One busy loop per core, at
# normal priority, for as long as the tests run; they are stopped on any exit.
#
#   scripts/test-stress.sh [RUNS]   the suite RUNS times in a row (default 1);
#                                   fails at the first red run
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-1}
cargo=${CARGO:-cargo}

# Build first, unloaded: compiling under load proves nothing and takes long.
"$here/scripts/with-db.sh" "$cargo" test --workspace --no-run

pids=()
stop_load() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true; }
trap stop_load EXIT
for _ in $(seq "$(nproc)"); do
    ( while :; do :; done ) &
    pids+=($!)
done
echo "test-stress: ${#pids[@]} busy loops on $(nproc) CPUs"

for i in $(seq "$runs"); do
    echo "== test-stress: run $i of $runs"
    "$here/scripts/with-db.sh" "$cargo" test --workspace
done
echo "test-stress: $runs of $runs runs passed with every CPU busy"
