"""How the benchmarks measure one call: interleaved timing (median and IQR per call), peak extra
memory, and the machine facts every result carries.

Timing interleaves the candidates of one shape round-robin so that load from other processes falls
on all of them alike and ratios within a run stay honest; the finite-value scan of the inputs is
switched off (:func:`finite_checks_off`) so that the kernels are timed, not the scan. The method
text that goes into every report is :data:`amad_fast.bench.report.METHOD_NOTES`."""
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

# --------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
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
        "cpu_model": cpu_model(),
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
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(samples: List[float], n_inner: int) -> dict:
    """Median, quartiles, IQR and minimum of the per-call sample times."""
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
            synchronize(device)
            t0 = time.perf_counter()
            fn()  # the last warm-up call also calibrates
            synchronize(device)
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
                synchronize(device)
                t0 = time.perf_counter()
                for _ in range(n_inner):
                    fn()
                synchronize(device)
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
def finite_checks_off():
    """Switch off the finite-value scan of the attention inputs for the block (restored after):
    it is input validation, not kernel work, and would be timed with every call otherwise."""
    from amad_fast.attention import validation

    before = validation.finite_checks_enabled()
    validation.set_finite_checks(False)
    try:
        yield
    finally:
        validation.set_finite_checks(before)


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
    """Extra bytes one call of ``fn`` allocates at its peak, and the method (see METHOD_NOTES['peak_memory'] in :mod:`amad_fast.bench.report`)."""
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
