#!/usr/bin/env bash
# POST /event: crudrs (1 worker) against a minimal warp + DashSet service (the 1MRC
# official Rust shape, current-thread tokio), both on CPU 1, the same load-client
# run on CPU 0 (keep-alive connections: 64 and 256 plain, 64 with 16-deep pipelining). Rounds
# alternate the two servers, so drift in this VM hits both alike. Reports req/s and each
# server's CPU time per request. The reference is built from .ref/warp-1mrc (git-
# ignored, see scripts/build-ref.sh); without it only crudrs is measured.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
build_release
PORT_RS=${PORT_RS:-18087}
PORT_REF=${PORT_REF:-18088}
ROUNDS=${ROUNDS:-5}
ref_bin=.ref/warp-1mrc/target/release/warp-1mrc
admin=$(admin_url)
tmp=$(mktemp -d)
cleanup() { for p in ${srv:-} ${ref:-}; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
taskset -c "$SERVER_CPU" target/release/server 1 --port "$PORT_RS" --database-url "$admin" --data-dir "$tmp/data" \
    --no-stats >/dev/null 2>"$tmp/server.log" &
srv=$!
wait_port "$PORT_RS"
if [ -x "$ref_bin" ]; then
    taskset -c "$SERVER_CPU" "$ref_bin" "$PORT_REF" &
    ref=$!
    wait_port "$PORT_REF"
fi

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
once() { # once PORT PID DEPTH CONNS: "req/s us-per-request client-cpu%" of one run
    local b a
    b=$(ticks "$2")
    taskset -c "$LOAD_CPU" target/release/load-client 1 "$4" --mix event --duration "$DURATION" --pipeline "$3" \
        --target "http://127.0.0.1:$1" --quiet --json "$tmp/ev.json" >/dev/null || echo "errors at port $1" >&2
    a=$(ticks "$2")
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['achieved_rate']), round(($a-$b)/$hz*1e6/max(d['completed'],1),2), str(round(100*d['client_cpu_share']))+'%')" "$tmp/ev.json"
}
median() { sort -n "$1" | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
{
    echo "POST /event, load-client 1 thread, $DURATION × $ROUNDS rounds alternating the servers (median); servers on CPU $SERVER_CPU, load on CPU $LOAD_CPU"
    echo
    echo "| load | server | req/s | CPU us/req | load-client CPU | req/s vs reference | CPU/req, reference over crudrs |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for load in "64 1" "256 1" "64 16"; do
        read -r conns depth <<<"$load"
        : >"$tmp/rs" && : >"$tmp/ref"
        for _ in $(seq 1 "$ROUNDS"); do
            once "$PORT_RS" "$srv" "$depth" "$conns" >>"$tmp/rs"
            [ -z "${ref:-}" ] || once "$PORT_REF" "$ref" "$depth" "$conns" >>"$tmp/ref"
        done
        read -r rs_rate rs_cpu rs_client <<<"$(median "$tmp/rs")"
        if [ -n "${ref:-}" ]; then
            read -r r_rate r_cpu r_client <<<"$(median "$tmp/ref")"
            echo "| $conns conns, pipeline $depth | warp + DashSet (reference) | $r_rate | $r_cpu | $r_client | 1.00 | 1.00 |"
            echo "| $conns conns, pipeline $depth | crudrs (1 worker) | $rs_rate | $rs_cpu | $rs_client | $(awk -v a="$rs_rate" -v b="$r_rate" 'BEGIN {printf "%.2f", a / b}') | $(awk -v a="$r_cpu" -v b="$rs_cpu" 'BEGIN {printf "%.2f", a / b}') |"
        else
            echo "| $conns conns, pipeline $depth | crudrs (1 worker) | $rs_rate | $rs_cpu | $rs_client | (no reference built) | |"
        fi
    done
} | tee "$RESULTS/events.md"
