"""Does a larger training budget help AMAD? Train the CPU-sized model (shipped defaults, early
stopping effectively off: patience 100) for several (train_stride, epochs) budgets and report the
threshold-free metrics of the four scoring variants from the same trained model.

    python experiments/training_budget.py --dataset omi-1 --budgets 5:3 5:8 1:3 --seeds 0 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    command_line, DATA, AMADDetector, amad_terms, amad_variant, machine, table, write_results,
)

from amad_fast import metrics  # noqa: E402
from amad_fast.data import load_dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--budgets", nargs="+", default=["5:3", "5:8", "1:3"], help="train_stride:epochs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    ds = load_dataset(os.path.join(DATA, args.dataset))
    y = ds.test_labels
    base = dict(window_size=100, d_model=64, n_heads=4, n_layers=2, num_scales=4, d_ff=128, batch_size=32,
                lr=1e-3, maxmin="exact", k=1.0, mu=0.1, progress=False, backend="auto", patience=100,
                score_stride=100)  # non-overlapping windows: the protocol this table was made with
    rows = []
    for budget in args.budgets:
        stride, epochs = (int(v) for v in budget.split(":"))
        for seed in args.seeds:
            t0 = time.perf_counter()
            det = AMADDetector(train_stride=stride, epochs=epochs, seed=seed, **base).fit(ds.train)
            fit_s = time.perf_counter() - t0
            _, te, _ = amad_terms(det, ds.train, ds.test)
            for score in ("recon_js", "recon"):
                for norm in ("channel", "none"):
                    s = amad_variant(det, te, score, norm)
                    rows.append({"train_stride": stride, "epochs": epochs, "seed": seed, "score": score,
                                 "error_norm": norm, "val_rec": det.history_[-1].get("val_rec"),
                                 "fit s": fit_s, "auroc": metrics.auroc(s, y), "aupr": metrics.aupr(s, y),
                                 "best_f1": metrics.best_f1(s, y).f1})
                    print(rows[-1], flush=True)
    cols = ["train_stride", "epochs", "seed", "score", "error_norm", "val_rec", "auroc", "aupr", "best_f1", "fit s"]
    name = args.name or f"budget_{args.dataset.replace('-', '')}"
    cmd = command_line(__file__, argv)
    md = (f"# Training budget on {args.dataset}\n\nCommand: `{cmd}`\n\nData: {ds!r}. Model: {base}; "
          "`val_rec` = reconstruction loss on the validation split after the last epoch. Threshold-free "
          "point-wise metrics on the labelled test part.\n\n" + table(rows, cols) + f"\nMachine: {machine()}\n")
    write_results(name, {"args": vars(args), "base": base, "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
