#!/usr/bin/env bash
# POST /api/sample through crudrs (group commit: one multi-row INSERT per batch) at
# 16 and 64 connections, load-client on CPU 0 validating every answer, against
# pgbench running the single-row prepared INSERT at 16 clients on the same database,
# before and after crudrs (the reference is the mean: fsync latency drifts on this
# VM). crudrs runs on CPU 1 with its default number of workers (one under taskset;
# THREADS=N overrides). Writes bench-results/sample.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
build_release
THREADS=${THREADS:-}
PORT_RS=${PORT_RS:-18082}
url=$(fresh_db crudrs_bench)
tmp=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
taskset -c "$SERVER_CPU" target/release/server $THREADS --port "$PORT_RS" --database-url "$url" --data-dir "$tmp/data" \
    --no-stats >/dev/null 2>"$tmp/server.log" &
srv=$!
wait_port "$PORT_RS"
# The pgbench rows belong to a user of their own.
psql "$url" -qc "INSERT INTO users (username, email, password_hash) VALUES ('pgbench', 'pgbench@example.org', 'x')" >/dev/null
uid=$(psql "$url" -Atc "SELECT id FROM users WHERE username = 'pgbench'")

pgbench_tps() {
    taskset -c "$LOAD_CPU" pgbench -n -M prepared -c 16 -j 1 -T "${DURATION%s}" -D uid="$uid" \
        -f bench/sample.pgbench "$url" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3; exit}'
}
pg_before=$(pgbench_tps)

rows=""
for conns in 16 64; do
    threads=$(( conns >= 64 ? 2 : 1 ))
    taskset -c "$LOAD_CPU" target/release/load-client "$threads" $((conns / threads)) --mix sample \
        --duration "$DURATION" --target "http://127.0.0.1:$PORT_RS" --quiet --json "$RESULTS/sample-$conns.json" >/dev/null ||
        echo "load-client reported failures at $conns connections" >&2
    rows+="$conns $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['achieved_rate']), d['errors'], round(d['kinds']['sample']['latency']['p99_ms'],2))" "$RESULTS/sample-$conns.json")"$'\n'
done
kill "$srv"; srv=
pg_after=$(pgbench_tps)
pg=$(( (pg_before + pg_after) / 2 ))
stored=$(psql "$url" -Atc "SELECT count(*) FROM samples s JOIN users u ON u.id = s.user_id WHERE u.username <> 'pgbench'")

{
    echo "Sample inserts for $DURATION (crudrs on CPU $SERVER_CPU with ${THREADS:-its default number of} workers; load on CPU $LOAD_CPU; PostgreSQL unpinned, synchronous_commit on)"
    echo
    echo "| client | connections | inserts/s | vs pgbench | p99 ms | errors |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| pgbench -M prepared single-row INSERT (mean of before $pg_before, after $pg_after) | 16 | $pg | 1.00 | | |"
    echo "$rows" | while read -r conns rate errors p99; do
        [ -n "$conns" ] || continue
        echo "| crudrs POST /api/sample (HTTP + JSON + auth) | $conns | $rate | $(awk -v a="$rate" -v b="$pg" 'BEGIN {printf "%.2f", a / b}') | $p99 | $errors |"
    done
    echo
    echo "Rows crudrs stored: $stored"
} | tee "$RESULTS/sample.md"
