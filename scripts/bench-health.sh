#!/usr/bin/env bash
# GET /health on crudrs (1 worker) against nginx (1 worker, `return 200`), both on
# CPU 1, the same wrk command on CPU 0: at -c64, and at -c64 with 16-deep pipelining.
# Prints both rates and the ratio; writes bench-results/health.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
need wrk wrk
need nginx nginx-light
cd "$ROOT"
build_release
PORT_RS=${PORT_RS:-18080}
PORT_NGX=${PORT_NGX:-18081}
ROUNDS=${ROUNDS:-3}

tmp=$(mktemp -d)
cleanup() {
    [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/nginx.conf" <<NGX
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$PORT_NGX reuseport backlog=1024;
        location / { default_type application/json; return 200 '{"status":"ok"}'; }
    }
}
NGX
taskset -c "$SERVER_CPU" nginx -c "$tmp/nginx.conf" -e "$tmp/error.log"
DATABASE_URL=$(scripts/with-db.sh printenv DATABASE_URL) \
    taskset -c "$SERVER_CPU" target/release/server 1 --port "$PORT_RS" --no-stats >/dev/null 2>"$tmp/server.log" &
srv=$!
wait_port "$PORT_RS"
wait_port "$PORT_NGX"

cpu_ticks() { # cpu_ticks PID...: user+system clock ticks of the processes, summed
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}
hz=$(getconf CLK_TCK)

run() { # run PORT PIDS [pipeline]: prints "req/s cpu-us-per-request" for one wrk run
    local port=$1 pids=$2 mode=${3:-} before after out r
    before=$(cpu_ticks $pids)
    if [ "$mode" = pipeline ]; then
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$DURATION" -s bench/pipeline.lua "http://127.0.0.1:$port/health")
    else
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$port/health")
    fi
    after=$(cpu_ticks $pids)
    r=$(echo "$out" | rps)
    local total
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    awk -v r="$r" -v t=$((after - before)) -v hz="$hz" -v n="$total" \
        'BEGIN {printf "%.0f %.2f\n", r, t / hz * 1e6 / n}'
}

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

ngx_pids="$(cat "$tmp/nginx.pid") $(pgrep -P "$(cat "$tmp/nginx.pid")" | tr '\n' ' ')"
# Warm both up, then alternate so drift hits both alike.
taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT_RS/health" >/dev/null
taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT_NGX/health" >/dev/null
for mode in plain pipeline; do
    : >"$tmp/ngx-$mode"
    : >"$tmp/rs-$mode"
    for _ in $(seq 1 "$ROUNDS"); do
        run "$PORT_NGX" "$ngx_pids" "$mode" >>"$tmp/ngx-$mode"
        run "$PORT_RS" "$srv" "$mode" >>"$tmp/rs-$mode"
    done
done
col() { awk -v c="$2" '{print $c}' "$tmp/$1" | median; }
ngx_plain=$(col ngx-plain 1); rs_plain=$(col rs-plain 1)
ngx_pipe=$(col ngx-pipeline 1); rs_pipe=$(col rs-pipeline 1)
ngx_plain_cpu=$(col ngx-plain 2); rs_plain_cpu=$(col rs-plain 2)
ngx_pipe_cpu=$(col ngx-pipeline 2); rs_pipe_cpu=$(col rs-pipeline 2)
wrk_note="wrk itself runs at ~99% of CPU $LOAD_CPU in the plain case, so there req/s is the client's ceiling; CPU per request is the server-side figure"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

{
    echo "GET /health, wrk -t1 -c64 -d$DURATION, median of $ROUNDS alternating rounds; servers on CPU $SERVER_CPU (1 worker each), wrk on CPU $LOAD_CPU"
    echo
    echo "| load | nginx req/s | crudrs req/s | req/s ratio | nginx CPU us/req | crudrs CPU us/req | target |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| -c64 | $ngx_plain | $rs_plain | $(ratio "$rs_plain" "$ngx_plain") | $ngx_plain_cpu | $rs_plain_cpu | >= 1.0 |"
    echo "| -c64, 16-deep pipeline | $ngx_pipe | $rs_pipe | $(ratio "$rs_pipe" "$ngx_pipe") | $ngx_pipe_cpu | $rs_pipe_cpu | >= 1.2 |"
    echo
    echo "Note: $wrk_note."
} | tee "$RESULTS/health.md"
