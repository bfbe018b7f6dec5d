#!/usr/bin/env bash
# Create .venv at the repository root (if needed) and install the project and its pinned requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# --no-compile: byte-compiling every module of torch and its CUDA libraries at install costs minutes of
# CPU; Python compiles the modules it imports on first use instead.
PIP=(.venv/bin/python -m pip install --quiet --no-compile)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -r requirements.txt
"${PIP[@]}" --no-deps -r requirements-monailabel.txt
"${PIP[@]}" --no-deps -e .
