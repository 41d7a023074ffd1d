#!/usr/bin/env bash
# make fuzz: the property tests of the head parser and the chunked decoder (the
# `prop_` tests in src/http/) with a large case count, again and again with new
# random seeds, for FUZZ_SECS seconds (default 300). A failure stops it; proptest
# then saves the shrunk case under proptest-regressions/ (commit it: every later
# run tries it first).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECS=${FUZZ_SECS:-300}
CASES=${CASES:-100000}
cargo test --release -q --lib prop_ --no-run
end=$((SECONDS + FUZZ_SECS))
rounds=0
while [ "$SECONDS" -lt "$end" ]; do
    PROPTEST_CASES=$CASES cargo test --release -q --lib prop_ >/dev/null
    rounds=$((rounds + 1))
    echo "fuzz: round $rounds passed ($CASES cases per property, $((end - SECONDS)) s left)"
done
echo "fuzz: $rounds rounds, $((rounds * CASES)) cases per property, no failure"
