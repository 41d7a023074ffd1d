#!/usr/bin/env bash
# The project-local Python virtualenv (.venv, git-ignored) with the test helpers of
# tests/requirements.txt from PyPI. Creates or updates it when needed (installing
# Debian's python3-venv if the venv module is missing), then prints its python.
# Safe to run from several tests at once (one flock).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv
REQ=$ROOT/tests/requirements.txt
mkdir -p "$VENV"
exec 9>"$VENV.lock"
flock 9
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/.installed"; then
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
    cp "$REQ" "$VENV/.installed"
fi
echo "$VENV/bin/python"
