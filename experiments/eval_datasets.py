"""Train and evaluate a CPU-sized AMAD on SMAP or omi-1, beside baselines, through one evaluation path.

AMAD is trained once; its test series is scored with every variant (score recon_js / recon ×
error_norm channel / none × scoring-window stride L // 10 (default) / L (spec §4), and the shipped
default smoothed over one window length L as an extra, non-default row) from the same forward passes. Uniform random scores, IsolationForest and PCA
reconstruction error (scikit-learn; per time step on standardised data; also smoothed over L for a
like-for-like comparison with the smoothed AMAD row) go through the same code: every metric of amad_fast.metrics.evaluate under the paper
threshold (the 1 − contamination quantile of train + test scores) and the train threshold (train scores only).

    python experiments/eval_datasets.py --dataset SMAP --epochs 2 --train-stride 50
    python experiments/eval_datasets.py --dataset omi-1 --epochs 3 --train-stride 5 --contamination 0.01
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (command_line, DATA, AMADDetector, amad_terms, amad_variant, baseline_scores, evaluate_both,  # noqa: E402
                    flat_rows, machine, smooth_scores, table, write_results)

import amad_fast  # noqa: E402
from amad_fast.detection import thresholds  # noqa: E402
from amad_fast.data import load_dataset  # noqa: E402

# Anomaly Transformer's SMAP/MSL/PSM scripts: the configuration its published figures come from
PAPER = dict(d_model=512, n_heads=8, n_layers=3, d_ff=512, batch_size=256, lr=1e-4, k=3.0, epochs=3, train_stride=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="SMAP or omi-1 (a directory under the shared data)")
    ap.add_argument("--contamination", type=float, default=None,
                    help="expected fraction of anomalous steps, in (0, 1) (default: the spec's value, 0.01 otherwise)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-stride", type=int, default=50)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--maxmin", default="exact")
    ap.add_argument("--k", type=float, default=3.0)
    ap.add_argument("--mu", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-split", default="tail", help="tail (default) or blocks (see AMADDetector)")
    ap.add_argument("--score-stride", type=int, default=None, help="default: the detector's (L // 10)")
    ap.add_argument("--d-ff", type=int, default=None, help="default: 2 x d_model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--paper", action="store_true",
                    help="Anomaly Transformer's published recipe (d_model 512, 8 heads, 3 layers, d_ff 512, "
                         "batch 256, lr 1e-4, k 3, 3 epochs, every window: train stride 1) as defaults; "
                         "options given explicitly override them")
    ap.add_argument("--checkpoint-dir", default=None, help="write a checkpoint each epoch here (AMADDetector)")
    ap.add_argument("--resume", action="store_true", help="continue training from --checkpoint-dir's last checkpoint")
    ap.add_argument("--shipped", action="store_true",
                    help="AMADDetector's own defaults for every model, training and scoring setting (the options "
                         "above that set them are ignored; --seed, --checkpoint-dir and --resume still apply)")
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    if args.paper:  # the preset replaces the defaults; options given explicitly still win
        ap.set_defaults(**PAPER)
        args = ap.parse_args(argv)
    contamination = (args.contamination if args.contamination is not None
                     else thresholds.CONTAMINATION.get(args.dataset, thresholds.DEFAULT_CONTAMINATION))
    ds = load_dataset(os.path.join(DATA, args.dataset))
    params = dict(window_size=100, score_stride=args.score_stride, d_model=args.d_model, n_heads=args.n_heads, n_layers=args.n_layers,
                  num_scales=4, d_ff=args.d_ff or 2 * args.d_model, batch_size=args.batch_size, train_stride=args.train_stride,
                  epochs=args.epochs, lr=args.lr, maxmin=args.maxmin, k=args.k, mu=args.mu, seed=args.seed,
                  progress=False, backend="auto", error_norm="channel", val_split=args.val_split,
                  checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    if args.shipped:
        params = dict(seed=args.seed, progress=False, checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    rows, payload = [], {"args": vars(args), "contamination": contamination, "params": params, "dataset": repr(ds),
                         "anomaly_percent": ds.anomaly_ratio_percent,
                         "backends": {k: str(v) for k, v in amad_fast.available_backends().items()}}
    det = AMADDetector(**params)
    t0 = time.perf_counter()
    det.fit(ds.train)
    payload["fit_seconds"] = time.perf_counter() - t0
    payload["history"] = det.history_
    print(f"fit {payload['fit_seconds']:.0f}s, history {det.history_}", flush=True)
    L = det.window_size
    stride = det.resolved_score_stride()
    width = det.resolved_smooth()  # the shipped smoothing (1 = none) for the [default] row
    terms = {stride: amad_terms(det, ds.train, ds.test)}
    terms[L] = amad_terms(det, ds.train, ds.test, stride=L)
    payload["test_forward_seconds"] = {s: t[2] for s, t in terms.items()}
    payload["error_scale"] = [float(v) for v in det.error_scale_]
    other = "recon" if det.score == "recon_js" else "recon_js"
    variants = [(det.score, "channel", stride, width, " [default]"), (other, "channel", stride, width, ""),
                ("recon_js", "channel", stride, 1, ""), ("recon", "channel", stride, 1, ""),
                ("recon_js", "channel", L, 1, ""), ("recon", "channel", L, 1, ""),
                ("recon_js", "none", L, 1, " [spec]"), ("recon", "none", L, 1, "")]
    if width != L:
        variants.append(("recon_js", "channel", stride, L, ""))
    variants = list(dict.fromkeys(variants))  # without the shipped smoothing two rows coincide
    for score, norm, s, smooth, tag in variants:
        tr, te = (amad_variant(det, t, score, norm, smooth) for t in terms[s][:2])
        res = evaluate_both(tr, te, ds.test_labels, contamination)
        split = "" if args.val_split == "tail" else f", val_split {args.val_split}"
        tag = tag if not split else ""  # [default] and [spec] hold out the tail
        label = f"AMAD ({score}, {norm}, stride {s}{f', smooth {smooth}' if smooth > 1 else ''}{split}){tag}"
        payload[f"amad_{score}_{norm}_stride{s}_s{smooth}"] = {"results": res}
        rows += flat_rows(label, res)
        print(rows[-2], rows[-1], sep="\n", flush=True)
    if not args.skip_baselines:
        for b in ("random", "iforest", "pca"):
            t0 = time.perf_counter()
            tr, te = baseline_scores(b, ds.train, ds.test, seed=args.seed)
            res = evaluate_both(tr, te, ds.test_labels, contamination)
            payload[b] = {"results": res, "seconds": time.perf_counter() - t0}
            label = {"random": "uniform random", "iforest": "IsolationForest", "pca": "PCA recon"}[b]
            rows += flat_rows(label, res)
            print(rows[-2], rows[-1], sep="\n", flush=True)
            if b != "random":
                res = evaluate_both(smooth_scores(tr, L), smooth_scores(te, L), ds.test_labels, contamination)
                payload[f"{b}_s{L}"] = {"results": res}
                rows += flat_rows(f"{label} (smooth {L})", res)
    cols = ["method", "threshold", "pa_f1", "precision", "recall", "f1", "auroc", "aupr", "best_f1", "affiliation_f1"]
    name = args.name or f"eval_{args.dataset}"
    cmd = command_line(__file__, argv)
    hist = "; ".join(f"epoch {h['epoch']}: rec {h['rec']:.4f}, val {h.get('val_rec', float('nan')):.4f}, "
                     f"{h['windows_per_s']:.0f} windows/s" for h in det.history_)
    size = "paper-sized" if args.paper else ("shipped defaults" if args.shipped else "CPU-sized")
    md = (f"# {args.dataset}: AMAD ({size}) and baselines\n\nCommand: `{cmd}`\n\n"
          f"Data: {ds!r}; {ds.anomaly_ratio_percent:.2f} % anomalous test steps. Thresholds: contamination {contamination}.\n\n"
          + ("AMAD here has Anomaly Transformer's published configuration (`--paper`), trained on 2 CPU cores: "
             if args.paper else "AMAD here is a CPU-sized model trained briefly on 2 shared cores, NOT the paper's configuration: ")
          + f"{det.get_params()}. Training took {payload['fit_seconds']:.0f} s ({hist}).\n\n"
          "pa_f1 is point-adjusted (comparable with published tables, and inflated: see uniform random); "
          "precision/recall/f1 are point-wise; auroc, aupr, best_f1 (best point-wise F1 over all thresholds) "
          "are threshold-free; affiliation_f1 per Huet et al. 2022.\n\n"
          "AMAD rows: `[default]` is this detector's scoring: windows every score_stride = L // 10 steps with "
          "each step's terms averaged over the windows covering it (score_stride_*.md), error_norm='channel' "
          "(each channel's squared error divided by its mean on the validation split of the training series; "
          f"scoring_omi1.md), and a centred moving average over smooth = {width} steps (1 = none; "
          "per_entity_*.md). `stride L` rows use spec §4's non-overlapping windows; `[spec]` is spec §4's "
          "protocol and plain mean over channels. The baselines are per step, and also shown smoothed over "
          f"L = {L} for a like-for-like view.\n\n"
          + table(rows, cols) +
          f"\nMachine: {machine()}\n")
    write_results(name, payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
