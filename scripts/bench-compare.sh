#!/usr/bin/env bash
# Old against new: the server built from git revision REV (default: the commit
# before the current branch's first change, given as REV) and the working tree's,
# alternating round by round on the same loads, so drift in this VM hits both
# alike. Loads (LOADS, default all four): health: GET /health (wrk -c64); event:
# POST /event (load-client, 64 connections); counter: POST /api/v1/counter
# (load-client, 64 connections); sample: POST /api/sample (load-client, 16
# connections: one group-commit batch in flight); read: GET /api/sample/{id} with
# the read cache off (load-client, 64 connections: a database read each). Each
# server runs alone on
# CPU 1 with 1 worker, the load on CPU 0. Reports req/s and the server's CPU time
# per request (median of ROUNDS) and new over old. Writes bench-results/compare.md.
#
#   scripts/bench-compare.sh REV     e.g. scripts/bench-compare.sh afe9ce6
set -euo pipefail
# Before bench-lib.sh, which would set its own default.
DURATION=${DURATION:-5s}
source "$(dirname "$0")/bench-lib.sh"
need wrk wrk
cd "$ROOT"
rev=${1:?usage: bench-compare.sh REV}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18095}
build_release
old_dir=.ref/rev-$rev
if [ ! -x "$old_dir/target/release/server" ]; then
    rm -rf "$old_dir/src"
    mkdir -p "$old_dir"
    git worktree add --detach "$old_dir/src" "$rev" >/dev/null 2>&1 || git -C "$old_dir/src" checkout -q --detach "$rev"
    cargo build --release -q --manifest-path "$old_dir/src/Cargo.toml" --target-dir "$old_dir/target" -p crudrs --bin server
    git worktree remove --force "$old_dir/src" >/dev/null 2>&1 || true
fi
bins=("$old_dir/target/release/server" target/release/server)
names=(old new)
tmp=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # measure BIN LOAD: prints "req/s us-per-request"
    local url b a n rate extra=()
    url=$(fresh_db crudrs_bench_compare)
    [ "$2" = read ] && extra=(--read-cache-bytes 0)
    taskset -c "$SERVER_CPU" "$1" 1 --port "$PORT" --database-url "$url" --data-dir "$tmp/data" --no-stats "${extra[@]}" \
        >/dev/null 2>"$tmp/server.log" &
    srv=$!
    wait_port "$PORT"
    b=$(ticks "$srv")
    case $2 in
    health)
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$PORT/health")
        a=$(ticks "$srv")
        rate=$(echo "$out" | rps)
        n=$(echo "$out" | awk '/requests in/ {print $1}')
        ;;
    event | counter | sample | read)
        local args=(--mix event) conns=64
        [ "$2" = counter ] && args=(--scenario counter)
        [ "$2" = sample ] && args=(--mix sample) conns=16
        [ "$2" = read ] && args=(--mix get-sample)
        taskset -c "$LOAD_CPU" target/release/load-client 1 "$conns" "${args[@]}" --duration "$DURATION" \
            --target "http://127.0.0.1:$PORT" --quiet --json "$tmp/r.json" >/dev/null || echo "errors ($2)" >&2
        a=$(ticks "$srv")
        read -r rate n <<<"$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['achieved_rate']), d['completed'])" "$tmp/r.json")"
        ;;
    esac
    kill "$srv"; wait "$srv" 2>/dev/null || true; srv=
    echo "$rate $(awk -v t=$((a - b)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')"
}
median() { sort -n -k"$2" "$1" | awk -v k="$2" '{a[NR]=$k} END {print a[int((NR+1)/2)]}'; }

{
    echo "Old ($rev) against new (working tree), 1 worker on CPU $SERVER_CPU, load on CPU $LOAD_CPU, $DURATION x $ROUNDS rounds alternating (median)"
    echo
    echo "| load | old req/s | new req/s | new/old | old CPU us/req | new CPU us/req | old/new CPU |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for load in ${LOADS:-health event counter sample read}; do
        : >"$tmp/old" && : >"$tmp/new"
        for _ in $(seq 1 "$ROUNDS"); do
            for i in 0 1; do measure "${bins[$i]}" "$load" >>"$tmp/${names[$i]}"; done
        done
        or=$(median "$tmp/old" 1) nr=$(median "$tmp/new" 1) oc=$(median "$tmp/old" 2) nc=$(median "$tmp/new" 2)
        echo "| $load | $or | $nr | $(awk -v a="$nr" -v b="$or" 'BEGIN {printf "%.2f", a / b}') | $oc | $nc | $(awk -v a="$oc" -v b="$nc" 'BEGIN {printf "%.2f", a / b}') |"
    done
} | tee "$RESULTS/compare.md"
