#!/usr/bin/env bash
# Install amad_fast and what it needs into the current Python environment.
#   bash scripts/install.sh [EXTRAS]      e.g. EXTRAS=test
# torch: kept if one is already installed (a CUDA build stays); else torch==2.13.0 (a CPU
# build on the project's machines). The extension builds against that torch, hence
# --no-build-isolation (an isolated build would fetch a second, CUDA, torch just to build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install "torch==2.13.0"
fi
"$PY" -m pip install "triton>=3.2" setuptools wheel
"$PY" -m pip install --no-build-isolation ".${extras:+[$extras]}"
PYTHONSAFEPATH=1 "$PY" -c "import amad_fast; print('amad_fast', amad_fast.__version__); [print(' ', s) for s in amad_fast.available_backends().values()]"
