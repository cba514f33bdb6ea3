#!/usr/bin/env bash
# README command 2: install everything (with the test extras), then run the test suite against
# the installed package. PYTHONSAFEPATH keeps the source tree (which has no compiled _C) from
# shadowing the installed amad_fast; AMAD_FAST_REQUIRE_BACKENDS makes a backend that failed to
# build a test failure instead of a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
PY=${PYTHON:-python3}
export PYTHONSAFEPATH=1
export AMAD_FAST_REQUIRE_BACKENDS=${AMAD_FAST_REQUIRE_BACKENDS:-cpp,reference}
"$PY" -m pytest tests "$@"
