#!/usr/bin/env bash
# make test-api: Schemathesis (PyPI, in the project's .venv) against a running
# server and its own /openapi.json: every operation, positive and negative data,
# every check (server errors, status codes, content types, headers, response
# schemas, ...). The server runs on a fresh database with rate limits off (the
# run sends far more than the anonymous quota from one address) and an admin key
# for the protected operations. Exits non-zero on any failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
EXAMPLES=${EXAMPLES:-25}
PYTHON=$(scripts/py-venv.sh)
cargo build -q --bin server
admin=$(scripts/with-db.sh printenv DATABASE_URL)
db=crudrs_test_api
psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
tmp=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
RATE_LIMITS=off LOGIN_LIMITS=off ARGON2_MEMORY_KIB=8 ARGON2_ITERATIONS=1 \
    target/debug/server 2 --port 0 --database-url "$admin dbname=$db" --data-dir "$tmp/data" --no-stats \
    --create-admin schemathesis >"$tmp/out" 2>"$tmp/err" &
srv=$!
for _ in $(seq 1 100); do
    grep -q "key " "$tmp/out" 2>/dev/null && break
    sleep 0.1
done
url=$(grep -o 'http://[0-9.:]*' "$tmp/out" | head -1)
key=$(grep -o 'key [0-9a-f]*' "$tmp/out" | cut -d' ' -f2)
[ -n "$url" ] && [ -n "$key" ] || { echo "the server did not start:" >&2; cat "$tmp/err" >&2; exit 1; }
st="$(dirname "$PYTHON")/schemathesis"
run() { # run KEY [SCHEMATHESIS ARGS...]: one Schemathesis run with this bearer key
    local k=$1
    shift
    "$st" --config-file schemathesis.toml run "$url/openapi.json" \
        --checks all \
        --max-examples "$EXAMPLES" \
        --header "Authorization: Bearer $k" \
        --seed "${SEED:-1}" \
        --no-color "$@"
}
# Two operations change what every other one depends on: logout revokes the key
# the run uses, and forcing the database breaker open makes every database route
# answer 503. Each runs alone, after the others, with a key of its own.
echo "== every operation but logout and the breaker switch ($url, $EXAMPLES examples each)"
run "$key" --exclude-path /auth/logout --exclude-path /admin/api/breakers/database
echo "== the breaker switch"
run "$key" --include-path /admin/api/breakers/database
echo "== logout, with a user's key"
user=$(curl -s -X POST "$url/auth/create" -H 'Content-Type: application/json' \
    -d '{"username":"schemathesis_user","password":"correct horse","email":"st@example.org"}' |
    sed -n 's/.*"api_key":"\([0-9a-f]*\)".*/\1/p')
run "$user" --include-path /auth/logout
