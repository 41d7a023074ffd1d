#!/usr/bin/env bash
# make cluster [N=3] / make cluster-stop / make cluster-reload: N crudrs instances on
# one PostgreSQL (the project-local cluster unless DATABASE_URL is set) behind
# HAProxy (Debian's, installed when missing). State and logs go to .cluster/
# (git-ignored). Instances listen on BASE_PORT.. (default 8101), HAProxy on
# PUBLIC_PORT (default 8000); they share one data directory, so a file uploaded
# through one is served by all. Extra server flags: ARGS="--rate-limits off".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DIR=$ROOT/.cluster
N=${N:-3}
PUBLIC_PORT=${PUBLIC_PORT:-8000}
BASE_PORT=${BASE_PORT:-8101}

stop() {
    if [ -f "$DIR/haproxy.pid" ]; then
        kill "$(cat "$DIR/haproxy.pid")" 2>/dev/null || true
        rm -f "$DIR/haproxy.pid"
    fi
    if [ -f "$DIR/pids" ]; then
        # SIGTERM: each instance finishes its in-flight requests first.
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$DIR/pids"
        while read -r pid; do
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        done <"$DIR/pids"
        rm -f "$DIR/pids"
    fi
}

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on port $1" >&2
    return 1
}

case ${1:-start} in
stop)
    stop
    echo "cluster stopped"
    ;;
reload)
    # A new HAProxy takes over the port; the old one finishes its connections.
    haproxy=$(scripts/haproxy.sh)
    "$haproxy" -f "$DIR/haproxy.cfg" -p "$DIR/haproxy.pid" -D -sf "$(cat "$DIR/haproxy.pid")"
    echo "haproxy reloaded"
    ;;
start)
    stop
    cargo build --release -q --bin server
    url=${DATABASE_URL:-$(scripts/with-db.sh printenv DATABASE_URL)}
    haproxy=$(scripts/haproxy.sh)
    mkdir -p "$DIR/data"
    ports=()
    for i in $(seq 1 "$N"); do
        port=$((BASE_PORT + i - 1))
        ports+=("$port")
        # shellcheck disable=SC2086
        target/release/server --port "$port" --database-url "$url" --instance-id "crudrs-$i" \
            --trusted-proxies 127.0.0.1 --shared-stats --shared-limits --drain-delay 2s --data-dir "$DIR/data" --no-stats ${ARGS:-} \
            >"$DIR/crudrs-$i.log" 2>&1 &
        echo $! >>"$DIR/pids"
    done
    for port in "${ports[@]}"; do wait_port "$port"; done
    scripts/haproxy.sh config "$PUBLIC_PORT" "${ports[@]}" >"$DIR/haproxy.cfg"
    "$haproxy" -c -q -f "$DIR/haproxy.cfg"
    "$haproxy" -f "$DIR/haproxy.cfg" -p "$DIR/haproxy.pid" -D
    wait_port "$PUBLIC_PORT"
    echo "cluster: http://127.0.0.1:$PUBLIC_PORT ($N instances on ports ${ports[*]}; logs and config in .cluster/)"
    ;;
*)
    echo "usage: $0 start|stop|reload" >&2
    exit 2
    ;;
esac
