#!/usr/bin/env bash
# The caching relay, in one run:
#  a. Cache hits: GET /relay/k/1?max_age=600&bytes=559 through crudrs (1 worker,
#     --relay-upstream at the test upstream) against nginx as a caching reverse proxy
#     (proxy_cache, 1 worker) in front of the same upstream, and nginx `return 200`
#     with a 559-byte body as the plain-HTTP reference; servers on CPU 1, wrk and the
#     upstream on CPU 0; req/s and server CPU per request, medians of alternating rounds.
#  b. Misses: 1,000 concurrent requests for 10 fresh keys (the upstream waits 200 ms,
#     so they overlap) through crudrs with load-client's relay scenario; the upstream
#     must see exactly one request per key.
# Writes bench-results/relay.md (and relay-misses.json).
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
need wrk wrk
need curl curl
need nginx nginx
cd "$ROOT"
build_release
PORT_UP=${PORT_UP:-18095}
PORT_RS=${PORT_RS:-18096}
PORT_CACHE=${PORT_CACHE:-18097}
PORT_PLAIN=${PORT_PLAIN:-18098}
ROUNDS=${ROUNDS:-3}
# The Python relay this one replaces, recorded on this machine (cache hits, req/s).
PYTHON_RELAY_RPS=539
BYTES=559
HIT="/relay/k/1?max_age=600&bytes=$BYTES"
MISS_KEYS=10
MISS_REQUESTS=1000

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d)
cleanup() {
    for p in ${srv:-} ${up:-}; do kill "$p" 2>/dev/null || true; done
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    # nginx removes its pid file on exit; wait for that before removing the folder.
    for _ in $(seq 1 50); do [ -f "$tmp/nginx.pid" ] || break; sleep 0.1; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# The upstream runs on the load CPU: on a hit neither server talks to it.
taskset -c "$LOAD_CPU" target/release/test-upstream --listen "127.0.0.1:$PORT_UP" >"$tmp/upstream.out" 2>&1 &
up=$!
wait_port "$PORT_UP"

url=$(fresh_db crudrs_bench_relay)
srv=$(start_one_worker "$url" "$tmp" "$PORT_RS" --relay-upstream "http://127.0.0.1:$PORT_UP/base")

# nginx: one worker, a proxy_cache in front of the same upstream (/relay/X -> /base/X,
# so both relays fetch the same resource), and `return 200` on a port of its own.
# It runs as root (the script does), so its worker may write the cache under $tmp.
plain_body="{\"pad\":\"$(head -c $((BYTES - 10)) /dev/zero | tr '\0' x)\"}"
mkdir -p "$tmp/cache"
cat >"$tmp/nginx.conf" <<NGX
user root;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $tmp/client_body;
    proxy_temp_path $tmp/proxy_temp;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    proxy_cache_path $tmp/cache levels=1:2 keys_zone=relay:10m max_size=256m inactive=60m use_temp_path=off;
    upstream test_upstream {
        server 127.0.0.1:$PORT_UP;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$PORT_CACHE reuseport backlog=1024;
        location /relay/ {
            proxy_pass http://test_upstream/base/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache relay;
            proxy_cache_lock on;
            proxy_cache_valid 200 10m;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
    server {
        listen 127.0.0.1:$PORT_PLAIN reuseport backlog=1024;
        location / { default_type application/json; return 200 '$plain_body'; }
    }
}
NGX
nginx -t -q -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/error.log"
taskset -c "$SERVER_CPU" nginx -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/error.log"
wait_port "$PORT_RS"
wait_port "$PORT_CACHE"
wait_port "$PORT_PLAIN"
# The master and its children (worker, cache manager, and the cache loader until it exits).
ngx_pids() { echo "$(cat "$tmp/nginx.pid") $(pgrep -P "$(cat "$tmp/nginx.pid")" | tr '\n' ' ')"; }

# Warm both caches, then check that the second answer of each is a hit of the same size.
check_hit() { # check_hit PORT HEADER NAME: the answer is a cache hit with a $BYTES-byte body
    local n
    n=$(curl -sS -D "$tmp/head" -o "$tmp/body" -w '%{size_download}' "http://127.0.0.1:$1$HIT")
    if ! grep -qi "^$2: HIT" "$tmp/head" || [ "$n" != "$BYTES" ]; then
        echo "$3 did not answer a $BYTES-byte cache hit:" >&2
        cat "$tmp/head" >&2
        exit 1
    fi
}
for port in "$PORT_RS" "$PORT_CACHE"; do curl -sS -o /dev/null "http://127.0.0.1:$port$HIT"; done
check_hit "$PORT_RS" X-Cache crudrs
check_hit "$PORT_CACHE" X-Cache-Status "nginx proxy_cache"
plain_len=$(curl -sS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$PORT_PLAIN/")
[ "$plain_len" = "$BYTES" ] || { echo "nginx return 200 answered $plain_len bytes, not $BYTES" >&2; exit 1; }
hits_before=$(curl -sS "http://127.0.0.1:$PORT_UP/__count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')

# a. Hits: warm up, then alternate so drift hits all three alike.
for port in "$PORT_RS" "$PORT_CACHE"; do taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "http://127.0.0.1:$port$HIT" >/dev/null; done
taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT_PLAIN/" >/dev/null
: >"$tmp/rs" && : >"$tmp/cache-runs" && : >"$tmp/plain"
for _ in $(seq 1 "$ROUNDS"); do
    wrk_cpu "$PORT_CACHE" "$(ngx_pids)" "$HIT" >>"$tmp/cache-runs"
    wrk_cpu "$PORT_RS" "$srv" "$HIT" >>"$tmp/rs"
    wrk_cpu "$PORT_PLAIN" "$(ngx_pids)" / >>"$tmp/plain"
done
hits_after=$(curl -sS "http://127.0.0.1:$PORT_UP/__count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
col() { awk -v c="$2" '{print $c}' "$tmp/$1" | median; }
rs_r=$(col rs 1) rs_c=$(col rs 2)
ngx_r=$(col cache-runs 1) ngx_c=$(col cache-runs 2)
plain_r=$(col plain 1) plain_c=$(col plain 2)
rounds() { awk '{printf "%s%s / %s", (NR > 1 ? ", " : ""), $1, $2}' "$tmp/$1"; }
# How busy the server's CPU was: req/s × CPU per request, per round, the median round.
busy() { awk '{print $1 * $2 / 1e4}' "$tmp/$1" | median | awk '{printf "%.0f%%", $1}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# b. Misses: a key prefix never asked before, so every key is a miss at both levels.
prefix="m$(date +%s%N)"
taskset -c "$LOAD_CPU" target/release/load-client 1 "$MISS_REQUESTS" --requests "$MISS_REQUESTS" \
    --scenario relay --relay-prefix "$prefix" --relay-keys "$MISS_KEYS" --relay-delay-ms 200 \
    --upstream-count-url "http://127.0.0.1:$PORT_UP/__count" --target "http://127.0.0.1:$PORT_RS" \
    --quiet --json "$RESULTS/relay-misses.json" >"$tmp/misses.txt" ||
    { echo "load-client reported failures in the miss run:" >&2; cat "$tmp/misses.txt" >&2; }
read -r m_up m_ok m_err m_hit m_miss m_other m_p50 m_p99 < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
x, r = d["x_cache"], d["kinds"]["relay"]
print(d["upstream_requests"], r["ok"], d["errors"], x["HIT"], x["MISS"],
      x["STALE"] + x["REVALIDATED"] + x["none"], r["latency"]["p50_ms"], r["latency"]["p99_ms"])
' "$RESULTS/relay-misses.json")
m_verdict=$([ "$m_up" = "$MISS_KEYS" ] && echo "exact" || echo "WRONG")

{
    echo "Relay cache hits: GET $HIT, wrk -t1 -c64 -d$DURATION, median of $ROUNDS alternating rounds;"
    echo "servers on CPU $SERVER_CPU (1 worker each), wrk and test-upstream on CPU $LOAD_CPU. Both caches were warmed and"
    echo "checked with curl first (crudrs X-Cache: HIT, nginx X-Cache-Status: HIT, $BYTES-byte bodies)."
    echo
    echo "| server | req/s | CPU us/req | server CPU busy |"
    echo "|---|---:|---:|---:|"
    echo "| crudrs relay, cache hit | $rs_r | $rs_c | $(busy rs) |"
    echo "| nginx proxy_cache, cache hit | $ngx_r | $ngx_c | $(busy cache-runs) |"
    echo "| nginx return 200 ($BYTES B) | $plain_r | $plain_c | $(busy plain) |"
    echo
    echo "| ratio | value | target |"
    echo "|---|---:|---:|"
    echo "| crudrs / nginx proxy_cache, req/s | $(ratio "$rs_r" "$ngx_r") | >= 2 |"
    echo "| nginx proxy_cache / crudrs, CPU per request | $(ratio "$ngx_c" "$rs_c") | |"
    echo "| crudrs / Python relay ($PYTHON_RELAY_RPS req/s recorded), req/s | $(ratio "$rs_r" "$PYTHON_RELAY_RPS") | >= 100 |"
    echo "| crudrs / nginx return 200, req/s | $(ratio "$rs_r" "$plain_r") | |"
    echo "| crudrs / nginx return 200, CPU per request | $(ratio "$rs_c" "$plain_c") | |"
    echo "| ceiling: nginx proxy_cache / nginx return 200, CPU per request | $(ratio "$ngx_c" "$plain_c") | |"
    echo
    echo "Every round (req/s / CPU us/req): crudrs $(rounds rs); nginx proxy_cache $(rounds cache-runs);"\
        "nginx return 200 $(rounds plain)."
    echo "Load average before the run: $load_before."
    echo "Upstream requests during the hit runs: $((hits_after - hits_before))."
    echo
    echo "Relay misses: $MISS_REQUESTS requests at once on $MISS_REQUESTS connections (load-client, CPU $LOAD_CPU) for"
    echo "$MISS_KEYS fresh keys /relay/$prefix/0..$((MISS_KEYS - 1)), the upstream answering after 200 ms."
    echo
    echo "| upstream requests | expected | ok answers | errors | X-Cache HIT | X-Cache MISS | other | p50 ms | p99 ms |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    echo "| $m_up ($m_verdict) | $MISS_KEYS | $m_ok | $m_err | $m_hit | $m_miss | $m_other | $m_p50 | $m_p99 |"
    echo
    echo "Note: wrk -t1 on one CPU is itself a ceiling (about nginx return 200's rate); a server far below 100% busy"
    echo "was limited by the client, and then CPU us/req is the figure to compare. The ceiling row is the ratio a"
    echo "server would reach that answered a hit for exactly the CPU nginx spends on \`return 200\` (one recv and one"
    echo "send per request, most of it the kernel's TCP work); 2x needs a hit cheaper than that."
} | tee "$RESULTS/relay.md"
