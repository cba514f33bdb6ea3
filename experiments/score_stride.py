"""Stride between scoring windows, on development data only: ONE trained AMAD per seed, its test
series scored with windows every s steps (each step's squared errors and js weights averaged over
the windows covering it; s = L is spec §4's non-overlapping protocol), threshold-free metrics of
both scores. This is the table that chose ``score_stride=None`` (= L // 10).

    python experiments/score_stride.py --dataset omi-1 --seeds 0 1 2
    python experiments/score_stride.py --dataset "synthetic:length=4000,channels=6,seed=0,train_length=6000" \\
        --window-size 50 --train-stride 10 --epochs 4 --seeds 0 1 2 --name score_stride_synthetic
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (command_line, DATA, FREE_KEYS, AMADDetector, amad_terms, amad_variant, free_metrics, machine,  # noqa: E402
                    seed_summary, table, write_results)

from amad_fast.data import load_dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="a directory under the shared data, or a synthetic: spec")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--window-size", type=int, default=100)
    ap.add_argument("--train-stride", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--strides", type=int, nargs="+", default=None, help="default: L, L/2, L/5, L/10, L/20")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    L = args.window_size
    strides = args.strides or sorted({max(1, L // d) for d in (1, 2, 5, 10, 20)}, reverse=True)
    source = args.dataset if args.dataset.startswith("synthetic") else os.path.join(DATA, args.dataset)
    ds = load_dataset(source)
    params = dict(window_size=L, d_model=64, n_heads=4, n_layers=2, num_scales=4, d_ff=128, batch_size=32,
                  train_stride=args.train_stride, epochs=args.epochs, lr=1e-3, maxmin="exact", k=1.0, mu=0.1,
                  progress=False, backend="auto", error_norm="channel")
    per = {}  # (score, stride) -> list over seeds of metric dicts
    payload = {"args": vars(args), "params": params, "dataset": repr(ds), "seeds": {}}
    for seed in args.seeds:
        t0 = time.perf_counter()
        det = AMADDetector(seed=seed, **params).fit(ds.train)
        payload["seeds"][seed] = {"fit_seconds": time.perf_counter() - t0, "history": det.history_}
        for s in strides:
            _, te, secs = amad_terms(det, ds.train, ds.test, stride=s)
            for score in ("recon_js", "recon"):
                v = amad_variant(det, te, score, "channel")
                m = {**free_metrics(v, ds.test_labels), "test_forward_s": secs}
                per.setdefault((score, s), []).append(m)
        print(f"seed {seed} done", flush=True)
    rows = []
    for (score, s), ms in sorted(per.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        rows.append(seed_summary({"score": score, "score_stride": s, "windows per step": round(L / s, 1),
                                  "seeds": len(ms)}, ms))
    payload["rows"] = rows
    cols = ["score", "score_stride", "windows per step", "seeds", *FREE_KEYS, *(k + " per seed" for k in FREE_KEYS)]
    name = args.name or f"score_stride_{args.dataset.replace('-', '')}"
    cmd = command_line(__file__, argv)
    md = (f"# Stride between scoring windows on {args.dataset}\n\nCommand: `{cmd}`\n\n"
          f"Data: {ds!r}. One CPU-sized AMAD per seed ({params}); the test series is re-scored by the SAME "
          f"model with windows every `score_stride` steps; a step's per-channel squared errors and js "
          f"weights are averaged over the windows covering it (score_stride = L = {L} is spec §4's "
          "non-overlapping protocol). error_norm = channel. Threshold-free, point-wise metrics on the "
          "labelled test part; mean over seeds, per-seed values beside.\n\n" + table(rows, cols)
          + f"\nMachine: {machine()}\n")
    write_results(name, payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
