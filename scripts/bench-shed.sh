#!/usr/bin/env bash
# Load shedding under overload: GET /api/sample/{id} as a database read (the read
# cache off: a cached read is as cheap as /health and no longer what this bench is
# about) on crudrs on CPU 1 together with its PostgreSQL (pin_database: the system
# under test on one CPU, the open-model load-client alone on CPU 0; PIN_DATABASE=no
# leaves PostgreSQL to the kernel). The client opens 1024 connections, PIPELINE
# (default 8) requests deep each. For each worker count in SHED_WORKERS (default
# "4 1"): first the server's capacity, the most it completes when it never waits
# for work (closed model, the same 1024 connections 8 deep); then offered 1x, 2x and
# 4x that rate, with shedding on (the defaults) and off (--shed-target 0). Reports
# goodput (2xx per second) against the peak goodput of that worker count, refusals,
# the p99 of accepted requests (from their intended send time: no coordinated
# omission, and from when they were written, which leaves the client's own lag
# out), and how many requests each pickup of a connection answered (from
# /metrics: answers over queue pickups; the client's window caps it at PIPELINE).
# ROUNDS rounds (default 3), each with its own capacity and peak; the table gives
# the medians, then every run. MIX=list-samples loads GET /api/samples?limit=20
# instead (a page of 20 samples, about three times the work of one read; written to
# bench-results/shed-list.md): how the ratio moves with the work a refusal saves.
# Last, what a refusal may cost: the budget a 0.9 goodput leaves per refusal,
# against what one answer costs at the same client shape the do-nothing refuser
# (load-client/examples/refuser.rs), the same refuser with crudrs's thread model
# (--handoff) and crudrs's GET /health (the report's last table).
#
# Why the database on the server's CPU: left to the kernel, PostgreSQL's backends
# ran on both CPUs and shared the load CPU with the client, whose own work triples
# with shedding at 4x (it reads every refusal); back-to-back runs of one
# configuration differed by up to 30%. Pinned, seven back-to-back runs without
# shedding stayed within 5% of each other (the VM's drift from minute to minute
# remains, hence rounds).
#
# Why 4 workers first: a worker blocks on each PostgreSQL round trip, so one
# worker serves nothing else during a query, and every refusal takes the only
# worker away from the queries; several workers overlap them. A route bound by
# database reads is run with more workers than CPUs. Writes bench-results/shed.md.
set -euo pipefail
# Before bench-lib.sh, which would set its own default.
DURATION=${DURATION:-6s}
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
PIPELINE=${PIPELINE:-8}
MIX=${MIX:-get-sample}
case $MIX in
get-sample) what="GET /api/sample/{id} (a database read: read cache off)" report=shed.md ;;
list-samples) what="GET /api/samples?limit=20 (a page of 20 samples: read cache off)" report=shed-list.md ;;
*) echo "MIX: get-sample or list-samples" >&2; exit 2 ;;
esac
build_release
cargo build --release -q -p load-client --example refuser
PORT_RS=${PORT_RS:-18089}
PORT_REF=${PORT_REF:-18092}
url=$(fresh_db crudrs_bench_shed)
tmp=$(mktemp -d)
cleanup() {
    [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true
    [ -n "${ref:-}" ] && kill "$ref" 2>/dev/null || true
    unpin_database
    rm -rf "$tmp"
}
trap cleanup EXIT
pin_database "$SERVER_CPU"

start() {
    taskset -c "$SERVER_CPU" target/release/server "$workers" --read-cache-bytes 0 --port "$PORT_RS" --database-url "$url" --data-dir "$tmp/data" \
        --no-stats "$@" >/dev/null 2>"$tmp/server.log" &
    srv=$!
    wait_port "$PORT_RS"
}
stop() { kill "$srv"; wait "$srv" 2>/dev/null || true; srv=; }
# pickups: how many times a worker has picked a connection off the task queue
pickups() { curl -s "http://127.0.0.1:$PORT_RS/metrics" | awk '/^crudrs_queue_wait_seconds_count/ {print $2}'; }
# load ARGS...: "goodput refused-per-second ok-p99-ms ok-p99-from-send-ms client-cpu answers-per-pickup" of one run
load() {
    local p0 p1
    p0=$(pickups)
    taskset -c "$LOAD_CPU" target/release/load-client "$@" --mix "$MIX" --setup-users 20 --duration "$DURATION" \
        --target "http://127.0.0.1:$PORT_RS" --quiet --json "$tmp/r.json" >/dev/null || true
    p1=$(pickups)
    python3 -c "
import json, sys
d = json.load(open(sys.argv[1])); k = d['kinds'][sys.argv[4]]; e = d['elapsed_s']
per_pickup = k['count'] / max(float(sys.argv[3]) - float(sys.argv[2]), 1)
print(round(k['ok'] / e), round((k['count'] - k['ok']) / e), k['ok_p99_ms'], k['ok_sent_p99_ms'],
      round(d['client_cpu_share'] * 100), round(per_pickup, 1))" "$tmp/r.json" "$p0" "$p1" "$MIX"
}

# busy: "busy idle" clock ticks of the server CPU so far (idle and iowait are idle)
busy() { awk -v c="cpu$SERVER_CPU" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }
# per_answer PORT: "answers-per-second µs-of-the-server-CPU-per-answer" of one closed-model run of
# GET /health against PORT, the same 1024 connections PIPELINE deep (whatever the status)
per_answer() {
    local b0 i0 b1 i1
    read -r b0 i0 <<<"$(busy)"
    taskset -c "$LOAD_CPU" target/release/load-client 2 512 --pipeline "$PIPELINE" --mix health --duration "$DURATION" \
        --target "http://127.0.0.1:$1" --quiet --json "$tmp/ref.json" >/dev/null || true
    read -r b1 i1 <<<"$(busy)"
    python3 -c "
import json, sys
d = json.load(open(sys.argv[1])); n = d['kinds']['health']['count'] / d['elapsed_s']
b, i = int(sys.argv[2]), int(sys.argv[3])
print(round(n), round(b / (b + i) / n * 1e6, 2))" "$tmp/ref.json" $((b1 - b0)) $((i1 - i0))
}

ROUNDS=${ROUNDS:-3}
: >"$tmp/all"
for round in $(seq 1 "$ROUNDS"); do
    for workers in ${SHED_WORKERS:-4 1}; do
        start --shed-target 0
        read -r capacity _ <<<"$(load 2 512 --pipeline 8)"
        stop
        peak=$capacity
        : >"$tmp/runs"
        for mult in 1 2 4; do
            for mode in on off; do
                if [ "$mode" = on ]; then start; else start --shed-target 0; fi
                read -r good refused p99 sent_p99 client per_pickup <<<"$(load 2 512 --pipeline "$PIPELINE" --rate $((capacity * mult)))"
                stop
                [ "$good" -gt "$peak" ] && peak=$good
                echo "$mult $mode $good $refused $p99 $sent_p99 $client $per_pickup" >>"$tmp/runs"
            done
        done
        # Each run against the peak of its own round: rounds drift apart on this VM.
        awk -v r="$round" -v w="$workers" -v c="$capacity" -v p="$peak" \
            '{printf "%s %s %s %s %s %s %.2f %s %s %s %s %s\n", r, w, c, $1, $2, $3, $3 / p, $4, $5, $6, $7, $8}' \
            "$tmp/runs" >>"$tmp/all"
    done
done
# The references: what one answer costs on this machine at this client shape, with the
# server CPU given to nothing else. The do-nothing refuser (load-client/examples/refuser.rs:
# reads, finds head ends, writes canned 503s) is the least any server pays that reads and
# writes each connection on its own; with --handoff it runs crudrs's thread model (a
# poller thread queues ready connections for a worker thread); crudrs's GET /health is
# its own cheapest answer.
: >"$tmp/refs"
refuse() { # refuse VAR [--handoff]: sets VAR to the refuser's µs per answer
    local var=$1
    shift
    taskset -c "$SERVER_CPU" target/release/examples/refuser "$PORT_REF" "$@" &
    ref=$!
    wait_port "$PORT_REF"
    read -r _ "${var?}" <<<"$(per_answer "$PORT_REF")"
    kill "$ref"
    wait "$ref" 2>/dev/null || true
    ref=
}
for round in $(seq 1 "$ROUNDS"); do
    refuse alone_us
    refuse handoff_us --handoff
    workers=1
    start
    read -r _ health_us <<<"$(per_answer "$PORT_RS")"
    stop
    echo "$round $alone_us $handoff_us $health_us" >>"$tmp/refs"
done

{
    echo "$what under overload, $DURATION per run, $ROUNDS rounds (crudrs on CPU $SERVER_CPU, PostgreSQL pinned there too: $DATABASE_PINNED; open-model load-client on CPU $LOAD_CPU, 1024 connections x $PIPELINE deep)"
    echo
    echo "Capacity: closed model, 1024 connections x 8 deep (the most the server completes when it never waits for"
    echo "work), measured at the start of each round; offered rates are multiples of it."
    echo "Peak: the highest goodput of any run of that round and worker count (with shedding off it comes from deep"
    echo "pipelines behind a queue seconds long). p99 from send: the same answers timed from when the client wrote"
    echo "them, without the client's own schedule lag (the part that is the server's). Answers per pickup: requests"
    echo "answered each time a worker took a connection off the queue (the client's window caps it at $PIPELINE)."
    echo
    echo "Medians over the rounds:"
    echo
    echo "| workers | offered | shedding | goodput req/s | goodput / peak | refused (503) req/s | p99 accepted ms | p99 from send ms | answers per pickup |"
    echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    python3 - "$tmp/all" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
keys = []
for r in rows:
    k = (r[1], r[3], r[4])
    if k not in keys:
        keys.append(k)
for w, m, mode in keys:
    sel = [r for r in rows if (r[1], r[3], r[4]) == (w, m, mode)]
    med = lambda i, f=float: statistics.median(f(r[i]) for r in sel)
    print(f"| {w} | {m}x | {mode} | {med(5):.0f} | {med(6):.2f} | {med(7):.0f} | {med(8):.1f} | {med(9):.1f} | {med(11):.1f} |")
PY
    echo
    echo "Every run:"
    echo
    echo "| round | workers | capacity req/s | offered | shedding | goodput req/s | goodput / peak | refused (503) req/s | p99 accepted ms | p99 from send ms | client CPU % | answers per pickup |"
    echo "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    awk '{printf "| %s | %s | %s | %sx | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12}' "$tmp/all"
    echo
    echo "What a refusal may cost. At capacity the server CPU is saturated, so a read costs R = 1 / capacity of it."
    echo "Offered 4x and serving g of capacity, the CPU does g reads and 4 - g refusals in the time of one read:"
    echo "g R + (4 - g) c = R, so a refusal costs c = R (1 - g) / (4 - g), and 0.9 allows c = R / 31 (the budget)."
    echo "'A refusal at 4x' is that c for the median g of the 4x runs with shedding. The references, measured in this"
    echo "run (closed model, 1024 connections x $PIPELINE deep, GET /health, nothing else on CPU $SERVER_CPU; its busy time"
    echo "over the answers; medians of $ROUNDS runs): the do-nothing refuser (load-client/examples/refuser.rs: reads,"
    echo "finds where heads end, writes canned 503s), the least a server pays that reads and writes each connection"
    echo "on its own; the same with crudrs's thread model (--handoff: a poller thread queues ready connections for a"
    echo "worker thread); and crudrs's own cheapest answer (1 worker)."
    echo
    echo "| workers | R: a read, us | budget for 0.9: R / 31, us | a refusal at 4x, us (from g) | refuser, one thread, us per answer | refuser, poller + worker, us per answer | crudrs GET /health, us per answer |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    python3 - "$tmp/all" "$tmp/refs" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
refs = [l.split() for l in open(sys.argv[2]) if l.strip()]
alone, handoff, health = (statistics.median(float(r[i]) for r in refs) for i in (1, 2, 3))
for w in dict.fromkeys(r[1] for r in rows):
    caps = {r[0]: float(r[2]) for r in rows if r[1] == w}
    R = 1e6 / statistics.median(caps.values())
    g = statistics.median(float(r[5]) / caps[r[0]] for r in rows if r[1] == w and r[3] == "4" and r[4] == "on")
    c = R * (1 - g) / (4 - g)
    print(f"| {w} | {R:.1f} | {R / 31:.2f} | {c:.2f} (g = {g:.2f}) | {alone:.2f} | {handoff:.2f} | {health:.2f} |")
PY
} | tee "$RESULTS/$report"
