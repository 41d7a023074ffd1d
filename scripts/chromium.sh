#!/usr/bin/env bash
# Debian's Chromium and its WebDriver, for the dashboard's browser test: installed
# with apt-get when missing (like PostgreSQL). Prints the chromedriver path.
# Safe to run from several tests at once (one flock).
set -euo pipefail
exec 9>/tmp/crudrs-chromium.lock
flock 9
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium chromium-driver >&2
fi
command -v chromedriver
