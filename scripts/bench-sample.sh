#!/usr/bin/env bash
# POST /api/sample through crudrs against pgbench running the same prepared INSERT,
# both at CONC (default 16) concurrent clients, against the same fresh database.
# crudrs runs on CPU 1 with CONC workers, the load (wrk / pgbench) on CPU 0;
# PostgreSQL is not pinned in either run. Writes bench-results/sample.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
need wrk wrk
cd "$ROOT"
build_release
CONC=${CONC:-16}
PORT_RS=${PORT_RS:-18082}
url=$(fresh_db crudrs_bench)

tmp=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
taskset -c "$SERVER_CPU" target/release/server "$CONC" --port "$PORT_RS" --database-url "$url" --no-stats \
    >/dev/null 2>"$tmp/server.log" &
srv=$!
wait_port "$PORT_RS"
token=$(curl -sf -H 'Content-Type: application/json' -d '{"username":"bench","password":"bench-password","email":"bench@example.org"}' \
    "http://127.0.0.1:$PORT_RS/auth/create" | sed -E 's/.*"api_key":"([0-9a-f]+)".*/\1/')
uid=$(psql "$url" -Atc "SELECT id FROM users WHERE username = 'bench'")

out=$(TOKEN=$token taskset -c "$LOAD_CPU" wrk -t1 -c"$CONC" -d"$DURATION" -s bench/sample.lua "http://127.0.0.1:$PORT_RS/api/sample")
rs=$(echo "$out" | rps)
bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
kill "$srv"; srv=

pg=$(taskset -c "$LOAD_CPU" pgbench -n -M prepared -c "$CONC" -j 1 -T "${DURATION%s}" -D uid="$uid" \
    -f bench/sample.pgbench "$url" 2>/dev/null | awk '/^tps/ {print $3; exit}')
rows=$(psql "$url" -Atc "SELECT count(*) FROM samples")

{
    echo "Sample insert at $CONC concurrent clients for $DURATION (crudrs on CPU $SERVER_CPU with $CONC workers; load on CPU $LOAD_CPU)"
    echo
    echo "| path | inserts/s | crudrs / pgbench |"
    echo "|---|---:|---:|"
    echo "| pgbench -M prepared, same INSERT | $pg | |"
    echo "| crudrs POST /api/sample (HTTP + JSON + auth) | $rs | $(awk -v a="$rs" -v b="$pg" 'BEGIN {printf "%.2f", a / b}') |"
    echo
    echo "Non-2xx responses: ${bad:-0}; rows in samples afterwards: $rows"
} | tee "$RESULTS/sample.md"
