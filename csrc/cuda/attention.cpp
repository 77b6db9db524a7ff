// CUDA attention: ATen's fused SDPA kernels, chosen explicitly: flash attention for fp16/bf16
// (head_dim a multiple of 8, at most 256); otherwise ATen's dispatcher (memory-efficient attention for fp32).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "kernels.h"

namespace fastwhisper::cuda {

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  check_attention_args(c10::DeviceType::CUDA, q, k, v, n_head);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t batch = q.size(0), n_q = q.size(1), n_kv = k.size(1), n_state = q.size(2);
  const int64_t head_dim = n_state / n_head;
  if (q.numel() == 0) return at::empty_like(q, at::MemoryFormat::Contiguous);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  // [B, T, H*Dh] -> [B, H, T, Dh] views over rows of stride n_state: no copies when the last dim is dense
  auto heads = [&](const at::Tensor& t, int64_t n) {
    auto c = t.stride(2) == 1 ? t : t.contiguous();
    return c.reshape({batch, n, n_head, head_dim}).transpose(1, 2);
  };
  auto qh = heads(q, n_q), kh = heads(k, n_kv), vh = heads(v, n_kv);
  const bool flash_ok = q.scalar_type() != at::kFloat && head_dim % 8 == 0 && head_dim <= 256;
  at::Tensor o;
  if (flash_ok) {
    o = std::get<0>(at::_scaled_dot_product_flash_attention(qh, kh, vh, 0.0, /*is_causal=*/false,
                                                            /*return_debug_mask=*/false, scale));
  } else {
    // fp32 or unusual head sizes: ATen picks memory-efficient attention where it applies, else its math path
    o = at::scaled_dot_product_attention(qh, kh, vh, {}, 0.0, /*is_causal=*/false, scale);
  }
  return o.transpose(1, 2).reshape({batch, n_q, n_state});  // [B, T, H*Dh]
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("attention", &attention); }

}  // namespace fastwhisper::cuda
