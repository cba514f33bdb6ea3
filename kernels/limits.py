"""What the fused Triton kernels can take, importable without Triton.

The Triton backend's declaration (:mod:`amad_fast.attention.backends.triton`) reads these to
refuse inputs before anything imports Triton; the kernel modules read them too, so each limit is
stated here once.
"""
import os

import torch

#: smallest head dim D: the value tiles (rows × D) take part in ``tl.dot``, whose operands have
#: at least 16 columns
MIN_HEAD_DIM = 16
#: largest head dim D: a block of query rows holds its q, q̃ halves and two (rows × D) fp32
#: accumulators in registers
MAX_HEAD_DIM = 128
#: tile widths (D, and D/2 when it is ≥ 16) are ``tl.arange`` lengths, which must be powers of two
HEAD_DIM_POWER_OF_TWO = True
#: largest number of AutoMask scales S (the loop over S is unrolled at compile time)
MAX_SCALES = 16
#: the masks the kernels apply: predicates on the key index (a (B, L) padding vector, j ≤ i) and
#: the attn_mask as an additive float32 (L, L) bias read tile by tile (−inf entries block keys)
MASKS = frozenset({"key_padding_mask", "attn_mask", "is_causal"})
#: dtypes of q, k, v the kernels are compiled for (the parameters are used in float32)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: the subset Triton's CPU interpreter runs (it has no bfloat16)
INTERPRETER_DTYPES = (torch.float16, torch.float32)


def interpreted() -> bool:
    """Whether the kernels run on Triton's CPU interpreter: ``TRITON_INTERPRET=1``, which Triton
    reads when the kernels are decorated (when ``amad_fast.kernels.automask`` is first imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
