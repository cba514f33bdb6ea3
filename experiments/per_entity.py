"""Choose AMAD's defaults per entity, on development data only.

Trains one AMAD per entity and seed for each named configuration on three development
benchmarks: SMAP's 53 entities (each spacecraft channel on its own rows of SMAP_entities.csv),
omi-1, and 8 synthetic entities (``synthetic:entities=8``). Each fitted detector's per-step terms
(``AMADDetector.score_terms``: per-channel squared error and js weight) are computed once and
cached, and every scoring variant (score recon / recon_js × smoothing width) is scored from them
(``AMADDetector.scores_from_terms``). Beside them: the simple baselines of ``amad_fast.detection.baselines``
and, for a like-for-like view of the smoothing, the L2 norm smoothed the same way. Metrics per
entity: AUROC, AUPR, VUS-PR (TSB-AD; window from the test series' first channel), best F1. The
tables give means over entities (and seeds) and the wins / losses of each AMAD variant against the
simple baseline with the best mean VUS-PR on that benchmark.

    python experiments/per_entity.py --configs zscore unit unit_ep3 --seeds 0 1 --name per_entity_scaling
    python experiments/per_entity.py --configs unit_l3 unit_st10_ep3 unit_d64_l3 --seeds 0 1 --name per_entity_size
    python experiments/per_entity.py --configs unit_d64_l2 unit_d64_l3_ep3 unit_d128_l3 --seeds 0 1 \\
        --name per_entity_width

(each with ``--threads 1``, two at a time on this 2-core machine). The rule that picked the defaults is in experiments/README.md ("Per-entity defaults").
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
from common import DATA, command_line, machine, table, write_results  # noqa: E402

import torch  # noqa: E402

from amad_fast import metrics  # noqa: E402
from amad_fast.detection.registry import make_detector  # noqa: E402
from amad_fast.data import iter_entities  # noqa: E402
from amad_fast import AMADDetector  # noqa: E402
from amad_fast.detection.scoring import combine_terms, smooth_scores  # noqa: E402

# the configuration every variant starts from: the CPU-sized model of the concatenated-SMAP
# sessions (d_model 32 x 6 layers) at the per-entity budget (2 epochs, train stride 5)
BASE = dict(window_size=100, d_model=32, n_heads=4, n_layers=6, num_scales=4, epochs=2, train_stride=5,
            error_norm="channel", score_stride=None, progress=False)
CONFIGS: Dict[str, Dict[str, Any]] = {
    "zscore": dict(binary_scaling="zscore"),
    "unit": dict(binary_scaling="unit"),
    "unit_ep3": dict(binary_scaling="unit", epochs=3),
    "unit_l3": dict(binary_scaling="unit", n_layers=3),
    "unit_st10_ep3": dict(binary_scaling="unit", train_stride=10, epochs=3),
    "unit_d64_l3": dict(binary_scaling="unit", d_model=64, n_layers=3),
    "unit_d64_l2": dict(binary_scaling="unit", d_model=64, n_layers=2),
    "unit_d64_l3_ep3": dict(binary_scaling="unit", d_model=64, n_layers=3, epochs=3),
    "unit_d128_l3": dict(binary_scaling="unit", d_model=128, n_layers=3, n_heads=8),
}
SCORES = ("recon", "recon_js")
SMOOTH = (1, 25, 50, 100, 200)
BASELINES = ("l2", "maxz", "pca", "knn", "iforest", "random")
KEYS = ("auroc", "aupr", "vus_pr", "best_f1")


def benchmarks() -> Dict[str, str]:
    """The development benchmarks as data specs (SMAP per entity, omi-1, 8 synthetic entities)."""
    return {"SMAP": os.path.join(DATA, "SMAP"), "omi-1": os.path.join(DATA, "omi-1"),
            "synthetic x8": "synthetic:entities=8,length=4000,train_length=4000,seed=100"}


def entity_metrics(s: np.ndarray, y: np.ndarray, window: int) -> List[float]:
    return [metrics.auroc(s, y), metrics.aupr(s, y), metrics.vus_pr(s, y, window), metrics.best_f1(s, y).f1]


def amad_terms(config: str, seed: int, ent, cache: str) -> Dict[str, Any]:
    """Fit AMAD (configuration ``config``, ``seed``) on one entity; its test terms, cached as .npz."""
    path = os.path.join(cache, config, f"s{seed}", ent.name.replace("/", "__") + ".npz")
    if os.path.isfile(path):
        z = np.load(path)
        return {k: z[k] for k in z.files}
    det = AMADDetector(**{**BASE, **CONFIGS[config], "seed": seed})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant channels
        det.fit(ent.train)
        err, w = det.score_terms(ent.test)
    seconds = time.perf_counter() - t0
    out = {"err": err.astype(np.float32), "w": w.astype(np.float32), "scale": np.asarray(det.error_scale_),
           "seconds": np.float64(seconds)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", **out)
    os.replace(path + ".tmp.npz", path)
    return out


def variant_scores(terms: Dict[str, Any], score: str, smooth: int) -> np.ndarray:
    """The detector's scores_from_terms, on cached terms: the scoring module's combine_terms (mean
    over channels of err / scale, times the js weight for recon_js), then the centred moving average."""
    raw = combine_terms(terms["err"].astype(np.float64), terms["w"].astype(np.float64), score, terms["scale"])
    return smooth_scores(raw, smooth)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["unit"], choices=sorted(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--benchmarks", nargs="+", default=list(benchmarks()), choices=list(benchmarks()))
    ap.add_argument("--cache", default=os.environ.get("AMAD_EXPERIMENT_CACHE", "/tmp/amad_per_entity_cache"),
                    help="where per-entity terms are cached (re-running reuses them)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N entities of each benchmark (quick checks)")
    ap.add_argument("--name", default="per_entity")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, payload = [], {"args": vars(args), "base": BASE, "configs": {c: CONFIGS[c] for c in args.configs},
                         "results": {}}
    for bench in args.benchmarks:
        ents = list(iter_entities(benchmarks()[bench]))[: args.limit]
        windows = {e.name: metrics.sliding_window_length(e.test[:, 0]) for e in ents}
        ref: Dict[Any, Any] = {}  # per baseline (unsmoothed): metrics (entities, 4)
        for b in BASELINES:
            per_ent = []
            for e in ents:
                s = make_detector(b, seed=0).fit(e.train).decision_function(e.test)
                per_ent.append((e, s))
            widths = (1,) + tuple(w for w in SMOOTH if w > 1) if b == "l2" else (1,)
            for w in widths:
                m = np.array([entity_metrics(smooth_scores(s, w), e.test_labels, windows[e.name]) for e, s in per_ent])
                if w == 1:
                    ref[b] = m
                label = b if w == 1 else f"{b} (smooth {w})"
                rows.append(_row(bench, label, m, None, None))
                payload["results"][f"{bench}|{label}"] = m.tolist()
            print(rows[-1], flush=True)
        best = max((b for b in BASELINES if b != "random"), key=lambda b: ref[b][:, 2].mean())  # by VUS-PR
        payload.setdefault("best_baseline", {})[bench] = best
        for config in args.configs:
            per_seed = {}
            for seed in args.seeds:
                per_seed[seed] = [amad_terms(config, seed, e, args.cache) for e in ents]
                secs = sum(float(t["seconds"]) for t in per_seed[seed])
                print(f"{bench} {config} seed {seed}: {secs:.0f} s fit+score", flush=True)
            for score in SCORES:
                for w in SMOOTH:
                    m = np.array([[entity_metrics(variant_scores(t, score, w), e.test_labels, windows[e.name])
                                   for e, t in zip(ents, per_seed[seed])] for seed in args.seeds])  # (seeds, ents, 4)
                    label = f"AMAD {config} {score} smooth {w}"
                    rows.append(_row(bench, label, m, ref[best], best))
                    payload["results"][f"{bench}|{label}"] = m.tolist()
            print(rows[-1], flush=True)
    cols = ["benchmark", "method", "auroc", "aupr", "vus_pr", "best_f1", "wins-losses (auroc aupr vus_pr best_f1)"]
    md = (f"# Per-entity development benchmarks: AMAD variants beside the simple baselines\n\n"
          f"Command: `{command_line(__file__, argv)}`\n\n"
          "Each entity trained, scored and evaluated on its own (SMAP: 53 entities; omi-1: one; synthetic: 8 "
          "entities of `synthetic:entities=8,length=4000,train_length=4000,seed=100`). Means over entities and "
          f"seeds ({', '.join(map(str, args.seeds))}); wins/losses count entities "
          "(each seed separately) against the simple baseline with the best mean VUS-PR on that benchmark. VUS-PR as TSB-AD defines it, window from each entity's test channel 0. "
          f"AMAD configurations: base {BASE}, then per configuration {payload['configs']}. `smooth w` = centred "
          "moving average of the score over w steps (1 = per step); `l2 (smooth w)` smooths the L2 norm the "
          "same way, for a like-for-like view.\n\n" + table(rows, cols) + f"\nMachine: {machine()}\n")
    write_results(args.name, payload, md)
    return 0


def _row(bench: str, label: str, m: np.ndarray, ref: Any, ref_name: Any) -> Dict[str, Any]:
    """Mean of each metric; with ``ref`` (entities, 4) the wins/losses of ``m`` ((seeds,) entities, 4)
    per metric against that baseline, ``ref_name``."""
    mean = m.reshape(-1, 4).mean(0)
    row = {"benchmark": bench, "method": label, **dict(zip(KEYS, mean.tolist()))}
    if ref is not None:
        mm = m.reshape(-1, ref.shape[0], 4)
        wins = [(int((mm[:, :, k] > ref[None, :, k]).sum()), int((mm[:, :, k] < ref[None, :, k]).sum()))
                for k in range(4)]
        row["wins-losses (auroc aupr vus_pr best_f1)"] = f"vs {ref_name}: " + "  ".join(f"{a}-{b}" for a, b in wins)
    return row


if __name__ == "__main__":
    sys.exit(main())
