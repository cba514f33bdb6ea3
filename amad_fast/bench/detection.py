"""Detection benchmark: every method on every entity of a data set, threshold-free metrics, aggregates.

Current benchmarks evaluate anomaly detectors **per entity** (each spacecraft channel, server or
machine trained, scored and evaluated on its own) with threshold-free metrics: TSB-AD (NeurIPS
2024; VUS-PR its headline metric) and "Quo Vadis, Unsupervised Time Series Anomaly Detection?"
(ICML 2024), whose simple baselines this package ships in :mod:`amad_fast.detection.baselines`. This module
runs that protocol::

    from amad_fast.bench.detection import run_benchmark
    result = run_benchmark("../shared/data/SMAP", methods=["amad", "l2", "knn"], out_dir="runs/smap")
    result.aggregates["amad"]["vus_pr"]["mean"]

or ``amad-fast benchmark DATA --methods amad,l2,pca,knn,iforest,random --out DIR``.

Per entity and method: fit on the entity's training series, score its test series, then AUROC,
AUPR, VUS-PR, VUS-ROC (TSB-AD's definition and window rule: the window is
:func:`amad_fast.metrics.sliding_window_length` of the test series' first channel) and the best
point-wise F1 over all thresholds. A metric a labelling does not define (no anomalous test step;
AUROC also with no normal one) is ``None`` with the reason, never a silent 0. A method that fails
on an entity (a series shorter than AMAD's window, say) is recorded with its error and the run
goes on. Aggregates per method and metric: mean and median over the entities where the metric is
defined, and wins / losses / ties of a reference method (AMAD by default) against every other.

Each finished entity is written at once to ``OUT/entities/NAME.json`` (atomically), so a run
that is stopped keeps what it finished: running again with the same output folder skips every
(entity, method) whose stored parameters equal the requested ones and computes only the rest.
Entities run in ``workers`` processes when ``workers > 1`` (each with its share of the CPU
threads). ``write_reports`` turns the result into ``benchmark.md``, ``benchmark.json`` and a
per-entity comparison plot ``benchmark.png``.
"""
from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from amad_fast import metrics
from amad_fast.data import SeriesSplit, iter_entities, list_entities

__all__ = ["METRICS", "METRIC_LABELS", "BenchmarkResult", "evaluate_entity", "run_benchmark", "aggregate",
           "write_reports", "parse_methods"]

#: the metrics of every (entity, method), headline first
METRICS = ("vus_pr", "aupr", "auroc", "vus_roc", "best_f1")
METRIC_LABELS = {"vus_pr": "VUS-PR", "aupr": "AUPR", "auroc": "AUROC", "vus_roc": "VUS-ROC", "best_f1": "best F1"}
ENTITY_FORMAT = "amad_fast.benchmark-entity/1"


def parse_methods(methods: Any) -> List[str]:
    """Method names from a list or a comma-separated string, checked against the known methods."""
    from amad_fast.detection.registry import METHODS

    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"methods: expected a non-empty list of {list(METHODS)}, got {names or methods!r}"
                         + (f" (unknown: {unknown})" if unknown else ""))
    if len(set(names)) != len(names):
        raise ValueError(f"methods: expected each method once, got {names}")
    return names


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def entity_metrics(scores: np.ndarray, labels: np.ndarray, vus_window: int) -> Dict[str, Any]:
    """The benchmark's metrics of one score series; undefined ones are None, with the reason under
    ``"undefined"``."""
    out: Dict[str, Any] = {}
    why: Dict[str, str] = {}
    fns: Dict[Any, Callable[[], Any]] = {
        ("vus_pr", "vus_roc"): lambda: metrics.vus(scores, labels, vus_window),
        ("aupr",): lambda: (metrics.aupr(scores, labels),),
        ("auroc",): lambda: (metrics.auroc(scores, labels),),
        ("best_f1",): lambda: (metrics.best_f1(scores, labels).f1,),
    }
    for keys, f in fns.items():
        try:
            out.update(zip(keys, map(float, f())))
        except ValueError as exc:
            out.update(dict.fromkeys(keys))
            why.update(dict.fromkeys(keys, str(exc)))
    out = {k: out[k] for k in METRICS}
    if why:
        out["undefined"] = why
    return out


def evaluate_entity(entity: SeriesSplit, methods: Sequence[str], params: Dict[str, Dict[str, Any]],
                    threads: Optional[int] = None) -> Dict[str, Any]:
    """Fit, score and evaluate every method on one entity; the record ``run_benchmark`` stores.

    ``params[method]`` are the method's constructor parameters. ``threads`` sets torch's thread
    count for this call (worker processes). Returns ``{"entity", "n_train", "n_test",
    "n_anomalous", "vus_window", "methods": {name: {"params", "metrics", "fit_seconds",
    "score_seconds"} or {"params", "error"}}}``.
    """
    from amad_fast.detection.registry import make_detector

    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    if entity.test_labels is None:
        raise ValueError(f"entity {entity.name}: expected test labels to evaluate against, got none")
    y = entity.test_labels
    window = metrics.sliding_window_length(entity.test[:, 0])
    rec: Dict[str, Any] = {"format": ENTITY_FORMAT, "entity": entity.name, "n_train": int(entity.train.shape[0]),
                           "n_test": int(entity.test.shape[0]), "n_channels": int(entity.train.shape[1]),
                           "n_anomalous": int(y.sum()), "vus_window": int(window), "methods": {}}
    for name in methods:
        p = dict(params.get(name, {}))
        entry: Dict[str, Any] = {"params": _jsonable(p)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constant channels and the like: a benchmark is not the place
                det = make_detector(name, **p)
                t0 = time.perf_counter()
                det.fit(entity.train)
                t1 = time.perf_counter()
                scores = det.decision_function(entity.test)
                t2 = time.perf_counter()
        except (ValueError, RuntimeError, FloatingPointError, ImportError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        else:
            entry.update(metrics=entity_metrics(scores, y, window), fit_seconds=t1 - t0, score_seconds=t2 - t1)
        rec["methods"][name] = entry
    return rec


# ----------------------------------------------------------------------------------------------
# Aggregates
# ----------------------------------------------------------------------------------------------
def _value(rec: Dict[str, Any], method: str, metric: str) -> Optional[float]:
    m = rec["methods"].get(method, {}).get("metrics")
    return None if m is None else m.get(metric)


def aggregate(records: Sequence[Dict[str, Any]], methods: Sequence[str], reference: Optional[str] = "amad",
              tolerance: float = 1e-9) -> Dict[str, Any]:
    """Per method and metric: mean, median and count over the entities where it is defined; and,
    when ``reference`` is one of ``methods``, its wins / losses / ties against every other method
    (entities where both are defined; a tie within ``tolerance``)."""
    out: Dict[str, Any] = {}
    for m in methods:
        out[m] = {}
        for k in METRICS:
            vals = [v for v in (_value(r, m, k) for r in records) if v is not None]
            out[m][k] = {"mean": float(np.mean(vals)) if vals else None,
                         "median": float(np.median(vals)) if vals else None, "n": len(vals)}
        out[m]["errors"] = sum(1 for r in records if "error" in r["methods"].get(m, {}))
    wins: Dict[str, Any] = {}
    if reference in methods:
        for other in methods:
            if other == reference:
                continue
            wins[other] = {}
            for k in METRICS:
                pairs = [(_value(r, reference, k), _value(r, other, k)) for r in records]
                pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                w = sum(1 for a, b in pairs if a > b + tolerance)
                lo = sum(1 for a, b in pairs if a < b - tolerance)
                wins[other][k] = {"wins": w, "losses": lo, "ties": len(pairs) - w - lo}
    return {"methods": out, "reference": reference if reference in methods else None, "versus": wins}


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` returns: the per-entity records (in entity order), the
    aggregates of :func:`aggregate`, and the run's description."""

    data: str
    methods: List[str]
    records: List[Dict[str, Any]]
    aggregates: Dict[str, Any]
    info: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return _jsonable({"data": self.data, "methods": self.methods, "info": self.info,
                          "aggregates": self.aggregates, "entities": self.records})


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "entity"


def _write_json_atomic(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(_jsonable(obj), fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _stored(path: str) -> Optional[Dict[str, Any]]:
    """A finished entity's record, or None when there is none (or it is not one of ours)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == ENTITY_FORMAT else None


def _worker(args):
    entity, methods, params, threads = args
    return evaluate_entity(entity, methods, params, threads)


def _line(rec: Dict[str, Any], methods: Sequence[str]) -> str:
    parts = []
    for m in methods:
        e = rec["methods"].get(m, {})
        if "error" in e:
            parts.append(f"{m} error")
        else:
            v = e.get("metrics", {}).get("vus_pr")
            parts.append(f"{m} {'n/a' if v is None else format(v, '.3f')}")
    return f"{rec['entity']}: VUS-PR " + ", ".join(parts)


def run_benchmark(data: str, methods: Any = ("amad", "l2", "pca", "knn", "iforest", "random"),
                  out_dir: Optional[str] = None, entities: Optional[Sequence[str]] = None,
                  params: Optional[Dict[str, Dict[str, Any]]] = None, seed: int = 0, workers: int = 1,
                  resume: bool = True, data_root: Optional[str] = None, progress: bool = True,
                  log: Optional[Callable[[str], None]] = None) -> BenchmarkResult:
    """Run ``methods`` on every entity of ``data`` (a :func:`amad_fast.data.load_dataset` spec).

    ``params[method]`` overrides a method's constructor parameters (every method gets ``seed``
    unless it names its own). With ``out_dir`` each finished entity is stored at once and, with
    ``resume``, an (entity, method) already stored with the same parameters is not run again.
    ``workers`` > 1 runs entities in that many processes. ``progress`` shows a bar on a terminal;
    ``log`` (default: print to stderr when stderr is not a terminal) gets one line per entity.
    """
    methods = parse_methods(methods)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive integer, got {workers!r}")
    unknown = sorted(set(params or {}) - set(methods))
    if unknown:
        raise ValueError(f"params: expected parameters for the chosen methods {methods}, got some for {unknown}")
    defaults = {"amad": {"progress": False}}  # the entity bar is the progress; no nested training bars
    params = {m: {"seed": seed, **defaults.get(m, {}), **dict((params or {}).get(m, {}))} for m in methods}
    # every constructor parameter, defaults included, is what a record is stored with and resumed by:
    # after the package's defaults change, a stored result of the old defaults is run again
    from amad_fast.detection.registry import make_detector

    params = {m: make_detector(m, **p).get_params() for m, p in params.items()}
    names = list_entities(data, data_root)
    if entities is not None:
        wanted = [str(e) for e in entities]
        missing = [e for e in wanted if e not in names]
        if missing:
            shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
            raise ValueError(f"entities: expected entities of {data!r} ({shown}), got unknown {missing}")
        names = wanted
    if out_dir is not None:
        os.makedirs(os.path.join(out_dir, "entities"), exist_ok=True)  # fails now, not after the run
    is_tty = sys.stderr.isatty()
    if log is None:
        log = (lambda s: None) if (is_tty and progress) else (lambda s: print(s, file=sys.stderr, flush=True))

    records: Dict[str, Dict[str, Any]] = {}
    todo: Dict[str, List[str]] = {}
    for n in names:
        rec = _stored(os.path.join(out_dir, "entities", _safe_name(n) + ".json")) if (out_dir and resume) else None
        if rec is not None:
            kept = {m: e for m, e in rec["methods"].items() if m in methods and e.get("params") == _jsonable(params[m])}
            rec["methods"] = kept
            records[n] = rec
        missing = [m for m in methods if n not in records or m not in records[n]["methods"]]
        if missing:
            todo[n] = missing
    n_kept = len(names) - len(todo)
    if n_kept:
        log(f"resuming: {n_kept} of {len(names)} entities already done in {out_dir}")

    from tqdm.auto import tqdm

    bar = tqdm(total=len(names), initial=n_kept, desc="entities", unit="entity", dynamic_ncols=True,
               disable=not (progress and is_tty))
    t_start = time.perf_counter()
    done = [n_kept]

    def finish(name: str, rec: Dict[str, Any]) -> None:
        old = records.get(name)
        if old is not None:
            old["methods"].update(rec["methods"])
            rec = {**rec, "methods": old["methods"]}
        records[name] = rec
        if out_dir is not None:
            _write_json_atomic(os.path.join(out_dir, "entities", _safe_name(name) + ".json"), rec)
        done[0] += 1
        bar.update(1)
        log(f"[{done[0]}/{len(names)}] {_line(rec, methods)}")

    try:
        pending = [n for n in names if n in todo]
        if workers == 1 or len(pending) <= 1:
            for ent in iter_entities(data, data_root, entities=pending):
                key = ent.info["entity"]
                finish(key, evaluate_entity(ent, todo[key], params))
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = multiprocessing.get_context("spawn")  # no fork of a process holding OpenMP threads
            with futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                jobs = {}
                for ent in iter_entities(data, data_root, entities=pending):
                    key = ent.info["entity"]
                    jobs[pool.submit(_worker, (ent, todo[key], params, threads))] = key
                for fut in futures.as_completed(jobs):
                    finish(jobs[fut], fut.result())
    finally:
        bar.close()
    ordered = [records[n] for n in names]
    info = {"entities": len(names), "seconds": time.perf_counter() - t_start, "resumed_entities": n_kept,
            "workers": workers, "params": params, "out_dir": out_dir, "machine": _machine()}
    return BenchmarkResult(str(data), methods, ordered, aggregate(ordered, methods), info)


def _machine() -> Dict[str, Any]:
    import platform

    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def markdown_report(result: BenchmarkResult) -> str:
    """Aggregates, wins of the reference method, then one per-entity table per metric."""
    methods, agg = result.methods, result.aggregates
    lines = [f"# Detection benchmark: {result.data}", ""]
    info = result.info
    lines.append(f"{info.get('entities', len(result.records))} entities, methods {', '.join(methods)}; "
                 f"{info.get('seconds', float('nan')):.0f} s on {info.get('machine', {}).get('cpu', '?')} "
                 f"({info.get('workers', 1)} worker(s)). Each entity is trained, scored and evaluated on its own; "
                 "VUS-PR/VUS-ROC as TSB-AD defines them (window from the test series' first channel), "
                 "best F1 point-wise over all thresholds.")
    lines += ["", "## Mean over entities (median in brackets)", ""]
    lines.append("| method | " + " | ".join(METRIC_LABELS[k] for k in METRICS) + " | entities | errors |")
    lines.append("|---|" + "---|" * (len(METRICS) + 2))
    for m in methods:
        a = agg["methods"][m]
        cells = [f"{_fmt(a[k]['mean'])} ({_fmt(a[k]['median'])})" for k in METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {a[METRICS[0]]['n']} | {a['errors']} |")
    ref = agg.get("reference")
    if ref and agg["versus"]:
        lines += ["", f"## {ref} against each method: wins / losses / ties over entities", ""]
        lines.append("| versus | " + " | ".join(METRIC_LABELS[k] for k in METRICS) + " |")
        lines.append("|---|" + "---|" * len(METRICS))
        for other, row in agg["versus"].items():
            lines.append(f"| {other} | " + " | ".join(f"{row[k]['wins']} / {row[k]['losses']} / {row[k]['ties']}"
                                                      for k in METRICS) + " |")
    for k in METRICS:
        lines += ["", f"## Per entity: {METRIC_LABELS[k]}", ""]
        lines.append("| entity | test steps | anomalous | " + " | ".join(methods) + " |")
        lines.append("|---|---|---|" + "---|" * len(methods))
        for r in result.records:
            cells = []
            for m in methods:
                e = r["methods"].get(m, {})
                cells.append("error" if "error" in e else _fmt(e.get("metrics", {}).get(k)))
            lines.append(f"| {r['entity']} | {r['n_test']} | {r['n_anomalous']} | " + " | ".join(cells) + " |")
    errors = [(r["entity"], m, e["error"]) for r in result.records for m, e in r["methods"].items() if "error" in e]
    undefined = sorted({f"{r['entity']}: {why}" for r in result.records for e in r["methods"].values()
                        for why in e.get("metrics", {}).get("undefined", {}).values()})
    if errors or undefined:
        lines += ["", "## Errors and undefined metrics", ""]
        lines += [f"- {ent}, {m}: {err}" for ent, m, err in errors]
        lines += [f"- {u}" for u in undefined]
    return "\n".join(lines) + "\n"


def plot_report(result: BenchmarkResult, path: str, metrics_to_plot: Sequence[str] = ("vus_pr", "aupr")) -> None:
    """Per-entity comparison: one panel per metric, entities on x (sorted by the reference method's
    value), one marker per method; the reference method drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result.methods
    ref = result.aggregates.get("reference") or methods[0]
    fig, axes = plt.subplots(len(metrics_to_plot), 1, figsize=(max(8, 0.22 * len(result.records) + 3),
                                                                 3.2 * len(metrics_to_plot)), squeeze=False)
    for ax, k in zip(axes[:, 0], metrics_to_plot):
        vals = {m: np.array([np.nan if _value(r, m, k) is None else _value(r, m, k) for r in result.records])
                for m in methods}
        order = np.argsort(-np.nan_to_num(vals[ref], nan=-1.0), kind="mergesort")
        x = np.arange(len(order))
        markers = "osD^vP*Xh"
        for i, m in enumerate(methods):
            if m == ref:
                ax.plot(x, vals[m][order], "-o", color="black", ms=3.5, lw=1.2, label=m, zorder=5)
            else:
                ax.plot(x, vals[m][order], markers[i % len(markers)], ms=4, alpha=0.75, label=m)
        ax.set_xticks(x)
        ax.set_xticklabels([result.records[i]["entity"].split("/")[-1] for i in order], rotation=90, fontsize=7)
        ax.set_ylabel(METRIC_LABELS[k])
        means = ", ".join(f"{m} {_fmt(result.aggregates['methods'][m][k]['mean'])}" for m in methods)
        ax.set_title(f"{METRIC_LABELS[k]} per entity (mean: {means})", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=len(methods))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(result: BenchmarkResult, out_dir: str) -> List[str]:
    """``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` in ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"benchmark.{ext}") for ext in ("md", "json", "png")]
    with open(paths[0], "w") as fh:
        fh.write(markdown_report(result))
    _write_json_atomic(paths[1], result.to_dict())
    plot_report(result, paths[2])
    return paths
