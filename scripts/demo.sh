#!/usr/bin/env bash
# README command 1: install everything, then train and evaluate AMAD on the built-in synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
# PYTHONSAFEPATH: run the installed package (with its compiled _C), not the source tree in cwd
PYTHONSAFEPATH=1 "$PY" -m amad_fast demo --out "${AMAD_DEMO_OUT:-runs/demo}"
