#!/usr/bin/env bash
# crudrs behind HAProxy on this 2-core machine: load-client (CPU 0) against one
# instance directly, then through HAProxy against 1, 2 and 3 instances (instances
# and HAProxy all on CPU 1, one worker each), for GET /health (the proxy's own
# cost shows) and POST /api/v1/counter (a database commit each). Reports req/s,
# p99 and the server side's CPU time per request (instances + HAProxy). On two
# cores this measures overhead, not scaling. Writes bench-results/cluster.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
build_release
haproxy=$(scripts/haproxy.sh)
PUBLIC=${PUBLIC:-18300}
BASE=${BASE:-18301}
url=$(fresh_db crudrs_bench_cluster)
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done; pids=(); }

cpu_of() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
measure() { # measure PORT MIX: "req/s p99-ms cpu-us-per-request" with the CPU of every pid in pids
    local before after
    before=$(cpu_of "${pids[@]}")
    taskset -c "$LOAD_CPU" target/release/load-client 1 64 --mix "$2" --duration "$DURATION" \
        --target "http://127.0.0.1:$1" --quiet --json "$tmp/r.json" >/dev/null || echo "errors at $1 ($2)" >&2
    after=$(cpu_of "${pids[@]}")
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); k=list(d['kinds'].values())[0]; print(round(d['achieved_rate']), k['ok_p99_ms'], round(($after-$before)/$(getconf CLK_TCK)*1e6/max(d['completed'],1),2))" "$tmp/r.json"
}

rows=()
for setup in direct 1 2 3; do
    n=$([ "$setup" = direct ] && echo 1 || echo "$setup")
    ports=()
    for i in $(seq 1 "$n"); do
        port=$((BASE + i - 1))
        ports+=("$port")
        pids+=("$(start_one_worker "$url" "$tmp" "$port" --rate-limits off --instance-id "i$i")")
    done
    for p in "${ports[@]}"; do wait_port "$p"; done
    target=${ports[0]}
    if [ "$setup" != direct ]; then
        scripts/haproxy.sh config "$PUBLIC" "${ports[@]}" >"$tmp/haproxy.cfg"
        taskset -c "$SERVER_CPU" "$haproxy" -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 &
        pids+=("$!")
        wait_port "$PUBLIC"
        sleep 1 # the first health checks
        target=$PUBLIC
    fi
    for mix in health counter; do
        read -r rate p99 cpu <<<"$(measure "$target" "$mix")"
        label=$([ "$setup" = direct ] && echo "1 instance, no HAProxy" || echo "HAProxy + $setup instance(s)")
        rows+=("| $label | $mix | $rate | $p99 | $cpu |")
    done
    stop_all
done
{
    echo "load-client 1 thread x 64 connections on CPU $LOAD_CPU, $DURATION per run; instances (1 worker each) and HAProxy on CPU $SERVER_CPU; PostgreSQL unpinned"
    echo
    echo "| setup | mix | req/s | p99 ms | server-side CPU us/req |"
    echo "|---|---|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
} | tee "$RESULTS/cluster.md"
