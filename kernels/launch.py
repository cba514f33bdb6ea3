"""How the AutoMask kernels are compiled and launched: autotuned block shapes on a GPU, one fixed
shape under Triton's CPU interpreter (or with ``AMAD_TRITON_AUTOTUNE=0``), the launch geometry,
and an ahead-of-time compile of every kernel variant for an NVIDIA target without a GPU.
"""
import os
from typing import List, Optional

import triton
from torch import Tensor

from .backward import delta_kernel, dkdv_kernel, dq_kernel
from .forward import forward_kernel
from .limits import interpreted

#: True when Triton was imported with TRITON_INTERPRET=1 (kernels run on the CPU interpreter)
INTERPRETED = interpreted()


# ----------------------------------------------------------------------------------------------
# Launch configuration: autotuned on a GPU, one small config under the interpreter
# ----------------------------------------------------------------------------------------------

#: IS_CAUSAL in the key: a causal launch visits about half the tiles, so it may tune differently;
#: HAS_BIAS: a biased launch loads an [M, N] fp32 tile per score tile, which weighs on larger tiles
_AUTOTUNE_KEY = ["L_KEY", "HEAD_DIM", "S", "IS_CAUSAL", "HAS_BIAS"]


def _configs(backward: bool) -> List[triton.Config]:
    """Block shapes for short windows (L≈100 is the common case: one 128-key block, or 64-key
    blocks over more query programs) up to long sequences, for H100/H200 (untested here)."""
    if backward:  # holds ~4 [M, N] fp32 tiles plus 5 accumulators: stay small
        shapes = [(16, 16), (16, 32), (32, 16), (32, 32), (32, 64), (64, 32), (64, 64)]
    else:
        shapes = [(16, 16), (16, 32), (16, 128), (32, 32), (32, 64), (32, 128), (64, 32), (64, 64), (64, 128),
                  (128, 64), (128, 128)]
    # One pipeline depth: each config compiles on first use of an (L bucket, D, S) key, and deeper
    # pipelines only pay off for long L. 8 warps from 32x64 up: compiled for sm_90 (aot_compile,
    # bf16, D = 64, S = 4), 4 warps spill there (fwd 32x64: 208 B, dkdv 32x64: 376 B) while 8 warps
    # do not (fwd 64x64: 203 regs, dkdv 32x64: 232 regs). A starting point to refine on the GPU.
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4 if bm * bn <= 32 * 32 else 8, num_stages=2)
        for bm, bn in shapes
    ]


def _prune(configs, named_args, **kwargs):
    """Drop tiles much wider than the sequence and too-large tiles for wide heads."""
    L = named_args["L"]
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64))
    cap = max(16, triton.next_power_of_2(L))
    kept = [
        c for c in configs
        if c.kwargs["BLOCK_M"] <= cap and c.kwargs["BLOCK_N"] <= cap
        and not (head_dim >= 128 and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] > 64 * 128)
    ]
    return kept or configs[:1]


#: the one config used when not autotuning: always under TRITON_INTERPRET=1 (the interpreter is
#: slow), and on a GPU with AMAD_TRITON_AUTOTUNE=0 (quick tests, debugging: no compile of every config)
FIXED_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 64}
AUTOTUNE = not INTERPRETED and os.environ.get("AMAD_TRITON_AUTOTUNE", "1") != "0"

#: SINGLE_BLOCK: the whole key row fits one block, so the forward keeps its scores for the divergence
with_single_block = triton.heuristics({"SINGLE_BLOCK": lambda a: a["L"] <= a["BLOCK_N"]})


def tuned(kernel, backward: bool):
    """``kernel`` autotuned over the block shapes of its direction, or as is when not autotuning."""
    if not AUTOTUNE:
        return kernel
    return triton.autotune(configs=_configs(backward), key=_AUTOTUNE_KEY,
                           prune_configs_by={"early_config_prune": _prune})(kernel)


def launch_kwargs() -> dict:
    """The block shape to pass at launch: none when autotuning picks it, else FIXED_CONFIG."""
    return {} if AUTOTUNE else dict(FIXED_CONFIG)


def length_bucket(L: int) -> int:
    """Autotune bucket of the sequence length (powers of two)."""
    return triton.next_power_of_2(max(int(L), 1))


def geometry(q: Tensor, freqs: Tensor):
    """B, H, L, D, S, the pair count P = D/2 and the half-tile width PB (P padded to the 16 columns
    tl.dot takes at least)."""
    B, H, L, D = q.shape
    return B, H, L, D, freqs.shape[1], D // 2, max(16, D // 2)


def strides(*tensors: Tensor):
    """The strides of each tensor in turn, flattened: the stride arguments of the kernels."""
    return [s for t in tensors for s in t.stride()]


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile check (no GPU needed)
# ----------------------------------------------------------------------------------------------


def aot_compile(arch: int = 90, dtype: str = "fp16", head_dim: int = 64, scales: int = 2,
                block_m: int = 32, block_n: int = 64, num_warps: int = 4, only: Optional[str] = None) -> dict:
    """Compile every kernel variant for an NVIDIA target (sm_``arch``) through ptxas, without a GPU.

    Catches what the interpreter cannot (tl.dot shape/dtype rules, constexpr and loop-carried
    types, register spills). Needs a process where Triton is *not* interpreted. Returns
    {variant: resource usage}, e.g. "REG:96 STACK:0 SHARED:0 LOCAL:0" from cuobjdump when Triton
    ships it (STACK > 32 or so means register spills), else the cubin size. ``only`` keeps the
    variants whose name starts with it ("fwd", "dq", "dkdv", "delta").
    """
    if INTERPRETED:
        raise RuntimeError("aot_compile: Triton was imported with TRITON_INTERPRET=1; run it in a fresh process")
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", arch, 32)
    ptr = {n: f"*{dtype}" for n in ("Q", "K", "V", "OUT", "OUT_L", "OUT_G", "DOM", "DOG", "DQ", "DK", "DV")}
    ptr.update({n: "*fp32" for n in ("FREQS", "WEIGHTS", "LAM", "KL_L", "KL_G", "DELTA_L", "DELTA_G",
                                     "DKL_L", "DKL_G", "DC", "DS")})
    ptr.update({"LSE_L": "*fp64", "LSE_G": "*fp64", "KPM": "*u8", "BIAS": "*fp32"})
    shape = dict(HEAD_DIM=head_dim, P=head_dim // 2, PB=max(16, head_dim // 2), S=scales,
                 BLOCK_M=block_m, BLOCK_N=block_n)
    unmasked = dict(HAS_KPM=False, IS_CAUSAL=False, HAS_BIAS=False)
    masked = dict(HAS_KPM=True, IS_CAUSAL=True, HAS_BIAS=True)
    variants = {f"fwd single={sb} kl={kl}": (forward_kernel, dict(NEED_KL=kl, STORE_BRANCHES=True, SINGLE_BLOCK=sb,
                                                                   **unmasked))
                for sb in (True, False) for kl in (True, False)}
    variants["fwd masked"] = (forward_kernel, dict(NEED_KL=True, STORE_BRANCHES=True, SINGLE_BLOCK=False, **masked))
    for name, fn in (("delta", delta_kernel), ("dkdv", dkdv_kernel), ("dq", dq_kernel)):
        for kl in (True, False):
            variants[f"{name} kl={kl}"] = (fn, dict(HAS_KL=kl, **unmasked))
        variants[f"{name} masked"] = (fn, dict(HAS_KL=True, **masked))
    out = {}
    for name, (fn, extra) in variants.items():
        if only is not None and not name.startswith(only):
            continue
        consts = {**shape, **extra}
        sig = {a: "constexpr" if a in consts else ptr.get(a, "fp32" if a == "scale" else "i32") for a in fn.arg_names}
        kernel = triton.compile(triton.compiler.ASTSource(fn, sig, constexprs=consts), target=target,
                                options={"num_warps": num_warps, "num_stages": 2})
        out[name] = _resource_usage(kernel.asm["cubin"])
    return out


def _resource_usage(cubin: bytes) -> str:
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return f"cubin {len(cubin)} bytes"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:\d+ STACK:\d+ SHARED:\d+ LOCAL:\d+", text)
    return m.group(0) if m else f"cubin {len(cubin)} bytes"
