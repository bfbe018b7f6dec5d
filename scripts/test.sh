#!/usr/bin/env bash
# Install everything into .venv and run the test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
