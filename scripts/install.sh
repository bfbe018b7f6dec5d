#!/usr/bin/env bash
# Create .venv at the repository root (if needed) and install the project and its pinned requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# --no-compile: byte-compiling every module of torch and its CUDA libraries at install costs minutes of
# CPU; Python compiles the modules it imports on first use instead. Python 3.11's own pip (23.2) does
# editable installs of pyproject projects, so pip itself is not upgraded (minutes on a slow network).
PIP=(.venv/bin/python -m pip install --quiet --no-compile)
step() { echo "install: $1 ($SECONDS s so far)"; }
step "requirements"
"${PIP[@]}" -r requirements.txt
step "monailabel"
"${PIP[@]}" --no-deps -r requirements-monailabel.txt
step "the project"
"${PIP[@]}" --no-deps -e .
step "done"
