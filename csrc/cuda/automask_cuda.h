// Launchers of the CUDA AutoMask attention kernels (spec §1): raw device pointers, sizes and a
// stream only, so the .cu files include nothing but the CUDA runtime. All tensors contiguous:
// q, k, v and (B, H, L, D) outputs row-major; per-row vectors (B, H, L); cos, sin (H, L, D/2);
// lam = sigmoid(mix) (H). T is float or double (half/bfloat16 are converted by the binding).
// Masks: key_padding_mask (B, L) uint8, non-zero = the key is masked for every query of its batch
// (nullptr = none); is_causal: query i attends keys j <= i only; attn_bias: the additive bias
// (AttentionMasks.attn_bias) in T, row-major (L, L) per batch-head, the one of batch-head bh at
// attn_bias + bh·attn_bias_stride (stride 0 for a (1, L, L) bias, L·L for (B·H, L, L); nullptr =
// none), added to both maps' scaled scores, a −inf entry masking its key for that query. A masked
// key takes part in neither map nor the divergence; a row with no allowed key gets zeros (out,
// branches, kl, its saved log-sum-exps) and zero gradients. Both launchers must be given the same
// masks. No gradient is returned for the bias.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace amad_fast {
namespace cuda {

// Largest head dim the kernels take (each thread owns up to kMaxDPerThread of D's columns).
constexpr int kThreads = 128;
constexpr int kMaxDPerThread = 4;
constexpr int64_t kMaxHeadDim = kThreads * kMaxDPerThread;

// Forward: out, out_local, out_global, lse_local, lse_global (float64 whatever T: the backward
// splits them into hi + lo in T); kl_local, kl_global when non-null.
template <typename T>
cudaError_t automask_forward(const T* q, const T* k, const T* v, const T* cos, const T* sin, const T* lam, T* out,
                             T* out_local, T* out_global, T* kl_local, T* kl_global, double* lse_local,
                             double* lse_global, const uint8_t* key_padding_mask, bool is_causal,
                             const T* attn_bias, int64_t attn_bias_stride, int64_t B, int64_t H, int64_t L, int64_t D,
                             T scale, cudaStream_t stream);

// Backward. Gradient pointers may be null (zero). Writes dq, dk, dv (B, H, L, D) and the
// modulation gradients dc, ds per (b, h, position) (B, H, L, D/2), to be summed over b. It needs
// neither the forward's outputs nor its kl terms: δ is summed from the recomputed rows. stats
// (4·B·H·L) is scratch.
template <typename T>
cudaError_t automask_backward(const T* g_out, const T* g_out_local, const T* g_out_global, const T* g_kl_local,
                              const T* g_kl_global, const T* q, const T* k, const T* v, const T* cos, const T* sin,
                              const T* lam, const double* lse_local, const double* lse_global, T* dq, T* dk, T* dv,
                              T* dc, T* ds, T* stats, const uint8_t* key_padding_mask, bool is_causal,
                              const T* attn_bias, int64_t attn_bias_stride, int64_t B, int64_t H, int64_t L, int64_t D,
                              T scale, cudaStream_t stream);

}  // namespace cuda
}  // namespace amad_fast
