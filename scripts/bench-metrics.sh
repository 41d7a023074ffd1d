#!/usr/bin/env bash
# What metrics cost: two crudrs servers on CPU 1 (1 worker each), one recording
# metrics and one started with --no-metrics, the same wrk -t1 -c64 GET /health from
# CPU 0 in alternating rounds; CPU time per request, off over on (target >= 0.95).
# Writes bench-results/metrics.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
need wrk wrk
cd "$ROOT"
build_release
PORT_ON=${PORT_ON:-18093}
PORT_OFF=${PORT_OFF:-18094}
ROUNDS=${ROUNDS:-5}
admin=$(admin_url)
tmp=$(mktemp -d)
cleanup() { for p in ${on:-} ${off:-}; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

on=$(start_one_worker "$admin" "$tmp" "$PORT_ON")
off=$(start_one_worker "$admin" "$tmp" "$PORT_OFF" --no-metrics)
wait_port "$PORT_ON"
wait_port "$PORT_OFF"
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for p in "$PORT_ON" "$PORT_OFF"; do taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "http://127.0.0.1:$p/health" >/dev/null; done
: >"$tmp/on" && : >"$tmp/off"
for _ in $(seq 1 "$ROUNDS"); do
    wrk_cpu "$PORT_OFF" "$off" /health >>"$tmp/off"
    wrk_cpu "$PORT_ON" "$on" /health >>"$tmp/on"
done
r_off=$(awk '{print $1}' "$tmp/off" | median); r_on=$(awk '{print $1}' "$tmp/on" | median)
c_off=$(awk '{print $2}' "$tmp/off" | median); c_on=$(awk '{print $2}' "$tmp/on" | median)
{
    echo "GET /health, metrics recorded vs --no-metrics; servers on CPU $SERVER_CPU (1 worker each), wrk -t1 -c64 on CPU $LOAD_CPU, $DURATION × $ROUNDS alternating rounds, medians."
    echo
    echo "| server | req/s | CPU us/req |"
    echo "|---|---:|---:|"
    echo "| --no-metrics | $r_off | $c_off |"
    echo "| metrics on | $r_on | $c_on |"
    echo
    echo "CPU per request, off over on: $(awk -v a="$c_off" -v b="$c_on" 'BEGIN {printf "%.3f", a / b}') (target >= 0.95)."
} | tee "$RESULTS/metrics.md"
