# Shared by the bench scripts: tool installation, CPU pinning, result folder.
# The server runs on CPU 1 and the load on CPU 0 (this machine has two cores).
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DURATION=${DURATION:-10s}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${RESULTS:-$ROOT/bench-results}
mkdir -p "$RESULTS"
# Benchmarks measure the server's work from one client address, far past the
# anonymous tier's quota: rate limiting is off unless a script turns it on
# (bench-limits.sh measures what it costs).
export RATE_LIMITS=${RATE_LIMITS:-off} LOGIN_LIMITS=${LOGIN_LIMITS:-off}

need() { # need COMMAND PACKAGE: install the Debian package when the command is missing
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "installing $2 for $1" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq "$2" >&2
    fi
}

wait_port() { # wait_port PORT: until something accepts on 127.0.0.1:PORT
    for _ in $(seq 1 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on port $1" >&2
    return 1
}

rps() { awk '/Requests\/sec:/ {print $2}'; }

# The connection string of the project's database (started if need be).
admin_url() { "$ROOT/scripts/with-db.sh" printenv DATABASE_URL; }

fresh_db() { # fresh_db NAME: drop and recreate database NAME; prints its connection string
    local admin
    admin=$(admin_url)
    psql "$admin" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null 2>&1
    echo "$admin dbname=$1"
}

# Builds the release binaries. Always through cargo (a no-op when they are up to
# date), so a benchmark never measures a binary older than the sources.
build_release() { (cd "$ROOT" && cargo build --release --workspace -q); }

ticks() { # ticks "PID...": user+system CPU clock ticks of the processes still running, summed
    local t=0 p
    for p in $1; do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

wrk_cpu() { # wrk_cpu PORT "PID..." PATH: "req/s cpu-us-per-request" of one wrk -t1 -c64 run on the load CPU
    local b a out
    b=$(ticks "$2")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$1$3")
    a=$(ticks "$2")
    echo "$out" | awk -v t=$((a - b)) -v hz="$(getconf CLK_TCK)" '
        /Requests\/sec:/ {r = $2} /requests in/ {n = $1}
        /Non-2xx/ {print "non-2xx answers: " $0 > "/dev/stderr"}
        END {printf "%.0f %.3f\n", r, t / hz * 1e6 / n}'
}

# pin_database CPUS: moves the project-local PostgreSQL (postmaster and every
# process it has forked; backends forked later inherit it) onto CPUS, so that the
# server and its database are the system under test on the server CPU and the
# load CPU runs the load alone. A database given by DATABASE_URL is not ours to
# move: it is left alone, and said so; PIN_DATABASE=no leaves the project-local
# one alone too. The caller's EXIT trap calls unpin_database.
pin_database() {
    local pidfile=${PG_DIR:-$ROOT/.pg}/data/postmaster.pid p
    DATABASE_PINNED=no
    if [ "${PIN_DATABASE:-yes}" = no ] || [ -n "${DATABASE_URL:-}" ] || [ ! -r "$pidfile" ]; then
        echo "PostgreSQL not pinned: it runs wherever the kernel puts it" >&2
        return 0
    fi
    DATABASE_PM=$(head -n1 "$pidfile")
    for p in "$DATABASE_PM" $(pgrep -P "$DATABASE_PM"); do taskset -a -p -c "$1" "$p" >/dev/null 2>&1 || true; done
    DATABASE_PINNED=yes
}

unpin_database() { # unpin_database: gives the pinned PostgreSQL every CPU back
    local p
    [ "${DATABASE_PINNED:-no}" = yes ] || return 0
    for p in "$DATABASE_PM" $(pgrep -P "$DATABASE_PM"); do
        taskset -a -p -c "0-$(($(nproc) - 1))" "$p" >/dev/null 2>&1 || true
    done
    DATABASE_PINNED=no
}

start_one_worker() { # start_one_worker DB_URL DIR PORT [FLAGS]: a 1-worker server on the server CPU; prints its pid
    local url=$1 dir=$2 port=$3
    shift 3
    taskset -c "$SERVER_CPU" "$ROOT/target/release/server" 1 --port "$port" --database-url "$url" \
        --data-dir "$dir/data-$port" --no-stats "$@" >/dev/null 2>"$dir/server-$port.log" &
    echo $!
}
