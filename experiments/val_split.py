"""Where the validation split sits (``val_split="tail"`` vs ``"blocks"``), on development data only.

The Anomaly-Transformer layout (SMAP, MSL, SMD) concatenates many entities' training parts into one
training series and their test parts, in the same order, into one test series. Holding out the
tail of the training series then holds out the last entities entirely: the model never trains on
them, yet must score their test parts. ``"blocks"`` holds out the end of each of many short blocks
instead. Compared here, 3 seeds each, with the shipped scoring, on: omi-1 (one entity), the
built-in synthetic benchmark (one entity) and a multi-entity synthetic benchmark built the same
way as the Anomaly-Transformer layout (K synthetic entities, each with its own periods, mixing and
offsets, trains and tests concatenated in the same order). SMAP is not used to choose.

    python experiments/val_split.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (command_line, FREE_KEYS, AMADDetector, dev_benchmarks, free_metrics, machine, seed_summary,  # noqa: E402
                    table, write_results)

SIZE = dict(d_model=64, n_heads=4, n_layers=2, num_scales=4, d_ff=128, batch_size=32, lr=1e-3,
            maxmin="exact", k=1.0, mu=0.1, progress=False, backend="auto")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--entities", type=int, default=8)
    ap.add_argument("--name", default="val_split")
    args = ap.parse_args(argv)
    rows, runs = [], []
    for bname, ds, size in dev_benchmarks(args.entities):
        for split in ("tail", "blocks"):
            ms = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                det = AMADDetector(**SIZE, **size, val_split=split, seed=seed).fit(ds.train)
                fit_s = time.perf_counter() - t0
                s = det.decision_function(ds.test)
                m = {**free_metrics(s, ds.test_labels), "fit_seconds": fit_s, "epochs_run": len(det.history_), "best_epoch": det.best_epoch_,
                     "val_rec": min(h.get("val_rec", np.inf) for h in det.history_)}
                ms.append(m)
                runs.append({"data": bname, "val_split": split, "seed": seed, **m})
                print(bname, split, seed, {k: round(v, 3) for k, v in m.items()}, flush=True)
            rows.append(seed_summary({"data": bname, "val_split": split, "seeds": len(ms)}, ms))
    cols = ["data", "val_split", "seeds", *FREE_KEYS, *(k + " per seed" for k in FREE_KEYS)]
    cmd = command_line(__file__, argv)
    md = (f"# Validation split: tail vs blocks (development data)\n\nCommand: `{cmd}`\n\n"
          f"CPU-sized AMAD ({SIZE}; omi-1: L = 100, train_stride 5, 3 epochs; synthetic benchmarks: L = 50, "
          "train_stride 10, 4 epochs), shipped scoring (recon_js, error_norm channel, score_stride L // 10). "
          "The validation split (last 20 % of the training series for `tail`; the last 20 % of each block of "
          "~2L/0.2 steps for `blocks`) drives early stopping and the channel error scale. Threshold-free, "
          "point-wise metrics on the labelled test part; mean over seeds, per-seed values beside.\n\n"
          + table(rows, cols) + f"\nMachine: {machine()}\n")
    write_results(args.name, {"args": vars(args), "size": SIZE, "runs": runs, "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
