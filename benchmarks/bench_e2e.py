"""AMAD end to end per backend: training steps/s and scoring windows/s at the default model size
(the e2e part of ``amad-fast bench``). Every option of ``amad-fast bench`` applies, e.g.

    python benchmarks/bench_e2e.py --e2e-batch 64
"""
import os
import sys

try:
    from amad_fast.bench.command import main
except ImportError:  # run from a source checkout that is not installed: use the tree beside this file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from amad_fast.bench.command import main

if __name__ == "__main__":
    sys.exit(main(["--parts", "e2e", *sys.argv[1:]]))
