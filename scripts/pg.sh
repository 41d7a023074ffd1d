#!/usr/bin/env bash
# Project-local PostgreSQL: one cluster in a folder of ours, reachable only on a
# unix socket inside that folder, so it never collides with another server.
#
#   scripts/pg.sh start DIR PORT   initdb if needed, start, create db "crudrs"; prints the URL
#   scripts/pg.sh stop DIR         stop (fast mode); no error when not running
#   scripts/pg.sh url DIR PORT     print the connection string only
#
# PostgreSQL refuses to run as root, so as root every server command runs as the
# `postgres` system user (created by Debian's package). When no binaries exist the
# `postgresql` package is installed with apt-get; nothing else is installed.
set -euo pipefail

cmd=${1:?usage: pg.sh start|stop|url DIR [PORT]}
dir=$(realpath -m "${2:?missing DIR}")
port=${3:-54329}
sock="$dir/sock"

pg_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    return 1
}

ensure_binaries() {
    if ! pg_bin >/dev/null; then
        echo "pg.sh: no PostgreSQL binaries; installing the postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
    fi
    BIN=$(pg_bin) || { echo "pg.sh: PostgreSQL binaries still missing" >&2; exit 1; }
}

# Runs a server-side command as the cluster owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url() { echo "host=$sock port=$port user=postgres dbname=crudrs"; }

case "$cmd" in
start)
    ensure_binaries
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if [ ! -s "$dir/data/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_owner mkdir -p "$sock"
    if ! as_owner "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
            -o "-c listen_addresses='' -c unix_socket_directories='$sock' -p $port \
                -c max_connections=300 -c shared_buffers=256MB" >/dev/null ||
            { tail -20 "$dir/server.log" >&2; exit 1; }
    fi
    if ! "$BIN/psql" -h "$sock" -p "$port" -U postgres -d postgres -Atqc \
        "select 1 from pg_database where datname='crudrs'" | grep -q 1; then
        "$BIN/createdb" -h "$sock" -p "$port" -U postgres crudrs
    fi
    url
    ;;
stop)
    if BIN=$(pg_bin) && [ -s "$dir/data/PG_VERSION" ]; then
        as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
url)
    url
    ;;
*)
    echo "pg.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
