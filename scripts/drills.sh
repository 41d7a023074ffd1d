#!/usr/bin/env bash
# make drills: the reliability and security drills of tests/drills.rs, on the
# release build, one at a time, then their table (drill, load, faults, result,
# figures). Sizes: DRILL_KILL_ROUNDS, DRILL_PG_RESTARTS, DRILL_SOAK_SECS,
# DRILL_IDLE_CONNS, DRILL_SLOWLORIS, DRILL_SLOW_BODIES (see tests/drills.rs);
# ONLY=name runs the drills whose name contains it (e.g. ONLY=soak).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# 10,000 idle connections and 5,500 slow ones need that many descriptors on
# both sides. (The slow clients are the drill's own: slowhttptest's poll loop
# took half of the load CPU, so it measured itself rather than the server.)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export DRILLS_TABLE=${DRILLS_TABLE:-$ROOT/target/drills.tsv}
mkdir -p "$(dirname "$DRILLS_TABLE")"
: > "$DRILLS_TABLE"
status=0
"$ROOT/scripts/with-db.sh" cargo test --release --test drills -- --ignored --test-threads 1 ${ONLY:-} || status=$?
echo
echo "| drill | load | faults | result | figures |"
echo "|---|---|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$DRILLS_TABLE"
exit $status
