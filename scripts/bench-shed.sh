#!/usr/bin/env bash
# Load shedding under overload: GET /api/sample/{id} (a database read) on crudrs
# (1 worker, CPU 1), the open-model load-client on CPU 0 (1024 connections,
# 8-deep, so the client's own window never limits what it offers). First the
# server's capacity (closed model, 64 connections); then offered 1x, 2x and 4x that
# rate, with shedding on (the defaults) and off (--shed-target 0). Reports goodput
# (2xx per second) against the peak, refusals, and the p99 of accepted requests
# (from their intended send time: no coordinated omission). Writes
# bench-results/shed.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
build_release
PORT_RS=${PORT_RS:-18089}
DURATION=${DURATION:-6s}
url=$(fresh_db crudrs_bench_shed)
tmp=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

start() {
    taskset -c "$SERVER_CPU" target/release/server 1 --port "$PORT_RS" --database-url "$url" --data-dir "$tmp/data" \
        --no-stats "$@" >/dev/null 2>"$tmp/server.log" &
    srv=$!
    wait_port "$PORT_RS"
}
stop() { kill "$srv"; wait "$srv" 2>/dev/null || true; srv=; }
# load ARGS...: "goodput refused-per-second ok-p99-ms" of one run
load() {
    taskset -c "$LOAD_CPU" target/release/load-client "$@" --mix get-sample --duration "$DURATION" \
        --target "http://127.0.0.1:$PORT_RS" --quiet --json "$tmp/r.json" >/dev/null || true
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); k=d['kinds']['get-sample']; e=d['elapsed_s']; print(round(k['ok']/e), round((k['count']-k['ok'])/e), k['ok_p99_ms'])" "$tmp/r.json"
}

start
read -r capacity _ _ <<<"$(load 1 64)"
stop
rows=""
peak=$capacity
for mult in 1 2 4; do
    for mode in on off; do
        if [ "$mode" = on ]; then start; else start --shed-target 0; fi
        read -r good refused p99 <<<"$(load 2 512 --pipeline 8 --rate $((capacity * mult)))"
        stop
        [ "$good" -gt "$peak" ] && peak=$good
        rows+="$mult $mode $good $refused $p99"$'\n'
    done
done
{
    echo "GET /api/sample/{id} under overload, $DURATION per run (crudrs 1 worker on CPU $SERVER_CPU; open-model load-client on CPU $LOAD_CPU, 1024 connections x 8 deep)"
    echo
    echo "Capacity (closed model, 64 connections): $capacity req/s. Peak goodput seen: $peak req/s."
    echo
    echo "| offered | shedding | goodput req/s | goodput / peak | refused (503) req/s | p99 accepted ms |"
    echo "|---:|---|---:|---:|---:|---:|"
    echo "$rows" | while read -r mult mode good refused p99; do
        [ -n "$mult" ] || continue
        echo "| ${mult}x | $mode | $good | $(awk -v a="$good" -v b="$peak" 'BEGIN {printf "%.2f", a / b}') | $refused | $p99 |"
    done
} | tee "$RESULTS/shed.md"
