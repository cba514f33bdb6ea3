"""position_norm: the detector's default AMAD scored with and without the position profile.

Fits ``AMADDetector(seed=s, progress=False)`` (the shipped defaults, ``position_norm="train"``) on
each entity of the three development benchmarks (SMAP's 53 entities, omi-1, 8 synthetic entities)
and scores its test series twice from the same fitted model: as fitted, and after
``set_params(position_norm="none")`` (raw errors averaged over the windows covering a step).
Reports the mean AUROC, AUPR, VUS-PR and best F1 of each, the wins/losses per entity of the
profile against raw errors, and how high a clean series' edges score: the per-step score
(``smooth=1``) of the first and last 3 steps of the training series over its median score.

    python experiments/position_norm.py --seeds 0 1 --threads 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import command_line, machine, table, write_results  # noqa: E402
from per_entity import KEYS, benchmarks, entity_metrics  # noqa: E402

import torch  # noqa: E402

from amad_fast import metrics  # noqa: E402
from amad_fast.data import iter_entities  # noqa: E402
from amad_fast import AMADDetector  # noqa: E402

NORMS = ("train", "none")


def edge_ratios(det: AMADDetector, train: np.ndarray) -> List[float]:
    """(mean of the first 3, of the last 3 per-step training scores) / their median."""
    s = det.scores_from_terms(*det.score_terms(train), smooth=1)
    med = float(np.median(s))
    return [float(s[:3].mean() / med), float(s[-3:].mean() / med)] if med > 0 else [float("nan")] * 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--benchmarks", nargs="+", default=list(benchmarks()), choices=list(benchmarks()))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N entities of each benchmark")
    ap.add_argument("--name", default="position_norm")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: List[Dict[str, Any]] = []
    payload: Dict[str, Any] = {"args": vars(args), "results": {}}
    for bench in args.benchmarks:
        ents = list(iter_entities(benchmarks()[bench]))[: args.limit]
        m = {n: [] for n in NORMS}  # per norm: (seed, entity) rows of KEYS
        edges = {n: [] for n in NORMS}
        t0 = time.perf_counter()
        for seed in args.seeds:
            for e in ents:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # constant channels
                    det = AMADDetector(seed=seed, progress=False).fit(e.train)
                window = metrics.sliding_window_length(e.test[:, 0])
                for n in NORMS:
                    det.set_params(position_norm=n)
                    m[n].append(entity_metrics(det.decision_function(e.test), e.test_labels, window))
                    edges[n].append(edge_ratios(det, e.train))
        print(f"{bench}: {time.perf_counter() - t0:.0f} s", flush=True)
        arr = {n: np.array(m[n]) for n in NORMS}
        for n in NORMS:
            row = {"benchmark": bench, "position_norm": n, **dict(zip(KEYS, arr[n].mean(0).tolist())),
                   "edge first/median": float(np.nanmedian(np.array(edges[n])[:, 0])),
                   "edge last/median": float(np.nanmedian(np.array(edges[n])[:, 1]))}
            if n == "train":
                wl = [(int((arr["train"][:, k] > arr["none"][:, k]).sum()), int((arr["train"][:, k] < arr["none"][:, k]).sum()))
                      for k in range(len(KEYS))]
                row["wins-losses vs none (auroc aupr vus_pr best_f1)"] = "  ".join(f"{a}-{b}" for a, b in wl)
            rows.append(row)
            print(rows[-1], flush=True)
            payload["results"][f"{bench}|{n}"] = {"metrics": arr[n].tolist(), "edges": edges[n]}
    cols = ["benchmark", "position_norm", *KEYS, "edge first/median", "edge last/median",
            "wins-losses vs none (auroc aupr vus_pr best_f1)"]
    md = ("# position_norm: AMAD's scores with and without the position profile\n\n"
          f"Command: `{command_line(__file__, argv)}`\n\n"
          "One fitted detector per entity and seed (the shipped defaults), scored both ways. Means over "
          f"entities and seeds ({', '.join(map(str, args.seeds))}); wins/losses count entities (each seed "
          "separately). `edge first/median`, `edge last/median`: median over entities of the per-step "
          "(unsmoothed) training score of the series' first / last 3 steps over its median score "
          "(1 = the edges score like the rest).\n\n" + table(rows, cols) + f"\nMachine: {machine()}\n")
    write_results(args.name, payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
