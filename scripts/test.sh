#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (real SQLite, the real local model).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
