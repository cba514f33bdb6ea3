// Shared declarations of the AutoMask attention ops (spec §1): the CPU and CUDA implementations
// (csrc/cpu, csrc/cuda) and the device-independent glue in csrc/automask_ops.cpp (input checks,
// the modulation tables c, s and the chain rule from dc, ds to dfreqs, dweights).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace amad_fast {

// out, out_local, out_global, kl_local, kl_global, lse_local, lse_global
using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// dq, dk, dv, dfreqs, dweights, dmix
using BackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The dtype kernels compute in: float64 for float64 inputs, else float32.
at::ScalarType compute_dtype(const at::Tensor& q);

// TORCH_CHECKs shapes, dtypes, devices and scale of the forward op's inputs; `op` names the op.
void check_forward_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& freqs, const at::Tensor& weights, const at::Tensor& mix, double scale);

// TORCH_CHECKs the optional key padding mask: bool (B, L) on q's device (True = key ignored).
void check_key_padding_mask(const char* op, const c10::optional<at::Tensor>& key_padding_mask, const at::Tensor& q);

// TORCH_CHECKs the optional additive score bias (the attn_mask as AttentionMasks.attn_bias gives it):
// (1, L, L) or (B·H, L, L) in the compute dtype, on q's device.
void check_attn_bias(const char* op, const c10::optional<at::Tensor>& attn_bias, const at::Tensor& q);

// Spec §1.1: c_{h,i,p} = Σ_s w_{h,s} cos(θ_{h,s,p} i), s_{h,i,p} likewise with sin; contiguous
// (H, L, P) tables in `dtype` (computed in that dtype, as the reference does).
std::tuple<at::Tensor, at::Tensor> modulation_tables(const at::Tensor& freqs, const at::Tensor& weights, int64_t L,
                                                     at::ScalarType dtype);

// Chain rule through modulation_tables: from dc, ds (H, L, P) to dfreqs (H, S, P), dweights (H, S)
// in the dtypes of freqs and weights.
std::tuple<at::Tensor, at::Tensor> modulation_backward(const at::Tensor& dc, const at::Tensor& ds,
                                                       const at::Tensor& freqs, const at::Tensor& weights);

// The empty tensor that stands for an output not computed (kl_* when need_divergence is false,
// out_local and out_global when need_branches is false on the CPU).
at::Tensor not_computed(const at::Tensor& like);

ForwardResult automask_forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& freqs, const at::Tensor& weights, const at::Tensor& mix,
                                   double scale, bool need_divergence,
                                   const c10::optional<at::Tensor>& key_padding_mask, bool is_causal,
                                   const c10::optional<at::Tensor>& attn_bias, bool need_branches);

BackwardResult automask_backward_cpu(const c10::optional<at::Tensor>& grad_out,
                                     const c10::optional<at::Tensor>& grad_out_local,
                                     const c10::optional<at::Tensor>& grad_out_global,
                                     const c10::optional<at::Tensor>& grad_kl_local,
                                     const c10::optional<at::Tensor>& grad_kl_global, const at::Tensor& q,
                                     const at::Tensor& k, const at::Tensor& v, const at::Tensor& freqs,
                                     const at::Tensor& weights, const at::Tensor& mix, const at::Tensor& out_local,
                                     const at::Tensor& out_global, const at::Tensor& kl_local,
                                     const at::Tensor& kl_global, const at::Tensor& lse_local,
                                     const at::Tensor& lse_global, double scale,
                                     const c10::optional<at::Tensor>& key_padding_mask, bool is_causal,
                                   const c10::optional<at::Tensor>& attn_bias);

// Checks of the backward op's saved tensors and incoming gradients (shapes, dtypes, devices).
void check_backward_inputs(const char* op, const c10::optional<at::Tensor>& grad_out,
                           const c10::optional<at::Tensor>& grad_out_local,
                           const c10::optional<at::Tensor>& grad_out_global,
                           const c10::optional<at::Tensor>& grad_kl_local,
                           const c10::optional<at::Tensor>& grad_kl_global, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const at::Tensor& freqs, const at::Tensor& weights,
                           const at::Tensor& mix, const at::Tensor& out_local, const at::Tensor& out_global,
                           const at::Tensor& kl_local, const at::Tensor& kl_global, const at::Tensor& lse_local,
                           const at::Tensor& lse_global, double scale);

}  // namespace amad_fast
