#!/usr/bin/env bash
# POST /api/sample through crudrs (group commit: one multi-row INSERT per batch) at
# 16 and 64 connections, load-client on CPU 0 validating every answer, against
# pgbench running the single-row prepared INSERT at 16 clients on the same database,
# before and after crudrs (the reference is the mean: fsync latency drifts on this
# VM). crudrs runs on CPU 1 with its default number of workers (one under taskset;
# THREADS=N overrides).
# Then the ceiling: PostgreSQL alone (pgbench, no HTTP) with as many rows outstanding
# as crudrs has connections, split into clients x rows-per-INSERT every way in
# SPLITS_16 / SPLITS_64, the fastest split kept. A server in front of PostgreSQL
# cannot insert faster than PostgreSQL does with the same rows outstanding, so the
# ceiling over pgbench's single-row figure is the best ratio this machine allows.
# Writes bench-results/sample.md.
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

# ceiling OUTSTANDING "CLIENTSxROWS ...": "rows/s split" of the fastest split
ceiling() {
    local best=0 best_split="" split c k tps
    for split in $2; do
        c=${split%x*} k=${split#*x}
        [ $((c * k)) = "$1" ] || { echo "split $split does not make $1 rows outstanding" >&2; exit 1; }
        tps=$(taskset -c "$LOAD_CPU" pgbench -n -M prepared -c "$c" -j 1 -T "${DURATION%s}" -D uid="$uid" -D k="$k" \
            -f bench/sample-multi.pgbench "$url" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3; exit}')
        [ $((tps * k)) -gt "$best" ] && best=$((tps * k)) best_split=$split
        echo "$1 outstanding, $split: $((tps * k)) rows/s" >>"$tmp/splits"
    done
    echo "$best $best_split"
}
read -r ceil16 split16 < <(ceiling 16 "${SPLITS_16:-1x16 2x8 4x4}")
read -r ceil64 split64 < <(ceiling 64 "${SPLITS_64:-1x64 2x32 4x16}")
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
    echo "Ceiling: PostgreSQL alone (pgbench -M prepared, multi-row INSERT, no HTTP) with as many rows outstanding as"
    echo "crudrs had connections, the fastest split of clients x rows per INSERT:"
    echo
    echo "| rows outstanding | fastest split (clients x rows) | rows/s | vs pgbench | crudrs / ceiling |"
    echo "|---:|---|---:|---:|---:|"
    echo "$rows" | while read -r conns rate _ _; do
        [ -n "$conns" ] || continue
        if [ "$conns" = 16 ]; then c=$ceil16 s=$split16; else c=$ceil64 s=$split64; fi
        echo "| $conns | $s | $c | $(awk -v a="$c" -v b="$pg" 'BEGIN {printf "%.2f", a / b}') | $(awk -v a="$rate" -v b="$c" 'BEGIN {printf "%.2f", a / b}') |"
    done
    echo
    echo "Every split: $(paste -sd ';' "$tmp/splits" | sed 's/;/; /g')."
    echo
    echo "Rows crudrs stored: $stored"
} | tee "$RESULTS/sample.md"
