#!/usr/bin/env bash
# The standard load set, measured by load-client (on CPU 0) against crudrs (on CPU 1):
# the C mix (create, login, sample; default argon2 costs), sample-only, GET /health
# with 16-deep pipelining, and the 1mrc scenario with N events on a fresh server.
# JSON per run under bench-results/, a markdown table on stdout and in load.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
build_release
THREADS=${THREADS:-4}
N_1MRC=${N_1MRC:-200000}
PORT_RS=${PORT_RS:-18084}
tmp=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

start_server() { # fresh database and process
    [ -n "${srv:-}" ] && { kill "$srv"; wait "$srv" 2>/dev/null || true; }
    url=$(fresh_db crudrs_bench_load)
    taskset -c "$SERVER_CPU" target/release/server "$THREADS" --port "$PORT_RS" --database-url "$url" \
        --data-dir "$tmp/data" --no-stats >/dev/null 2>"$tmp/server.log" &
    srv=$!
    wait_port "$PORT_RS"
}

load() { # load NAME ARGS...: one load-client run, JSON into bench-results/load-NAME.json
    local name=$1
    shift
    taskset -c "$LOAD_CPU" target/release/load-client "$@" --target "http://127.0.0.1:$PORT_RS" --quiet \
        --json "$RESULTS/load-$name.json" >/dev/null || echo "load-client reported failures for $name" >&2
}

start_server
load c-mix 1 16 --duration "$DURATION"
load sample-only 1 16 --mix sample --duration "$DURATION"
load health-pipelined 1 64 --mix health --pipeline 16 --duration "$DURATION"
start_server
load 1mrc 1 64 --scenario 1mrc --requests "$N_1MRC" --pipeline 16

python3 - "$RESULTS" "$THREADS" "$DURATION" <<'PY' | tee "$RESULTS/load.md"
import json, sys, os
res, threads, dur = sys.argv[1:4]
print(f"load-client on CPU 0, crudrs ({threads} workers) on CPU 1; {dur} runs (1mrc: fixed N)\n")
print("| run | completed | errors | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | client CPU | check |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for name in ["c-mix", "sample-only", "health-pipelined", "1mrc"]:
    p = os.path.join(res, f"load-{name}.json")
    if not os.path.exists(p):
        print(f"| {name} | missing | | | | | | | | |"); continue
    d = json.load(open(p))
    lat = {}
    # The overall latency is the worst kind's percentile (runs mix kinds).
    for k, v in d["kinds"].items():
        for q, x in v["latency"].items():
            lat[q] = max(lat.get(q, 0), x)
    check = "—" if not d["scenario"] else ("exact" if not d["checks_failed"] else "FAILED: " + "; ".join(d["checks_failed"]))
    flag = " (client-bound)" if d["client_bound"] else ""
    print(f"| {name} | {d['completed']} | {d['errors']} | {d['achieved_rate']:.0f} | {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | {lat['p999_ms']:.3f} | {lat['max_ms']:.3f} | {100*d['client_cpu_share']:.0f}%{flag} | {check} |")
PY
