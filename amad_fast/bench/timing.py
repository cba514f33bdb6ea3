"""Timing and machine facts for the benchmarks: interleaved timing with medians and minima, peak memory,
the machine description every result carries, and the byte-traffic model."""
from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

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
    from amad_fast.attention.backends.extension import build_info, extension_error

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
