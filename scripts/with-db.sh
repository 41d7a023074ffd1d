#!/usr/bin/env bash
# Runs a command with DATABASE_URL set. When DATABASE_URL is already set it is used
# as is and nothing is started; otherwise the project-local cluster under .pg/ is
# started (and created on first use) by scripts/pg.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${DATABASE_URL:-}" ]; then
    DATABASE_URL=$("$here/scripts/pg.sh" start "${PG_DIR:-$here/.pg}" "${PG_PORT:-54329}")
    export DATABASE_URL
fi
exec "$@"
