#!/usr/bin/env bash
# Install memlane with its CLI and the bundled local embedding model into ./.venv.
# CPU-only: torch is pinned to the CPU build first, so nothing pulls CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "memlane needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sqlite3; sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(x)")' 2>/dev/null; then
    echo "this Python's sqlite3 lacks FTS5; install a Python built with a current SQLite" >&2
    exit 1
fi

# The tests use a real Redis on 127.0.0.1:6379; they start redis-server if none answers.
if ! command -v redis-server >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq redis-server >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
    else
        echo "note: no Redis found; the tests need redis-server (apt-get install redis-server)" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# The dashboard's end-to-end test drives headless Chromium (Debian's chromium and
# chromium-driver packages; nothing is downloaded by a test tool).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
    else
        echo "note: the dashboard browser test needs Debian's chromium and chromium-driver" >&2
    fi
fi
echo "memlane installed in $(pwd)/.venv ($(.venv/bin/memlane --version))"
