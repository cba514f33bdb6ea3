"""Throughput benchmarks: AutoMask attention per backend against baselines, and AMAD end to end.

``amad-fast bench`` (or ``python -m amad_fast.bench``) measures, on the auto-picked device (cuda
if present, else cpu), every backend that :func:`amad_fast.available_backends` reports usable
(Triton is skipped on CPU, where only its slow interpreter runs), and in the same run the
baselines: torch.compile of the reference, ``scaled_dot_product_attention`` doing plain attention
of the same shape, ``nn.MultiheadAttention`` and ``AutoMaskAttention`` (both with projections).
Every comparison is a ratio of two figures from one run. It prints a table and writes JSON,
markdown and a PNG plot. The methods are spelled out in :data:`METHOD_NOTES` (also in the JSON).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

SCHEMA = "amad_fast.bench/1"

METHOD_NOTES = {
    "timing": (
        "time.perf_counter around a sample of n_inner back-to-back calls (torch.cuda.synchronize before "
        "and after each sample on GPU), after warm-up calls (the last one's time chooses n_inner so one "
        "sample lasts at least min_sample_s); samples of all cases of one shape are taken round-robin "
        "so that load from other processes hits them alike; median and interquartile range (q75 - q25) over the samples, per call. "
        "Forward is timed under torch.no_grad() (inference/scoring); fwd+bwd runs the forward with all "
        "inputs requiring grad, then one backward with fixed random upstream gradients into every "
        "output that was computed (grads reset to None before each call). The finite-value scan of "
        "the inputs (amad_fast.set_finite_checks) is off while timing."
    ),
    "windows_per_s": "B / median time of one call.",
    "bytes": (
        "Minimum bytes a fused kernel must move, with N = B*H*L*D and e = element size: AutoMask "
        "forward reads q, k, v once and writes out: 4*N*e, plus 2*B*H*L*e for kl_local and kl_global "
        "(need_divergence) and 2*N*e for out_local and out_global (need_branches). fwd+bwd adds the "
        "backward's minimum: read dout (N*e) and the upstream grads of the other outputs, write dq, dk, "
        "dv (3*N*e); the backward's re-read of q, k, v (and any saved statistics) is not counted, so "
        "the GB/s of fwd+bwd is a lower bound of the traffic. The parameters (freqs, weights, mix) are "
        "negligible and not counted. SDPA and nn.MultiheadAttention are charged the same q, k, v, out "
        "(and dout, dq, dk, dv) bytes of their attention core: their GB/s is an effective figure "
        "proportional to 1/time, comparable across rows of one shape. achieved GB/s = bytes / time."
    ),
    "peak_memory": (
        "Extra memory one call allocates beyond what existed before it (inputs, parameters and "
        "upstream grads are allocated beforehand and not counted). GPU: torch.cuda.max_memory_allocated "
        "after reset_peak_memory_stats, minus memory_allocated before the call. CPU: one call under "
        "torch.profiler with profile_memory=True; the allocator's alloc/free events are summed in time "
        "order and the maximum of the running sum is the peak. Limits on CPU: it sees only allocations "
        "through torch's CPU allocator (not a backend's own malloc/stack or a library's scratch "
        "buffers such as oneDNN's), and profiling perturbs nothing but time."
    ),
    "baselines": (
        "reference: the plain-PyTorch source of truth (materialises both L x L maps). "
        "compile(reference): torch.compile of the reference with default options, compiled afresh for "
        "each shape (torch._dynamo.reset()); compile_s is the first call's time, apart from the timings "
        "(inductor's on-disk cache can shorten it on a repeat run). "
        "sdpa: torch.nn.functional.scaled_dot_product_attention of the same q, k, v (plain attention, "
        "one map, no divergence). mha: nn.MultiheadAttention(E=H*D, H, batch_first=True) on x (B, L, E) "
        "with need_weights=False; it includes the input projection (3 E x E) and output projection, "
        "and in no-grad eval it may take torch's fused native fast path. amad-module: AutoMaskAttention "
        "(same projections as mha, backend auto: the first usable of triton (GPU only), cpp, reference) for an "
        "apples-to-apples comparison with mha."
    ),
    "batch": (
        "B is chosen per L to keep B*L (so the elements of q, k, v) roughly constant: "
        "B = max(1, round(B0 * 100 / L)), B0 the batch at L = 100; attention work grows as B*L^2, i.e. "
        "linearly in L along the sweep."
    ),
    "ratios": "x_sdpa = time / sdpa time; ref_over = reference time / time; both within one run and shape.",
}

DEFAULT_LENGTHS = (64, 100, 256, 512, 1024, 2048)
QUICK_LENGTHS = (64, 256)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
BASELINE_LABELS = ("compile(reference)", "sdpa", "mha", "amad-module")


# --------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_features() -> str:
    """The vector extensions that matter for CPU kernels, from /proc/cpuinfo flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ",".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    except OSError:
        pass
    return ""


def load_average() -> Optional[List[float]]:
    """1/5/15-minute load average (other processes on the machine skew CPU timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    """Machine, versions and backend status, for the JSON."""
    import amad_fast
    from amad_fast._extension import build_info, extension_error

    info = {
        "device": str(device),
        "cpu_model": _cpu_model(),
        "cpu_features": _cpu_features(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_average(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "amad_fast": getattr(amad_fast, "__version__", "?"),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001 - any import problem is just reported
        info["triton"] = f"unavailable ({type(exc).__name__})"
    try:
        info["extension_build"] = build_info() or f"not loaded: {extension_error()}"
    except Exception as exc:  # noqa: BLE001
        info["extension_build"] = f"error: {exc}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_name"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_capability"] = f"{props.major}.{props.minor}"
    info["backends"] = {name: str(st) for name, st in amad_fast.available_backends().items()}
    return info


def machine_slug(info: dict) -> str:
    """Short file-name stem for one machine, e.g. ``cpu-amd-epyc`` or ``cuda-nvidia-h200``."""
    name = info.get("gpu_name") if info["device"].startswith("cuda") else info["cpu_model"]
    name = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$|\d+-core", "", name.lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"{info['device'].split(':')[0]}-{name or 'unknown'}"


# ---------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(samples: List[float], n_inner: int) -> dict:
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else samples * 3
    return {
        "median_s": statistics.median(samples),
        "q25_s": q[0],
        "q75_s": q[2],
        "iqr_s": q[2] - q[0],
        "min_s": samples[0],
        "samples": len(samples),
        "n_inner": n_inner,
    }


def time_interleaved(
    fns: Dict[str, Callable[[], object]],
    device: torch.device,
    *,
    warmup: int = 3,
    repeats: int = 15,
    min_sample_s: float = 0.01,
    budget_s: float = 4.0,
) -> Tuple[Dict[str, dict], Dict[str, BaseException]]:
    """Median and IQR of one call of each function, samples taken round-robin.

    Each function gets ``warmup`` calls; the last one's time sets ``n_inner`` (calls per sample,
    so one sample lasts at least ``min_sample_s``). Then up to ``repeats`` rounds,
    each taking one sample of every function in turn: load from other processes falls on all of
    them alike, which keeps ratios within a round honest. Rounds shrink (never below 3) to stay
    near ``budget_s`` per function. Returns (stats per name, exception per name that failed).
    """
    live: Dict[str, Tuple[Callable[[], object], int]] = {}
    errors: Dict[str, BaseException] = {}
    cost = 0.0
    for name, fn in fns.items():
        try:
            for _ in range(max(1, warmup) - 1):
                fn()
            _sync(device)
            t0 = time.perf_counter()
            fn()  # the last warm-up call also calibrates
            _sync(device)
            once = max(time.perf_counter() - t0, 1e-9)
        except Exception as exc:  # noqa: BLE001 - reported per function
            errors[name] = exc
            continue
        n_inner = max(1, min(10_000, math.ceil(min_sample_s / once)))
        live[name] = (fn, n_inner)
        cost += once * n_inner
    rounds = int(max(3, min(repeats, (budget_s * max(1, len(live))) // max(cost, 1e-9))))
    samples: Dict[str, List[float]] = {name: [] for name in live}
    for _ in range(rounds):
        for name, (fn, n_inner) in list(live.items()):
            try:
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(n_inner):
                    fn()
                _sync(device)
            except Exception as exc:  # noqa: BLE001
                errors[name] = exc
                del live[name]
                continue
            samples[name].append((time.perf_counter() - t0) / n_inner)
    return {name: _summary(samples[name], n_inner) for name, (_, n_inner) in live.items()}, errors


def time_fn(fn: Callable[[], object], device: torch.device, **timing) -> dict:
    """:func:`time_interleaved` for one function; its exception propagates."""
    stats, errors = time_interleaved({"fn": fn}, device, **timing)
    if errors:
        raise errors["fn"]
    return stats["fn"]


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block: the profiler's C++ side (Kineto) writes
    ``USDT ... profiler_start`` / ``profiler_stop`` lines straight to it for every profiled call
    (about 40 per benchmark run, among the results), and no setting of torch turns them off.
    Python-level errors still surface: an exception leaves the block and is printed after it."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (e.g. closed): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable[[], object], device: torch.device) -> Tuple[Optional[int], str]:
    """Extra bytes one call of ``fn`` allocates at its peak, and the method (see METHOD_NOTES)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base), "cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        if e.device_type() == torch.autograd.DeviceType.CPU:
            running += e.nbytes()
            peak = max(peak, running)
    return int(peak), "profiler allocator events (running sum)"


def automask_bytes(B: int, H: int, L: int, D: int, elt: int, *, divergence: bool, branches: bool, backward: bool) -> int:
    """Minimum bytes a fused AutoMask kernel moves (formula in METHOD_NOTES['bytes'])."""
    n, rows = B * H * L * D, B * H * L
    extra = (2 * rows if divergence else 0) + (2 * n if branches else 0)
    total = 4 * n + extra
    if backward:
        total += 4 * n + extra  # dout (+ upstream grads of kl / branches) read, dq dk dv written
    return total * elt


def plain_attention_bytes(B: int, H: int, L: int, D: int, elt: int, *, backward: bool) -> int:
    """q, k, v read and out written (fwd); plus dout read and dq, dk, dv written (fwd+bwd)."""
    return (8 if backward else 4) * B * H * L * D * elt


# ----------------------------------------------------------------------------------------- cases
@dataclass
class Shape:
    B: int
    H: int
    L: int
    D: int
    S: int
    dtype: torch.dtype
    device: torch.device

    def as_dict(self) -> dict:
        return {"B": self.B, "H": self.H, "L": self.L, "D": self.D, "S": self.S, "dtype": str(self.dtype).replace("torch.", "")}


@dataclass
class Case:
    """One thing to time at one shape: a no-grad forward and a forward+backward step."""

    label: str
    family: str  # "automask" (a backend), "baseline"
    forward: Callable[[], object]
    step: Callable[[], object]
    bytes_fwd: int
    bytes_fwdbwd: int
    compiled: bool = False  # torch.compile'd: its first call (the compilation) is timed apart


def _automask_inputs(shape: Shape, seed: int, requires_grad: bool):
    g = torch.Generator(device="cpu").manual_seed(seed)
    from amad_fast.reference import default_freqs

    def rnd(*size, dtype=shape.dtype):
        return torch.randn(*size, generator=g, dtype=torch.float32).to(device=shape.device, dtype=dtype)

    q, k, v = (rnd(shape.B, shape.H, shape.L, shape.D) for _ in range(3))
    pdtype = torch.float32 if shape.dtype in (torch.bfloat16, torch.float16) else shape.dtype
    freqs = default_freqs(shape.H, shape.S, shape.D // 2).to(shape.device, pdtype)
    weights = torch.full((shape.H, shape.S), 1.0 / shape.S, device=shape.device, dtype=pdtype)
    mix = (0.1 * rnd(shape.H, dtype=pdtype))
    leaves = [q, k, v, freqs, weights, mix]
    for t in leaves:
        t.requires_grad_(requires_grad)
    return leaves, g


def _grads_like(outs: Sequence[Tensor], g: torch.Generator) -> List[Tensor]:
    return [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]


def _make_step(fwd: Callable[..., Sequence[Tensor]], leaves: List[Tensor], g: torch.Generator, params=()):
    """A fwd+bwd callable: reset grads, forward, backward with fixed upstream grads."""
    grads: List[Tensor] = []
    targets = [t for t in list(leaves) + list(params) if t.requires_grad]

    def step():
        for t in targets:
            t.grad = None
        outs = [o for o in fwd(*leaves) if o is not None]
        if not grads:
            grads.extend(_grads_like(outs, g))
        torch.autograd.backward(outs, grads)

    return step


def _no_grad(fn: Callable[..., object], *args) -> Callable[[], object]:
    def call():
        with torch.no_grad():
            return fn(*args)

    return call


def automask_cases(
    shape: Shape, backends: Sequence[str], *, divergence: bool, branches: bool, compile_reference: bool, seed: int = 0
) -> List[Case]:
    """The AutoMask backends and torch.compile(reference) at ``shape``."""
    from amad_fast import automask_attention
    from amad_fast.reference import automask_attention_reference

    elt = torch.empty((), dtype=shape.dtype).element_size()
    nb = dict(divergence=divergence, branches=branches)
    b_f = automask_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=False, **nb)
    b_fb = automask_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=True, **nb)
    cases = []
    for name in backends:

        def fwd(q, k, v, f, w, m, _name=name):
            return tuple(automask_attention(
                q, k, v, f, w, m, need_divergence=divergence, need_branches=branches, backend=_name
            ))

        plain, g = _automask_inputs(shape, seed, False)
        leaves, g2 = _automask_inputs(shape, seed, True)
        cases.append(Case(name, "automask", _no_grad(fwd, *plain), _make_step(fwd, leaves, g2), b_f, b_fb))
    if compile_reference:

        def ref(q, k, v, f, w, m):
            return tuple(automask_attention_reference(q, k, v, f, w, m, need_divergence=divergence, need_branches=branches))

        compiled = torch.compile(ref)
        plain, _ = _automask_inputs(shape, seed, False)
        leaves, g2 = _automask_inputs(shape, seed, True)
        cases.append(Case("compile(reference)", "baseline", _no_grad(compiled, *plain),
                          _make_step(compiled, leaves, g2), b_f, b_fb, compiled=True))
    return cases


def plain_cases(shape: Shape, *, which: Sequence[str] = ("sdpa", "mha", "amad-module"), seed: int = 0) -> List[Case]:
    """The baselines named in ``which`` at ``shape``: SDPA (plain attention), nn.MultiheadAttention,
    AutoMaskAttention (backend auto)."""
    from amad_fast.modules import AutoMaskAttention

    elt = torch.empty((), dtype=shape.dtype).element_size()
    b_f = plain_attention_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=False)
    b_fb = plain_attention_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=True)
    g = torch.Generator().manual_seed(seed)
    dev, dt = shape.device, shape.dtype

    def rnd(*size, rg=False):
        return torch.randn(*size, generator=g).to(dev, dt).requires_grad_(rg)

    sdpa = nn.functional.scaled_dot_product_attention
    qkv = [rnd(shape.B, shape.H, shape.L, shape.D) for _ in range(3)]
    qkv_g = [rnd(shape.B, shape.H, shape.L, shape.D, rg=True) for _ in range(3)]
    cases = []
    if "sdpa" in which:
        cases.append(Case("sdpa", "baseline", _no_grad(sdpa, *qkv), _make_step(lambda *a: (sdpa(*a),), qkv_g, g), b_f, b_fb))

    E = shape.H * shape.D
    modules = []
    if "mha" in which:
        modules.append(("mha", nn.MultiheadAttention(E, shape.H, batch_first=True, device=dev, dtype=dt)))
    if "amad-module" in which:
        pdt = torch.float32 if dt in (torch.bfloat16, torch.float16) else dt
        am = AutoMaskAttention(E, shape.H, num_scales=shape.S, batch_first=True, device=dev, dtype=pdt)
        modules.append(("amad-module", am))
    for label, mod in modules:
        if label == "amad-module" and mod.freqs.dtype != dt:
            # projections in the activation dtype, AutoMask parameters kept in float32
            for p in (mod.in_proj_weight, mod.in_proj_bias, mod.out_proj.weight, mod.out_proj.bias):
                p.data = p.data.to(dt)
        mod.eval()

        def fwd(x, _mod=mod):
            return (_mod(x, x, x, need_weights=False)[0],)

        x = rnd(shape.B, shape.L, E)
        xg = rnd(shape.B, shape.L, E, rg=True)
        cases.append(Case(label, "baseline", _no_grad(fwd, x), _make_step(fwd, [xg], g, params=list(mod.parameters())), b_f, b_fb))
    return cases


@contextlib.contextmanager
def _finite_checks_off():
    from amad_fast import _validation

    before = _validation.finite_checks_enabled()
    _validation.set_finite_checks(False)
    try:
        yield
    finally:
        _validation.set_finite_checks(before)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _failure(rec: dict, exc: BaseException) -> dict:
    oom = "out of memory" in str(exc).lower() or isinstance(exc, torch.cuda.OutOfMemoryError)
    rec["status"] = "oom" if oom else "failed"
    rec["error"] = _error_text(exc)
    if os.environ.get("AMAD_BENCH_TRACEBACK"):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return rec


def measure_group(cases: Sequence[Case], shape: Shape, mode: str, timing: dict, *, memory: bool = True) -> List[dict]:
    """Time every case at one shape in one mode ("fwd" or "fwdbwd"), samples interleaved.

    Never raises: a failing case becomes a record with status "failed" or "oom". A compiled
    case's first call (the compilation) is timed apart as ``compile_s``.
    """
    recs, fns = {}, {}
    with _finite_checks_off():
        for case in cases:
            fn = case.forward if mode == "fwd" else case.step
            rec = {"label": case.label, "family": case.family, "mode": mode, **shape.as_dict(), "status": "ok"}
            recs[case.label] = rec
            if case.compiled:
                try:
                    _sync(shape.device)
                    t0 = time.perf_counter()
                    fn()
                    _sync(shape.device)
                    rec["compile_s"] = time.perf_counter() - t0
                except Exception as exc:  # noqa: BLE001
                    _failure(rec, exc)
                    continue
            fns[case.label] = fn
        stats, errors = time_interleaved(fns, shape.device, **timing)
        for case in cases:
            rec = recs[case.label]
            if case.label in errors:
                _failure(rec, errors[case.label])
            if case.label not in stats or rec["status"] != "ok":
                continue
            t = stats[case.label]
            rec.update(t)
            rec["bytes"] = case.bytes_fwd if mode == "fwd" else case.bytes_fwdbwd
            rec["gbps"] = rec["bytes"] / t["median_s"] / 1e9
            rec["windows_per_s"] = shape.B / t["median_s"]
            if memory:
                try:
                    rec["peak_bytes"], rec["peak_method"] = peak_memory(fns[case.label], shape.device)
                except Exception as exc:  # noqa: BLE001
                    rec["peak_error"] = _error_text(exc)
            if shape.device.type == "cuda":
                torch.cuda.empty_cache()
    return [recs[c.label] for c in cases]


def add_ratios(records: List[dict]) -> None:
    """x_sdpa = time / sdpa time and ref_over = reference time / time, within each shape and mode."""
    groups: Dict[tuple, Dict[str, dict]] = {}
    for r in records:
        if r.get("status") == "ok":
            key = (r.get("part", "attention"), r["dtype"], r["B"], r["H"], r["L"], r["D"], r["S"], r["mode"])
            groups.setdefault(key, {})[r["label"]] = r
    for by_label in groups.values():
        sdpa, ref = by_label.get("sdpa"), by_label.get("reference")
        for r in by_label.values():
            if sdpa:
                r["x_sdpa"] = r["median_s"] / sdpa["median_s"]
            if ref:
                r["ref_over"] = ref["median_s"] / r["median_s"]


def benchmark_backends(device: torch.device) -> Tuple[List[str], Dict[str, str]]:
    """Usable backends to measure on ``device``, and why the others are left out."""
    from amad_fast import available_backends

    chosen, skipped = [], {}
    for name, st in available_backends().items():
        if not st.available:
            skipped[name] = st.reason
        elif name == "triton" and device.type != "cuda":
            skipped[name] = "on CPU Triton runs only in its slow interpreter; not a throughput figure"
        else:
            chosen.append(name)
    return chosen, skipped


def batch_for_length(L: int, batch100: int) -> int:
    """Keep B*L roughly constant: B = max(1, round(batch100 * 100 / L))."""
    return max(1, int(round(batch100 * 100 / L)))


def run_attention_sweep(
    device: torch.device,
    lengths: Sequence[int],
    head_dims: Sequence[int],
    dtypes: Sequence[torch.dtype],
    *,
    batch100: int,
    heads: int = 8,
    scales: int = 4,
    backends: Optional[Sequence[str]] = None,
    compile_reference: bool = True,
    divergence: bool = True,
    branches: bool = False,
    timing: Optional[dict] = None,
    memory: bool = True,
    log=print,
) -> List[dict]:
    """The attention sweep: every backend and baseline at every (dtype, D, L), both modes."""
    if backends is None:
        backends, _ = benchmark_backends(device)
    timing = timing or {}
    records = []
    for dtype in dtypes:
        for D in head_dims:
            for L in lengths:
                shape = Shape(batch_for_length(L, batch100), heads, L, D, scales, dtype, device)
                if compile_reference:
                    torch._dynamo.reset()  # fresh compile per shape, not the recompile limit
                try:
                    cases = automask_cases(shape, backends, divergence=divergence, branches=branches,
                                           compile_reference=compile_reference)
                    cases += plain_cases(shape)
                except Exception as exc:  # noqa: BLE001
                    records.append({"part": "attention", "label": "*", "mode": "*", **shape.as_dict(),
                                    "status": "failed", "error": _error_text(exc)})
                    continue
                for mode in ("fwd", "fwdbwd"):
                    for rec in measure_group(cases, shape, mode, timing, memory=memory):
                        rec["part"] = "attention"
                        records.append(rec)
                        log(_progress_line(rec))
                del cases
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    add_ratios(records)
    return records


def _progress_line(rec: dict) -> str:
    head = f"  {rec['dtype']:>8} L={rec['L']:<5} D={rec['D']:<3} B={rec['B']:<4} {rec['mode']:<6} {rec['label']:<20}"
    if rec["status"] != "ok":
        return f"{head} {rec['status']}: {rec.get('error', '')}"
    extra = f"  (compile {rec['compile_s']:.1f} s)" if "compile_s" in rec else ""
    return f"{head} {rec['median_s'] * 1e3:10.3f} ms{extra}"


# ------------------------------------------------------------------------------------ end to end
def e2e_model_kind() -> str:
    """"amad" when amad_fast.model provides the AMAD model, else "encoder-stack"."""
    try:
        from amad_fast import model  # noqa: F401

        return "amad" if hasattr(model, "AMAD") else "encoder-stack"
    except Exception:  # noqa: BLE001
        return "encoder-stack"


class _EncoderStack(nn.Module):
    """Fallback end-to-end model: embedding, N TransformerEncoderLayers with AutoMaskAttention, head."""

    def __init__(self, channels, d_model, n_heads, n_layers, d_ff, num_scales, backend):
        super().__init__()
        from amad_fast.modules import AutoMaskAttention

        self.embed = nn.Linear(channels, d_model)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True)
            layer.self_attn = AutoMaskAttention(d_model, n_heads, num_scales=num_scales, backend=backend)
            layer.self_attn.keep_terms = True
            self.layers.append(layer)
        self.head = nn.Linear(d_model, channels)

    def forward(self, x):
        h = self.embed(x)
        js = []
        for layer in self.layers:
            h = layer(h)
            js.append(layer.self_attn.last_terms.js)
        return self.head(h), torch.stack(js).mean()


def _e2e_build(backend: str, channels: int, device: torch.device, sizes: dict):
    """(model, train_step(x), score(x)) for one backend; uses the AMAD trainer when present."""
    kind = e2e_model_kind()
    if kind == "amad":
        from amad_fast import model as amad_model

        m = amad_model.AMAD(channels, backend=backend, **sizes).to(device)
        train_step = _amad_train_step(m)

        def score(x):
            with torch.no_grad():
                return m(x, need_branches=False)

        return m, train_step, score
    m = _EncoderStack(channels, backend=backend, **sizes).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)

    def train_step(x):
        opt.zero_grad(set_to_none=True)
        recon, js = m(x)
        loss = ((recon - x) ** 2).mean() - 3.0 * js
        loss.backward()
        opt.step()

    def score(x):
        with torch.no_grad():
            return m(x)

    return m, train_step, score


def _amad_train_step(m: nn.Module):
    """One AMAD optimiser step as amad_fast.train runs it (spec §3, default TrainConfig): one
    forward, the Max-Min gradient routes, Adam. Falls back to a reconstruction-only step when
    amad_fast.train lacks those functions."""
    try:
        from amad_fast.train import TrainConfig, compute_losses, maxmin_gradients

        cfg = TrainConfig()
    except Exception:  # noqa: BLE001
        compute_losses = None
        cfg = None
    params = list(m.parameters())
    opt = torch.optim.Adam(params, lr=1e-4 if cfg is None else cfg.lr)

    def step(x):
        if compute_losses is not None:
            losses = compute_losses(m, x, cfg.tau)
            grads = maxmin_gradients(m, losses, cfg.maxmin, cfg.k, cfg.mu)
            for p, g in zip(params, grads):
                p.grad = g
        else:
            out = m(x, need_branches=True)
            ((out[0] - x) ** 2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step.route = "amad_fast.train (compute_losses + maxmin_gradients, TrainConfig defaults) + Adam" if cfg else "mse only"
    return step


def e2e_sizes(kind: str, overrides: Optional[dict] = None) -> dict:
    """Default model size (AMAD's own defaults, or the spec-sized encoder stack), with overrides."""
    sizes = {} if kind == "amad" else {"d_model": 512, "n_heads": 8, "n_layers": 3, "d_ff": 512, "num_scales": 4}
    sizes.update(overrides or {})
    if kind != "amad" and overrides and "d_model" in overrides:
        sizes["d_ff"] = overrides["d_model"]
    return sizes


def run_e2e(
    device: torch.device,
    *,
    batch: int,
    length: int = 100,
    channels: int = 25,
    backends: Optional[Sequence[str]] = None,
    timing: Optional[dict] = None,
    overrides: Optional[dict] = None,
    log=print,
) -> List[dict]:
    """Training steps/s and scoring windows/s of the model at its default size, per backend."""
    if backends is None:
        backends, _ = benchmark_backends(device)
    timing = timing or {}
    kind = e2e_model_kind()
    records, built = [], {}
    for name in backends:
        base = {"part": "e2e", "model": kind, "label": name, "B": batch, "L": length, "C": channels,
                "dtype": "float32"}
        try:
            torch.manual_seed(0)
            m, train_step, score = _e2e_build(name, channels, device, e2e_sizes(kind, overrides))
            x = torch.randn(batch, length, channels, device=device)
            base["params"] = sum(p.numel() for p in m.parameters())
            built[name] = (base, m, train_step, score, x)
        except Exception as exc:  # noqa: BLE001
            records.append(_failure({**base, "mode": "*"}, exc))
            log(f"  e2e {name}: failed: {records[-1]['error']}")
    for mode in ("train", "score"):
        fns = {}
        for name, (base, m, train_step, score, x) in built.items():
            m.train(mode == "train")
            fns[name] = (lambda ts=train_step, x=x: ts(x)) if mode == "train" else (lambda sc=score, x=x: sc(x))
        with _finite_checks_off():
            stats, errors = time_interleaved(fns, device, **timing)
        for name, (base, *_rest) in built.items():
            rec = {**base, "mode": mode, "status": "ok"}
            if name in errors:
                _failure(rec, errors[name])
            else:
                t = stats[name]
                rec.update(t)
                rec["windows_per_s"] = batch / t["median_s"]
                if mode == "train":
                    rec["steps_per_s"] = 1.0 / t["median_s"]
            records.append(rec)
            log(f"  e2e {name:<10} {mode:<5} " + (f"{rec['median_s'] * 1e3:9.2f} ms" if rec["status"] == "ok" else rec["error"]))
    ref = {r["mode"]: r for r in records if r.get("label") == "reference" and r.get("status") == "ok"}
    for r in records:
        if r.get("status") == "ok" and r["mode"] in ref:
            r["ref_over"] = ref[r["mode"]]["median_s"] / r["median_s"]
    return records


# -------------------------------------------------------------------------------------- output
def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def format_attention_table(records: List[dict]) -> str:
    head = (f"{'dtype':>8} {'L':>5} {'D':>3} {'B':>4} {'mode':<6} {'label':<19} {'median ms':>10} {'IQR ms':>8} "
            f"{'min ms':>9} {'windows/s':>10} {'GB/s':>7} {'peak MB':>8} {'x sdpa':>7} {'ref/x':>6}")
    lines = [head, "-" * len(head)]
    for r in records:
        if r.get("part", "attention") != "attention":
            continue
        pre = f"{r['dtype']:>8} {r['L']:>5} {r['D']:>3} {r['B']:>4} {r['mode']:<6} {r['label']:<19}"
        if r["status"] != "ok":
            lines.append(f"{pre} {r['status']}: {r.get('error', '')[:60]}")
            continue
        peak = r.get("peak_bytes")
        lines.append(
            f"{pre} {r['median_s'] * 1e3:10.3f} {r['iqr_s'] * 1e3:8.3f} {r['min_s'] * 1e3:9.3f} {r['windows_per_s']:10.1f} "
            f"{r['gbps']:7.2f} "
            f"{_fmt(None if peak is None else peak / 2**20, '8.1f'):>8} {_fmt(r.get('x_sdpa'), '7.2f'):>7} "
            f"{_fmt(r.get('ref_over'), '6.2f'):>6}"
        )
    return "\n".join(lines)


def format_e2e_table(records: List[dict]) -> str:
    head = f"{'model':<14} {'label':<10} {'mode':<6} {'B':>4} {'median ms':>10} {'IQR ms':>8} {'steps/s':>8} {'windows/s':>10} {'ref/x':>6}"
    lines = [head, "-" * len(head)]
    for r in records:
        pre = f"{r['model']:<14} {r['label']:<10} {r['mode']:<6} {r['B']:>4}"
        if r["status"] != "ok":
            lines.append(f"{pre} {r['status']}: {r.get('error', '')[:60]}")
            continue
        lines.append(f"{pre} {r['median_s'] * 1e3:10.2f} {r['iqr_s'] * 1e3:8.2f} {_fmt(r.get('steps_per_s'), '8.2f'):>8} "
                     f"{r['windows_per_s']:10.1f} {_fmt(r.get('ref_over'), '6.2f'):>6}")
    return "\n".join(lines)


def _geomean(xs: List[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def summarize(records: List[dict]) -> List[str]:
    """Per measured label and mode: geometric means over the sweep's shapes of reference time / time
    and time / sdpa time, and the reference's peak memory over the label's at the largest L."""
    ok = [r for r in records if r.get("part", "attention") == "attention" and r.get("status") == "ok"]
    lines = []
    for label in dict.fromkeys(r["label"] for r in ok):
        if label in ("reference", "sdpa"):
            continue
        for mode in ("fwd", "fwdbwd"):
            rows = [r for r in ok if r["label"] == label and r["mode"] == mode]
            ref_over = [r["ref_over"] for r in rows if "ref_over" in r]
            x_sdpa = [r["x_sdpa"] for r in rows if "x_sdpa" in r]
            if not rows or not ref_over:
                continue
            text = (f"{label:<19} {mode:<6} over {len(rows)} shapes: {_geomean(ref_over):5.2f}x the reference's speed "
                    f"(range {min(ref_over):.2f}-{max(ref_over):.2f})")
            if x_sdpa:
                text += f", {_geomean(x_sdpa):5.2f}x SDPA's time"
            big = max(r["L"] for r in rows)
            mems = [(r, next((x for x in ok if x["label"] == "reference" and x["mode"] == mode
                               and (x["dtype"], x["L"], x["D"], x["B"]) == (r["dtype"], r["L"], r["D"], r["B"])), None))
                    for r in rows if r["L"] == big]
            ratios = [m["peak_bytes"] / r["peak_bytes"] for r, m in mems if m and r.get("peak_bytes") and m.get("peak_bytes")]
            if ratios:
                text += f"; at L={big} the reference needs {_geomean(ratios):.1f}x its peak memory"
            lines.append(text)
    return lines


def compile_summary(records: List[dict]) -> List[str]:
    return [f"compile(reference) {r['dtype']} L={r['L']} D={r['D']} {r['mode']}: first call {r['compile_s']:.1f} s"
            for r in records if "compile_s" in r]


def write_markdown(path: str, result: dict) -> None:
    m = result["machine"]
    hw = m.get("gpu_name") or m["cpu_model"]
    lines = [
        f"# amad_fast benchmarks: {hw} ({m['device']})",
        "",
        f"Created {result['created']} with `{result['command']}`.",
        "",
        f"- machine: {hw} ({m.get('cpu_features', '')}); {m['cpu_count']} CPUs, torch threads {m['torch_threads']}; "
        f"{m['platform']}",
        f"- load average (1/5/15 min) at start {m.get('load_average_at_start')}, at end "
        f"{m.get('load_average_at_end')}: other work on the machine inflates and spreads CPU timings",
        f"- versions: python {m['python']}, torch {m['torch']}, triton {m['triton']}, amad_fast {m['amad_fast']}, "
        f"extension {m['extension_build']}",
        "- backends: " + "; ".join(m["backends"].values()),
        "- measured: " + ", ".join(result["config"]["backends"]) + " + baselines "
        + ", ".join(result["config"]["baselines"]),
    ]
    for name, why in result["config"].get("skipped_backends", {}).items():
        lines.append(f"- not measured: {name} ({why})")
    summary = summarize(result["attention"])
    if summary:
        lines += ["", "## Summary (geometric means over the sweep; ratios within this run)", "", "```"] + summary + ["```"]
    lines += ["", "## Attention (H = %d, S = %d)" % (result["config"]["heads"], result["config"]["scales"]), "",
              "```", format_attention_table(result["attention"]), "```", ""]
    comp = compile_summary(result["attention"])
    if comp:
        lines += ["Compile time of torch.compile(reference) (first call, excluded from the timings):", ""]
        lines += [f"- {c}" for c in comp] + [""]
    if result.get("e2e"):
        lines += ["## End to end", "", result.get("e2e_note", ""), "", "```", format_e2e_table(result["e2e"]), "```", ""]
    lines += ["## Method", ""] + [f"- **{k}**: {v}" for k, v in result["notes"].items()] + [""]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


def plot(path: str, records: List[dict]) -> Optional[str]:
    """Time vs L per label, log-log, one panel per (dtype, D, mode); returns an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        return f"matplotlib unavailable: {exc}"
    ok = [r for r in records if r.get("part", "attention") == "attention" and r["status"] == "ok"]
    panels = sorted({(r["dtype"], r["D"], r["mode"]) for r in ok}, key=lambda p: (p[0], p[1], p[2] != "fwd"))
    if not panels:
        return "nothing to plot"
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    labels = list(dict.fromkeys(r["label"] for r in ok))
    for ax, (dt, D, mode) in zip(axes.flat, panels):
        for label in labels:
            pts = sorted((r["L"], r["median_s"] * 1e3, r["q25_s"] * 1e3, r["q75_s"] * 1e3) for r in ok
                         if (r["dtype"], r["D"], r["mode"], r["label"]) == (dt, D, mode, label))
            if pts:
                med = [p[1] for p in pts]
                spread = [[m - p[2] for m, p in zip(med, pts)], [p[3] - m for m, p in zip(med, pts)]]
                ax.errorbar([p[0] for p in pts], med, yerr=spread, marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L (B shrinks as L grows: B*L ~ const)")
        ax.set_ylabel("median ms per call (bars: IQR)")
        ax.set_title(f"{mode}, D={D}, {dt}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ------------------------------------------------------------------------------------------- CLI
def _int_list(text: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _dtype_list(text: str) -> List[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad:
        raise argparse.ArgumentTypeError(f"expected dtypes among {sorted(DTYPES)}, got {bad}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``amad-fast bench`` / ``python -m amad_fast.bench``."""
    parser.add_argument("--quick", action="store_true",
                        help="small sweep (L 64,256; D 64; few repeats; small B; no compile): well under 2 minutes on CPU")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available, else cpu")
    parser.add_argument("--parts", default="attention,e2e", help="comma list among attention,e2e (default both)")
    parser.add_argument("--lengths", type=_int_list, help=f"window lengths L (default {','.join(map(str, DEFAULT_LENGTHS))})")
    parser.add_argument("--head-dims", type=_int_list, help="head dims D (default 32,64)")
    parser.add_argument("--dtypes", type=_dtype_list, help="default float32 on CPU, bfloat16,float32 on GPU")
    parser.add_argument("--batch", type=int, help="batch B0 at L=100; B = round(B0*100/L) (default CPU 8, GPU 512; quick 4)")
    parser.add_argument("--heads", type=int, default=8, help="H (default 8)")
    parser.add_argument("--scales", type=int, default=4, help="S (default 4)")
    parser.add_argument("--backends", help="comma list of backends to measure (default: every usable one)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="include torch.compile(reference) (default on, off with --quick)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--branches", action="store_true", help="also return out_local/out_global (need_branches)")
    parser.add_argument("--no-divergence", action="store_true", help="skip kl_local/kl_global (need_divergence=False)")
    parser.add_argument("--repeats", type=int, help="timed samples per case (default 15; quick 5)")
    parser.add_argument("--warmup", type=int, help="warm-up calls per case, the last also calibrates (default 3; quick 1)")
    parser.add_argument("--min-sample-ms", type=float, help="shortest sample; calls are repeated within it (default 10; quick 2)")
    parser.add_argument("--budget-s", type=float, help="rough time budget per case and mode (default 4; quick 0.4)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for CPU runs (default: torch's own choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--e2e-batch", type=int, help="windows per batch in the end-to-end benchmark (default CPU 32, GPU 256; quick 4)")
    parser.add_argument("--e2e-d-model", type=int, help="override the model's d_model (default: the model's own default)")
    parser.add_argument("--e2e-layers", type=int, help="override the model's number of blocks (default: the model's own)")
    parser.add_argument("--out-dir", default="bench_results", help="where the JSON, markdown and PNG go (default ./bench_results)")
    parser.add_argument("--name", help="file stem (default <device>-<model>[-quick], e.g. cpu-amd-epyc)")
    parser.add_argument("--no-files", action="store_true", help="print the table only")


def resolve_config(args) -> dict:
    """Defaults filled in from --quick and the device."""
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: expected a CUDA device, got none (torch.cuda.is_available() is False)")
    gpu, quick = device.type == "cuda", args.quick
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("attention", "e2e")]
    if bad:
        raise SystemExit(f"--parts: expected names among attention,e2e, got {bad}")
    pick = lambda given, q, full: given if given is not None else (q if quick else full)  # noqa: E731
    return {
        "device": device,
        "parts": parts,
        "lengths": args.lengths or list(QUICK_LENGTHS if quick else DEFAULT_LENGTHS),
        "head_dims": args.head_dims or ([64] if quick else [32, 64]),
        "dtypes": args.dtypes or (["bfloat16", "float32"] if gpu and not quick else (["bfloat16"] if gpu else ["float32"])),
        "batch100": pick(args.batch, 64 if gpu else 4, 512 if gpu else 8),
        "heads": args.heads,
        "scales": args.scales,
        "compile": pick(args.compile, False, True),
        "divergence": not args.no_divergence,
        "branches": args.branches,
        "timing": {
            "repeats": pick(args.repeats, 5, 15),
            "warmup": pick(args.warmup, 1, 3),
            "min_sample_s": pick(args.min_sample_ms, 2.0, 10.0) / 1e3,
            "budget_s": pick(args.budget_s, 0.4, 4.0),
        },
        "memory": not args.no_memory,
        "e2e_batch": pick(args.e2e_batch, 4, 256 if gpu else 32),
        "e2e_overrides": {k: v for k, v in (("d_model", args.e2e_d_model), ("n_layers", args.e2e_layers)) if v},
        "backends": [b.strip() for b in args.backends.split(",")] if args.backends else None,
        "quick": quick,
    }


def _command_line() -> str:
    """How this run was started, e.g. ``python -m amad_fast.bench --quick`` or ``amad-fast bench --quick``."""
    if not sys.argv:
        return "?"
    prog = sys.argv[0] or "python"
    if prog.endswith(os.path.join("amad_fast", "bench.py")):
        prog = "python -m amad_fast.bench"
    elif prog.endswith(".py"):
        prog = "python " + os.path.relpath(prog)
    else:
        prog = os.path.basename(prog)
    return " ".join([prog] + sys.argv[1:])


def run(args) -> int:
    """Run the benchmark described by parsed ``args``; print the tables; write the files."""
    threads_before = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)  # --threads must not leak into a caller (tests, CLI)


def _run(args) -> int:
    cfg = resolve_config(args)
    device = cfg["device"]
    if args.threads:
        torch.set_num_threads(args.threads)
    backends, skipped = benchmark_backends(device)
    if cfg["backends"] is not None:
        unknown = [b for b in cfg["backends"] if b not in backends]
        if unknown:
            raise SystemExit(f"--backends: expected usable backends among {backends}, got {unknown} "
                             f"(unusable: {skipped})")
        backends = cfg["backends"]
    info = machine_info(device)
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"amad_fast bench on {info.get('gpu_name') or info['cpu_model']} ({device}); backends {backends}; "
        f"skipped {sorted(skipped)}")
    baselines = (["compile(reference)"] if cfg["compile"] else []) + ["sdpa", "mha", "amad-module"]
    result = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": _command_line(),
        "machine": info,
        "config": {
            "device": str(device), "quick": cfg["quick"], "parts": cfg["parts"], "lengths": cfg["lengths"],
            "head_dims": cfg["head_dims"], "dtypes": cfg["dtypes"], "batch_at_L100": cfg["batch100"],
            "heads": cfg["heads"], "scales": cfg["scales"], "need_divergence": cfg["divergence"],
            "need_branches": cfg["branches"], "timing": cfg["timing"], "backends": backends,
            "skipped_backends": skipped, "baselines": baselines, "e2e_batch": cfg["e2e_batch"],
            "e2e_overrides": cfg["e2e_overrides"],
        },
        "notes": dict(METHOD_NOTES),
        "attention": [],
        "e2e": [],
    }
    t_start = time.perf_counter()
    if "attention" in cfg["parts"]:
        log("attention:")
        result["attention"] = run_attention_sweep(
            device, cfg["lengths"], cfg["head_dims"], [DTYPES[d] for d in cfg["dtypes"]],
            batch100=cfg["batch100"], heads=cfg["heads"], scales=cfg["scales"], backends=backends,
            compile_reference=cfg["compile"], divergence=cfg["divergence"], branches=cfg["branches"],
            timing=cfg["timing"], memory=cfg["memory"], log=log,
        )
    if "e2e" in cfg["parts"]:
        kind = e2e_model_kind()
        if kind == "amad":
            result["e2e_note"] = (
                f"AMAD (amad_fast.model.AMAD) at its default size{' but ' + str(cfg['e2e_overrides']) if cfg['e2e_overrides'] else ''}, "
                f"C = 25 channels, L = 100, batch {cfg['e2e_batch']}; "
                "train = one optimiser step as amad_fast.train takes it (one forward with branches, the Max-Min "
                "gradient routes of TrainConfig's defaults, Adam); score = no-grad forward without branches."
            )
        else:
            result["e2e_note"] = (
                "amad_fast.model was not available: a stand-in of 3 nn.TransformerEncoderLayer blocks "
                "(d_model 512, 8 heads, d_ff 512) with AutoMaskAttention as self_attn, linear embedding and head; "
                "train = Adam step on mse - 3*js, score = no-grad forward."
            )
        log("end to end (" + kind + "):")
        result["e2e"] = run_e2e(device, batch=cfg["e2e_batch"], backends=backends, timing=cfg["timing"],
                                overrides=cfg["e2e_overrides"], log=log)
    result["wall_s"] = time.perf_counter() - t_start
    result["machine"]["load_average_at_end"] = load_average()

    print()
    if result["attention"]:
        print(format_attention_table(result["attention"]))
        for line in compile_summary(result["attention"]):
            print(line)
        print()
        for line in summarize(result["attention"]):
            print(line)
        print()
    if result["e2e"]:
        print(result["e2e_note"])
        print(format_e2e_table(result["e2e"]))
        print()
    if not args.no_files:
        os.makedirs(args.out_dir, exist_ok=True)
        stem = os.path.join(args.out_dir, args.name or (machine_slug(info) + ("-quick" if cfg["quick"] else "")))
        with open(stem + ".json", "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        write_markdown(stem + ".md", result)
        err = plot(stem + ".png", result["attention"]) if result["attention"] else "no attention results"
        print(f"wrote {stem}.json, {stem}.md" + (f", {stem}.png" if err is None else f" (no plot: {err})"))
    print(f"total {result['wall_s']:.1f} s")
    failed = [r for r in result["attention"] + result["e2e"] if r.get("status") == "failed"]
    return 0 if not failed or all(r.get("label") == "compile(reference)" for r in failed) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="amad-fast bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
