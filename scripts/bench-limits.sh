#!/usr/bin/env bash
# What rate limiting costs. Two crudrs servers on CPU 1 (1 worker each), one with
# limits off and one with them on, measured in alternating rounds of the same load
# from CPU 0:
#   GET /health (free, never limited) and GET /stats (limited, anonymous key), wrk -c64:
#     CPU per request, on over off (target: on costs <= 1/0.95 of off);
#   POST /event from 256 connections on 256 client addresses (load-client --source-ips):
#     req/s, on over off (target >= 0.9).
# The "on" quota is far above what the load reaches, so every request is checked,
# charged and answered with its RateLimit fields, and none is refused. Then the
# limiter table alone: memory and time per key with a million keys.
# Writes bench-results/limits.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
need wrk wrk
cd "$ROOT"
build_release
PORT_OFF=${PORT_OFF:-18091}
PORT_ON=${PORT_ON:-18092}
ROUNDS=${ROUNDS:-3}
admin=$(admin_url)
tmp=$(mktemp -d)
cleanup() { for p in ${off:-} ${on:-}; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

off=$(start_one_worker "$admin" "$tmp" "$PORT_OFF" --rate-limits off)
on=$(start_one_worker "$admin" "$tmp" "$PORT_ON" --rate-limits "anonymous=1000000000/m")
wait_port "$PORT_OFF"
wait_port "$PORT_ON"

hz=$(getconf CLK_TCK)
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
wrk_once() { wrk_cpu "$@"; }

lc_once() { # lc_once PORT PID: "req/s cpu-us-per-request" of POST /event from 256 addresses
    local b a
    b=$(ticks "$2")
    taskset -c "$LOAD_CPU" target/release/load-client 1 256 --mix event --duration "$DURATION" --source-ips 256 \
        --target "http://127.0.0.1:$1" --quiet --json "$tmp/ev.json" >/dev/null || echo "errors at port $1" >&2
    a=$(ticks "$2")
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['achieved_rate']), round(($a-$b)/$hz*1e6/max(d['completed'],1),3))" "$tmp/ev.json"
}

# Warm up both.
for p in "$PORT_OFF" "$PORT_ON"; do taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "http://127.0.0.1:$p/stats" >/dev/null; done

rows=()
for load in /health /stats event; do
    : >"$tmp/off" && : >"$tmp/on"
    for _ in $(seq 1 "$ROUNDS"); do
        if [ "$load" = event ]; then
            lc_once "$PORT_OFF" "$off" >>"$tmp/off"
            lc_once "$PORT_ON" "$on" >>"$tmp/on"
        else
            wrk_once "$PORT_OFF" "$off" "$load" >>"$tmp/off"
            wrk_once "$PORT_ON" "$on" "$load" >>"$tmp/on"
        fi
    done
    r_off=$(awk '{print $1}' "$tmp/off" | median); r_on=$(awk '{print $1}' "$tmp/on" | median)
    c_off=$(awk '{print $2}' "$tmp/off" | median); c_on=$(awk '{print $2}' "$tmp/on" | median)
    case $load in
        event) name="POST /event, 256 conns from 256 addresses (load-client)"; target="req/s on/off >= 0.9" ;;
        *) name="GET $load, wrk -c64"; target="CPU/req off/on >= 0.95" ;;
    esac
    rows+=("| $name | $r_off | $r_on | $(ratio "$r_on" "$r_off") | $c_off | $c_on | $(ratio "$c_off" "$c_on") | $target |")
done

table=$(cargo test --release -q --lib one_million_keys -- --nocapture 2>/dev/null | grep '^limiter:' || echo "limiter: (table measurement failed)")

{
    echo "Rate limiting off vs on (anonymous=1000000000/m: every request checked and charged, none refused)."
    echo "Servers on CPU $SERVER_CPU (1 worker each), load on CPU $LOAD_CPU, $DURATION × $ROUNDS alternating rounds, medians."
    echo
    echo "| load | off req/s | on req/s | req/s on/off | off CPU us/req | on CPU us/req | CPU/req off/on | target |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "The table alone (cargo test --release --lib one_million_keys -- --nocapture): $table"
} | tee "$RESULTS/limits.md"
