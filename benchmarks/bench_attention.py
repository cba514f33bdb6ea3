"""AutoMask attention throughput per backend against its baselines (the attention part of
``amad-fast bench``). Every option of ``amad-fast bench`` applies, e.g.

    python benchmarks/bench_attention.py --quick
    python benchmarks/bench_attention.py --out-dir benchmarks/results          # full CPU/GPU sweep
"""
import os
import sys

try:
    from amad_fast.bench.command import main
except ImportError:  # run from a source checkout that is not installed: use the tree beside this file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from amad_fast.bench.command import main

if __name__ == "__main__":
    sys.exit(main(["--parts", "attention", *sys.argv[1:]]))
