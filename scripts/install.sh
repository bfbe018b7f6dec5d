#!/usr/bin/env bash
# Create .venv at the repository root (if needed) and install the project and its pinned requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
step() { echo "install: $1 ($SECONDS s so far)"; }

# uv resolves and unpacks in parallel: pip takes close to an hour for torch's 5.5 GB of CUDA wheels
# on a slow index, uv minutes. uv does not read pip's configuration, so the machine's local indexes,
# wheel folders and constraints are passed on from it; with several indexes, the best version
# wins wherever it lies (a local index may hold a release the main index also serves).
# --no-compile: Python compiles the modules it imports on first use instead of all of torch now.
pip_conf() { .venv/bin/python -m pip config get "global.$1" 2>/dev/null || true; }
UV=(.venv/bin/python -m uv pip install --quiet --python .venv/bin/python --no-compile
    --index-strategy unsafe-best-match)
for url in $(pip_conf extra-index-url); do UV+=(--extra-index-url "$url"); done
for dir in $(pip_conf find-links); do UV+=(--find-links "$dir"); done
for file in $(pip_conf constraint); do UV+=(--constraint "$file"); done
PIP=(.venv/bin/python -m pip install --quiet --no-compile)

# What the tests run against, from Debian's packages: the PACS (Orthanc with its DICOMweb plugin) and a
# browser for the OHIF that MONAI Label serves (Chromium and its WebDriver). Needs root or sudo; where
# neither is possible the tests that need them say so and are skipped, except in CI.
SYSTEM_PACKAGES=(orthanc orthanc-dicomweb chromium chromium-driver)
missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  step "system packages: ${missing[*]}"
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
  if ! { "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
         { "${SUDO[@]}" apt-get update -q >/dev/null && \
           "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }; }; then
    echo "install: could not install ${missing[*]} (apt-get as root); the PACS and OHIF tests will be skipped"
  fi
fi

step "uv"
if "${PIP[@]}" "uv==0.13.9"; then
    INSTALL=("${UV[@]}")
else
    echo "install: uv could not be installed; falling back to pip (much slower)"
    INSTALL=("${PIP[@]}")
fi
step "requirements"
"${INSTALL[@]}" -r requirements.txt
step "monailabel"
"${INSTALL[@]}" --no-deps -r requirements-monailabel.txt
# MONAI Label ships its `monailabel` command as a wheel script (Project-MONAI/MONAILabel setup.py:
# scripts=["monailabel/scripts/monailabel", ...]), which uv leaves in site-packages; the command its
# documentation uses is placed here, running the server module with this environment's Python.
if [ ! -x .venv/bin/monailabel ]; then
  printf '#!/bin/sh\nexec "$(dirname "$0")/python" -m monailabel.main "$@"\n' > .venv/bin/monailabel
  chmod +x .venv/bin/monailabel
fi
step "the project"
"${INSTALL[@]}" --no-deps -e .
step "done"
