#!/usr/bin/env bash
# POST /api/v1/counter through crudrs (group commit) at 16, 64 and 256 connections,
# load-client on CPU 0 checking every value, against pgbench running the single-row
# UPDATE at 16 clients on the same database. Writes bench-results/counter.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
build_release
# Workers: the server's default, one per CPU it may run on (taskset leaves it one);
# a waiting increment holds no worker. THREADS=N overrides.
THREADS=${THREADS:-}
PORT_RS=${PORT_RS:-18086}
url=$(fresh_db crudrs_bench_counter)
tmp=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
taskset -c "$SERVER_CPU" target/release/server $THREADS --port "$PORT_RS" --database-url "$url" --data-dir "$tmp/data" \
    --no-stats >/dev/null 2>"$tmp/server.log" &
srv=$!
wait_port "$PORT_RS"

pgbench_tps() {
    taskset -c "$LOAD_CPU" pgbench -n -M prepared -c 16 -j 1 -T "${DURATION%s}" -f bench/counter.pgbench "$url" 2>/dev/null |
        awk '/^tps/ {printf "%.0f", $3; exit}'
}
# The disk's fsync latency drifts on this VM: pgbench runs before and after crudrs,
# and the reference is the mean of the two.
pg_before=$(pgbench_tps)

rows=""
for conns in 16 64 256; do
    threads=$(( conns >= 64 ? 2 : 1 ))
    taskset -c "$LOAD_CPU" target/release/load-client "$threads" $((conns / threads)) --scenario counter \
        --duration "$DURATION" --target "http://127.0.0.1:$PORT_RS" --quiet --json "$RESULTS/counter-$conns.json" >/dev/null ||
        echo "load-client reported failures at $conns connections" >&2
    rows+="$conns $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['achieved_rate']), d['errors'], 'exact' if not d['checks_failed'] else 'FAILED', round(d['kinds']['counter']['latency']['p99_ms'],2))" "$RESULTS/counter-$conns.json")"$'\n'
done
kill "$srv"; srv=
pg_after=$(pgbench_tps)
pg=$(( (pg_before + pg_after) / 2 ))

{
    echo "Counter increments for $DURATION (crudrs on CPU $SERVER_CPU with ${THREADS:-its default number of} workers; load on CPU $LOAD_CPU; PostgreSQL unpinned, synchronous_commit on)"
    echo
    echo "| client | connections | increments/s | vs pgbench | p99 ms | errors | values |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    echo "| pgbench single-row UPDATE (mean of before $pg_before, after $pg_after) | 16 | $pg | 1.00 | | | |"
    echo "$rows" | while read -r conns rate errors check p99; do
        [ -n "$conns" ] || continue
        echo "| crudrs POST /api/v1/counter | $conns | $rate | $(awk -v a="$rate" -v b="$pg" 'BEGIN {printf "%.1f", a / b}') | $p99 | $errors | $check |"
    done
} | tee "$RESULTS/counter.md"
