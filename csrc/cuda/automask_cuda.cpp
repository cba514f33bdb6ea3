// CUDA implementation of the amad_fast::automask_forward / automask_backward ops: a thin binding
// that checks inputs, makes them contiguous in the compute dtype (float16/bfloat16 → float32,
// cast back at the end), builds the modulation tables, and passes raw pointers and the current
// stream to the kernels in automask_kernels.cu. Compiled only in CUDA builds (setup.py).
#ifdef AMAD_FAST_WITH_CUDA

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../automask.h"
#include "automask_cuda.h"

namespace amad_fast {

using at::Tensor;

namespace {

Tensor contiguous_as(const Tensor& t, at::ScalarType dtype) { return t.to(dtype).contiguous(); }

Tensor grad_or_undefined(const c10::optional<Tensor>& g, at::ScalarType dtype) {
  if (!g || !g->defined()) return Tensor();
  return contiguous_as(*g, dtype);
}

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// The key padding mask as the kernels read it: (B, L) bytes, non-zero = masked; undefined = none.
Tensor padding_bytes(const char* op, const c10::optional<Tensor>& key_padding_mask, const Tensor& q) {
  check_key_padding_mask(op, key_padding_mask, q);
  if (!key_padding_mask || !key_padding_mask->defined()) return Tensor();
  return key_padding_mask->to(at::kByte).contiguous();
}

// The attn_mask's additive bias as the kernels read it: (1, L, L) or (B·H, L, L) contiguous in the
// compute dtype, with the stride between batch-heads (0 for one (L, L) shared by all); undefined = none.
std::tuple<Tensor, int64_t> bias_and_stride(const char* op, const c10::optional<Tensor>& attn_bias, const Tensor& q) {
  check_attn_bias(op, attn_bias, q);
  if (!attn_bias || !attn_bias->defined()) return {Tensor(), 0};
  const Tensor bias = attn_bias->contiguous();
  return {bias, bias.size(0) == 1 ? 0 : bias.size(1) * bias.size(2)};
}

void check_cuda_shapes(const char* op, const Tensor& q) {
  TORCH_CHECK(q.is_cuda(), op, " (CUDA kernel): expected CUDA tensors, got ", q.device());
  TORCH_CHECK(q.size(3) <= cuda::kMaxHeadDim, op, ": q: the CUDA kernels take head dims D <= ", cuda::kMaxHeadDim,
              ", got D = ", q.size(3));
  TORCH_CHECK(q.size(0) * q.size(1) * q.size(2) < (int64_t(1) << 31), op,
              ": B·H·L must be below 2^31 (one thread block per row), got ", q.size(0) * q.size(1) * q.size(2));
}

}  // namespace

// need_branches is not read: the CUDA kernels always form out_local and out_global (their backward
// takes dmix from them), and return them.
ForwardResult automask_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& freqs,
                                    const Tensor& weights, const Tensor& mix, double scale, bool need_divergence,
                                    const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                                    const c10::optional<Tensor>& attn_bias, bool /*need_branches*/) {
  const char* op = "amad_fast::automask_forward";
  check_forward_inputs(op, q, k, v, freqs, weights, mix, scale);
  check_cuda_shapes(op, q);
  const Tensor padding = padding_bytes(op, key_padding_mask, q);
  Tensor bias;  // not a structured binding: the lambda below captures them (C++17)
  int64_t bias_stride;
  std::tie(bias, bias_stride) = bias_and_stride(op, attn_bias, q);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto acc = compute_dtype(q);
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3);
  auto qa = contiguous_as(q, acc), ka = contiguous_as(k, acc), va = contiguous_as(v, acc);
  Tensor cos, sin;  // not a structured binding: the lambda below captures them (C++17)
  std::tie(cos, sin) = modulation_tables(freqs, weights, L, acc);
  auto lam = mix.to(acc).sigmoid().contiguous();
  auto opts = qa.options();
  auto out = at::empty({B, H, L, D}, opts), out_local = at::empty({B, H, L, D}, opts),
       out_global = at::empty({B, H, L, D}, opts);
  // float64 log-sum-exps whatever the compute dtype (split into hi + lo by the backward)
  auto lse_local = at::empty({B, H, L}, opts.dtype(at::kDouble)), lse_global = at::empty_like(lse_local);
  Tensor kl_local = need_divergence ? at::empty({B, H, L}, opts) : not_computed(q);
  Tensor kl_global = need_divergence ? at::empty({B, H, L}, opts) : not_computed(q);
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(acc, "automask_forward_cuda", [&] {
    using T = scalar_t;
    C10_CUDA_CHECK(cuda::automask_forward<T>(
        qa.data_ptr<T>(), ka.data_ptr<T>(), va.data_ptr<T>(), cos.data_ptr<T>(), sin.data_ptr<T>(),
        lam.data_ptr<T>(), out.data_ptr<T>(), out_local.data_ptr<T>(), out_global.data_ptr<T>(),
        need_divergence ? kl_local.data_ptr<T>() : nullptr, need_divergence ? kl_global.data_ptr<T>() : nullptr,
        lse_local.data_ptr<double>(), lse_global.data_ptr<double>(),
        padding.defined() ? padding.data_ptr<uint8_t>() : nullptr, is_causal,
        bias.defined() ? bias.data_ptr<T>() : nullptr, bias_stride, B, H, L, D, static_cast<T>(scale),
        stream));
  });
  const auto dt = q.scalar_type();
  if (dt != acc) {
    out = out.to(dt), out_local = out_local.to(dt), out_global = out_global.to(dt);
    if (need_divergence) kl_local = kl_local.to(dt), kl_global = kl_global.to(dt);
  }
  return {out, out_local, out_global, kl_local, kl_global, lse_local, lse_global};
}

BackwardResult automask_backward_cuda(const c10::optional<Tensor>& grad_out,
                                      const c10::optional<Tensor>& grad_out_local,
                                      const c10::optional<Tensor>& grad_out_global,
                                      const c10::optional<Tensor>& grad_kl_local,
                                      const c10::optional<Tensor>& grad_kl_global, const Tensor& q, const Tensor& k,
                                      const Tensor& v, const Tensor& freqs, const Tensor& weights, const Tensor& mix,
                                      const Tensor& out_local, const Tensor& out_global, const Tensor& kl_local,
                                      const Tensor& kl_global, const Tensor& lse_local, const Tensor& lse_global,
                                      double scale, const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                                      const c10::optional<Tensor>& attn_bias) {
  const char* op = "amad_fast::automask_backward";
  check_backward_inputs(op, grad_out, grad_out_local, grad_out_global, grad_kl_local, grad_kl_global, q, k, v, freqs,
                        weights, mix, out_local, out_global, kl_local, kl_global, lse_local, lse_global, scale);
  check_cuda_shapes(op, q);
  const Tensor padding = padding_bytes(op, key_padding_mask, q);
  Tensor bias;  // not a structured binding: the lambda below captures them (C++17)
  int64_t bias_stride;
  std::tie(bias, bias_stride) = bias_and_stride(op, attn_bias, q);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto acc = compute_dtype(q);
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3), P = D / 2;
  auto qa = contiguous_as(q, acc), ka = contiguous_as(k, acc), va = contiguous_as(v, acc);
  Tensor cos, sin;  // not a structured binding: the lambda below captures them (C++17)
  std::tie(cos, sin) = modulation_tables(freqs, weights, L, acc);
  auto lam = mix.to(acc).sigmoid().contiguous();
  auto ol = contiguous_as(out_local, acc), og = contiguous_as(out_global, acc);
  auto ll = lse_local.contiguous(), lg = lse_global.contiguous();
  auto g_out = grad_or_undefined(grad_out, acc), g_ol = grad_or_undefined(grad_out_local, acc),
       g_og = grad_or_undefined(grad_out_global, acc), g_kl = grad_or_undefined(grad_kl_local, acc),
       g_kg = grad_or_undefined(grad_kl_global, acc);
  auto opts = qa.options();
  auto dq = at::empty({B, H, L, D}, opts), dk = at::empty({B, H, L, D}, opts), dv = at::empty({B, H, L, D}, opts);
  auto dc_ws = at::empty({B, H, L, P}, opts), ds_ws = at::empty({B, H, L, P}, opts);
  auto stats = at::empty({4, B, H, L}, opts);  // per row: δ^M, δ^G, 1/ΣP^M, 1/ΣP^G
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(acc, "automask_backward_cuda", [&] {
    using T = scalar_t;
    C10_CUDA_CHECK(cuda::automask_backward<T>(
        ptr_or_null<T>(g_out), ptr_or_null<T>(g_ol), ptr_or_null<T>(g_og), ptr_or_null<T>(g_kl),
        ptr_or_null<T>(g_kg), qa.data_ptr<T>(), ka.data_ptr<T>(), va.data_ptr<T>(), cos.data_ptr<T>(),
        sin.data_ptr<T>(), lam.data_ptr<T>(), ll.data_ptr<double>(), lg.data_ptr<double>(), dq.data_ptr<T>(),
        dk.data_ptr<T>(), dv.data_ptr<T>(), dc_ws.data_ptr<T>(), ds_ws.data_ptr<T>(), stats.data_ptr<T>(),
        padding.defined() ? padding.data_ptr<uint8_t>() : nullptr, is_causal,
        bias.defined() ? bias.data_ptr<T>() : nullptr, bias_stride, B, H, L, D, static_cast<T>(scale),
        stream));
  });
  auto [dfreqs, dweights] = modulation_backward(dc_ws.sum(0), ds_ws.sum(0), freqs, weights);
  Tensor dmix = at::zeros({H}, opts);
  if (g_out.defined()) dmix = (g_out * (ol - og)).sum({0, 2, 3}) * lam * (1 - lam);
  const auto dt = q.scalar_type();
  return {dq.to(dt), dk.to(dt), dv.to(dt), dfreqs, dweights, dmix.to(mix.scalar_type())};
}

}  // namespace amad_fast

TORCH_LIBRARY_IMPL(amad_fast, CUDA, m) {
  m.impl("automask_forward", &amad_fast::automask_forward_cuda);
  m.impl("automask_backward", &amad_fast::automask_backward_cuda);
}

#endif  // AMAD_FAST_WITH_CUDA
