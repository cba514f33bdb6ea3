"""The subcommands of ``amad-fast``: train, score, watch, export, evaluate, demo, benchmark, env and bench."""
from __future__ import annotations

import csv
import os
import sys
import time
from typing import Any, Dict

import numpy as np

from amad_fast.cli.options import _detector_from_args
from amad_fast.cli.outputs import (
    _detector_summary,
    _evaluate_outputs,
    _limit,
    _load_series,
    _load_split,
    _print_metrics,
    _say_columns,
    _write_json,
    read_scores_csv,
    write_scores_csv,
)


def cmd_train(args) -> int:
    from amad_fast.detection.training import init_distributed_from_env
    from amad_fast.files import check_writable_dir, check_writable_file

    det = _detector_from_args(args)  # every option is checked before anything is loaded or trained
    check_writable_file(args.out, "--out")
    if args.checkpoint_dir:
        check_writable_dir(args.checkpoint_dir, "--checkpoint-dir")
    distributed = init_distributed_from_env(args.device)
    import torch

    rank = torch.distributed.get_rank() if distributed else 0
    ds = _load_split(args.data, args.data_root)
    train = _limit(ds.train, args.max_train)
    if rank == 0:
        _say_columns(ds)
        print(f"training on {ds.name}: {train.shape[0]} steps x {train.shape[1]} channels", flush=True)
    t0 = time.perf_counter()
    det.fit(train)
    seconds = time.perf_counter() - t0
    if rank == 0:
        det.save(args.out)
        last = det.history_[-1] if det.history_ else {}
        flagged = float(np.mean(det.train_scores_ > det.threshold_)) * 100 if det.threshold_ is not None else None
        print(f"trained on {ds.name} train {train.shape} in {seconds:.1f}s "
              f"({len(det.history_)} epoch{'s' if len(det.history_) != 1 else ''}, best epoch {det.best_epoch_ + 1}, "
              f"last rec {last.get('rec', float('nan')):.4g}); "
              + (f"threshold ({det.threshold}) {det.threshold_:.6g}, {flagged:.2f}% of the training steps above it; "
                 if flagged is not None else f"threshold rule {det.threshold} (set when scoring); ")
              + f"saved {args.out}")
    if distributed:
        torch.distributed.destroy_process_group()
    return 0


def cmd_score(args) -> int:
    from amad_fast.detection.detector import AMADDetector
    from amad_fast.files import check_writable_file

    check_writable_file(args.out, "--out")
    det = AMADDetector.load(args.detector, device=args.device, backend=args.backend)
    series, labels, name = _load_series(args.data, args.data_root, args.split)
    series = _limit(series, args.max_steps)
    labels = _limit(labels, args.max_steps)
    t0 = time.perf_counter()
    scores = det.decision_function(series)
    seconds = time.perf_counter() - t0
    threshold = det.threshold_for(scores)
    write_scores_csv(args.out, scores, threshold, labels if args.with_labels else None)
    print(f"scored {name} {series.shape} in {seconds:.2f}s ({det.threshold} threshold {threshold:.6g}, "
          f"{int((scores > threshold).sum())} steps flagged); wrote {args.out}")
    return 0


def _lines(source, follow: bool, poll_s: float = 0.2):
    """The lines of ``source`` as they arrive; with ``follow`` a file's end is not the end: wait
    for more (like ``tail -f``) until interrupted."""
    while True:
        line = source.readline()
        if line:
            yield line
        elif follow:
            time.sleep(poll_s)
        else:
            return


def cmd_watch(args) -> int:
    """Score rows as they arrive (CSV on stdin or a growing file) with a saved AMAD detector."""
    from amad_fast.detection.detector import AMADDetector

    det = AMADDetector.load(args.detector, device=args.device, backend=args.backend)
    if args.threshold_value is not None:
        threshold = float(args.threshold_value)
    else:
        try:
            threshold = det.stream_threshold()
        except ValueError as exc:
            raise ValueError(f"--threshold-value: expected a number: {exc}") from None
    if args.follow and args.input == "-":
        raise ValueError("--follow: expected a file to follow with --input FILE, got standard input (which is "
                         "followed anyway until it ends)")
    source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8", newline="")
    where = "<stdin>" if args.input == "-" else args.input
    C = det.n_channels_
    live = det.stream()
    out = sys.stdout
    skipped = alarms = 0
    interrupted = False
    seen_data = False

    def skip(lineno: int, why: str) -> None:
        nonlocal skipped
        skipped += 1
        print(f"amad-fast watch: {where} line {lineno}: {why}; skipped", file=sys.stderr, flush=True)

    print(f"amad-fast watch: threshold {threshold:.6g} "
          f"({'given' if args.threshold_value is not None else det.threshold}), {C} channels, first scores after "
          f"{det.window_size} rows", file=sys.stderr, flush=True)
    print("step,score,alarm", file=out, flush=True)  # a plain CSV header: stdout is data only
    try:
        for lineno, line in enumerate(_lines(source, args.follow), 1):
            text = line.strip()
            if not text:
                continue
            fields = next(csv.reader([text]))
            try:
                row = np.array([float(f) for f in fields], dtype=np.float64)
            except ValueError:
                if not seen_data and lineno == 1:  # a header line
                    continue
                skip(lineno, f"expected {C} numbers, got {text[:80]!r}")
                continue
            seen_data = True
            if row.shape[0] != C:
                skip(lineno, f"expected {C} numbers, got {row.shape[0]}")
                continue
            if not np.isfinite(row).all():
                skip(lineno, "expected finite numbers, got NaN/Inf (a stream cannot interpolate a missing value)")
                continue
            scores = live.update(row)
            first = live.n_scored - len(scores)
            for i, score in enumerate(scores):
                alarm = int(score > threshold)
                alarms += alarm
                out.write(f"{first + i},{score:.6g},{alarm}\n")
            if len(scores):
                out.flush()
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        sys.stderr.close()
        return 0
    finally:
        if source is not sys.stdin:
            source.close()
    print(f"amad-fast watch: {live.n_seen} rows, {live.n_scored} scored, {alarms} alarms, {skipped} lines skipped"
          + (" (interrupted)" if interrupted else ""), file=sys.stderr, flush=True)
    return 130 if interrupted else 0


def cmd_export(args) -> int:
    """Write a saved AMAD detector's scoring as one TorchScript file (:meth:`AMADDetector.export`)."""
    from amad_fast.detection.detector import AMADDetector
    from amad_fast.files import check_writable_file

    check_writable_file(args.out, "OUT")
    det = AMADDetector.load(args.detector, device="cpu")
    det.export(args.out, format=args.format)
    print(f"exported {args.detector} to {args.out} ({args.format}: torch.jit.load(path)(X) gives the scores of "
          f"decision_function(X) for a raw (T, {det.n_channels_}) series; threshold {det.threshold_:.6g} "
          f"as its 'threshold' attribute)")
    return 0


def cmd_evaluate(args) -> int:
    from amad_fast.data import check_labels
    from amad_fast.detection import thresholds
    from amad_fast.files import check_writable_file

    if (args.scores is None) == (args.detector is None):
        raise SystemExit("evaluate: give exactly one of --scores CSV or --detector PATH (with --data)")
    out_json = args.out or "metrics.json"
    out_png = args.plot if args.plot is not None else os.path.splitext(out_json)[0] + ".png"
    check_writable_file(out_json, "--out")
    if out_png:
        check_writable_file(out_png, "--plot")
    if args.scores is not None:
        scores, threshold, labels = read_scores_csv(args.scores)
        source = {"scores": os.path.abspath(args.scores)}
        data_name, det_name = os.path.basename(args.scores), "the detector that wrote it"
        if args.labels is not None:
            from amad_fast.data import load_csv, load_npy

            lab = (load_npy(args.labels, "labels") if args.labels.endswith(".npy")
                   else load_csv(args.labels, label_column=0, header=False, allow_no_values=True).labels)
            labels = check_labels(lab, "labels", scores.size, "the scores")
        if args.threshold_value is not None:
            threshold, rule = args.threshold_value, "given"
        elif threshold is not None:
            rule = "from the scores file"
        else:
            threshold = thresholds.percentile_threshold(scores, args.contamination)
            rule = f"quantile {1 - args.contamination:g} of these scores"
    else:
        from amad_fast.detection.detector import AMADDetector

        if args.data is None:
            raise SystemExit("evaluate: --detector needs --data")
        det = AMADDetector.load(args.detector, device=args.device, backend=args.backend)
        series, labels, name = _load_series(args.data, args.data_root, "test")
        series, labels = _limit(series, args.max_steps), _limit(labels, args.max_steps)
        scores = det.decision_function(series)
        threshold = det.threshold_for(scores) if args.threshold_value is None else args.threshold_value
        rule = det.threshold if args.threshold_value is None else "given"
        source = {"detector": os.path.abspath(args.detector), "data": args.data}
        data_name, det_name = name, f"{os.path.basename(args.detector)} ({_detector_summary(det)})"
    res = _evaluate_outputs(scores, labels, threshold, out_json, out_png or None,
                            {**source, "threshold_rule": rule, "data_name": data_name, "detector_name": det_name},
                            series=series if args.scores is None else None)
    print(f"threshold ({rule}):")
    _print_metrics(res["metrics"])
    print(f"wrote {out_json}" + (f" and {out_png}" if out_png else ""))
    return 0


def cmd_demo(args) -> int:
    from amad_fast import metrics
    from amad_fast.detection import thresholds
    from amad_fast.files import check_writable_dir

    out = args.out
    det = _detector_from_args(args)
    check_writable_dir(out, "--out")
    if args.checkpoint_dir:
        check_writable_dir(args.checkpoint_dir, "--checkpoint-dir")
    os.makedirs(out, exist_ok=True)
    ds = _load_split(args.data, None)
    print(f"demo: {ds!r}, anomalies {ds.anomaly_ratio_percent:.2f}% of test steps")
    t0 = time.perf_counter()
    det.fit(ds.train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = det.decision_function(ds.test)
    score_s = time.perf_counter() - t0
    threshold = det.threshold_for(scores)
    print(f"trained {len(det.history_)} epochs in {fit_s:.1f}s, scored {ds.test.shape[0]} steps in {score_s:.2f}s")
    det.save(os.path.join(out, "detector.pt"))
    write_scores_csv(os.path.join(out, "scores.csv"), scores, threshold, ds.test_labels)
    info = {"data": args.data, "detector": det.get_params(), "fit_seconds": fit_s, "score_seconds": score_s,
            "history": det.history_, "threshold_rule": det.threshold, "data_name": f"{ds.name} test",
            "detector_name": f"the demo detector ({_detector_summary(det)})"}
    res = _evaluate_outputs(scores, ds.test_labels, threshold, os.path.join(out, "metrics.json"),
                            os.path.join(out, "scores.png"), info, series=ds.test)
    # the other percentile rule, for context
    other_rule = "paper" if det.threshold != "paper" else "train"
    other = thresholds.select_threshold(other_rule, det.train_scores_, scores, det.contamination)
    res["other_threshold"] = metrics.evaluate(scores, ds.test_labels, other, vus_window=res["metrics"]["vus_window"])
    _write_json(os.path.join(out, "metrics.json"), res)
    print(f"metrics ({det.threshold} threshold):")
    _print_metrics(res["metrics"])
    print(f"wrote {', '.join(sorted(os.listdir(out)))} in {out}")
    return 0


def _parse_param(text: str):
    """'METHOD.KEY=VALUE' → (method, key, value), the value read as int, float, bool, None or text."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"--param: expected METHOD.KEY=VALUE (e.g. amad.epochs=3), got {text!r}")
    lhs, raw = text.split("=", 1)
    method, key = lhs.split(".", 1)
    low = raw.strip().lower()
    value: Any = {"true": True, "false": False, "none": None}.get(low, raw)
    if value is raw:
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
    return method.strip(), key.strip().replace("-", "_"), value


def cmd_benchmark(args) -> int:
    from amad_fast.bench.detection import parse_methods, run_benchmark, write_reports
    from amad_fast.files import check_writable_dir

    methods = parse_methods(args.methods)
    check_writable_dir(args.out, "--out")
    params: Dict[str, Dict[str, Any]] = {}
    for text in args.param or []:
        method, key, value = _parse_param(text)
        if method not in methods:
            raise ValueError(f"--param {text!r}: expected a parameter of one of the chosen methods {methods}, "
                             f"got method {method!r}")
        params.setdefault(method, {})[key] = value
    entities = [e.strip() for e in args.entities.split(",") if e.strip()] if args.entities else None
    workers = args.workers
    if workers is None:
        import torch

        workers = 1 if torch.cuda.is_available() else max(1, min(4, os.cpu_count() or 1))
    result = run_benchmark(args.data, methods, out_dir=args.out, entities=entities, params=params, seed=args.seed,
                           workers=workers, resume=args.resume, data_root=args.data_root)
    paths = write_reports(result, args.out)
    agg = result.aggregates
    print(f"{len(result.records)} entities in {result.info['seconds']:.0f} s; mean over entities:")
    print("  " + f"{'method':<10}" + "".join(f"{k:>9}" for k in ("VUS-PR", "AUPR", "AUROC", "VUS-ROC", "best F1")))
    for m in methods:
        a = agg["methods"][m]
        print("  " + f"{m:<10}" + "".join(f"{'n/a' if a[k]['mean'] is None else format(a[k]['mean'], '.3f'):>9}"
                                          for k in ("vus_pr", "aupr", "auroc", "vus_roc", "best_f1")))
    print(f"wrote {', '.join(paths)}")
    return 0


def cmd_env(args) -> int:
    import platform

    import torch

    from amad_fast import __version__, available_backends
    from amad_fast.attention.backends.extension import build_info, extension_error

    lines = [f"amad_fast {__version__}", f"python {platform.python_version()} ({platform.platform()})",
             f"torch {torch.__version__}"]
    try:
        import triton

        lines.append(f"triton {triton.__version__} (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')})")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"triton not importable ({type(exc).__name__}: {exc})")
    if torch.cuda.is_available():
        lines.append(f"device cuda: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, "
                     f"{torch.cuda.device_count()} device(s))")
    else:
        lines.append(f"device cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads); CUDA not available")
    lines.append(f"detectors: device='auto' (the default) runs on {'cuda' if torch.cuda.is_available() else 'cpu'}")
    err = extension_error()
    lines.append("extension amad_fast._C: " + (f"not loaded ({err})" if err else f"loaded, built for {build_info()}"))
    lines.append("backends (priority order):")
    for status in available_backends().values():
        lines.append(f"  {status}")
    print("\n".join(lines))
    return 0


def cmd_bench(args) -> int:
    try:
        from amad_fast.bench import command as bench
    except ImportError as exc:
        print(f"amad-fast bench: the benchmark module amad_fast.bench could not be imported ({exc})", file=sys.stderr)
        return 2
    return int(bench.run(args) or 0)
