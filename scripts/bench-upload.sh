#!/usr/bin/env bash
# Upload throughput: 64 KiB and 8 MiB bodies at 1 and 16 clients (examples/upload_bench),
# server on CPU 1 with 16 workers and its data directory on this disk, client on
# CPU 0; beside the reference of dd (conv=fsync) + md5sum of the same bytes.
# Writes bench-results/upload.md.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
cd "$ROOT"
cargo build --release --example upload_bench -q
build_release
SECS=${SECS:-5}
PORT_RS=${PORT_RS:-18083}
url=$(fresh_db crudrs_bench_upload)
work=$(mktemp -d -p "$ROOT" .bench-upload.XXXX)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
taskset -c "$SERVER_CPU" target/release/server 16 --port "$PORT_RS" --database-url "$url" \
    --data-dir "$work/data" --no-stats >/dev/null 2>"$work/server.log" &
srv=$!
wait_port "$PORT_RS"
token=$(curl -sf -H 'Content-Type: application/json' -d '{"username":"bench","password":"bench-password","email":"bench@example.org"}' \
    "http://127.0.0.1:$PORT_RS/auth/create" | sed -E 's/.*"api_key":"([0-9a-f]+)".*/\1/')

rows=""
for size in 65536 8388608; do
    for clients in 1 16; do
        line=$(taskset -c "$LOAD_CPU" target/release/examples/upload_bench "127.0.0.1:$PORT_RS" "$token" "$size" "$clients" "$SECS")
        rows+="| $((size / 1024)) KiB | $clients | $(echo "$line" | awk '{print $1}') | $(echo "$line" | awk '{print $3}') |"$'\n'
    done
done
kill "$srv"; srv=

# Reference: the same work without HTTP, on the same disk: write with fsync, then hash.
ref() { # ref SIZE COUNT: files/s and MB/s for COUNT files of SIZE bytes
    local size=$1 count=$2 start end
    head -c "$size" /dev/urandom >"$work/src"
    start=$(date +%s.%N)
    for i in $(seq 1 "$count"); do
        dd if="$work/src" of="$work/ref-$i" bs=1M conv=fsync status=none
        md5sum "$work/ref-$i" >/dev/null
    done
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" -v n="$count" -v b="$size" \
        'BEGIN {t = e - s; printf "%.1f | %.1f", n / t, n * b / t / 1e6}'
    rm -f "$work"/ref-*
}
{
    echo "Uploads for ${SECS}s each (server on CPU $SERVER_CPU, 16 workers; client on CPU $LOAD_CPU; data on $(df --output=source "$ROOT" | tail -1))"
    echo
    echo "| body | clients | uploads/s | MB/s |"
    echo "|---|---:|---:|---:|"
    printf '%s' "$rows"
    echo
    echo "Reference, one file at a time, no HTTP: dd conv=fsync + md5sum (includes two process starts per file)"
    echo
    echo "| body | files/s | MB/s |"
    echo "|---|---:|---:|"
    echo "| 64 KiB | $(ref 65536 200) |"
    echo "| 8 MiB | $(ref 8388608 20) |"
} | tee "$RESULTS/upload.md"
