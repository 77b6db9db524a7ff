// CPU attention: ATen's fused scaled-dot-product attention (its CPU flash kernel) per head.
#include <torch/library.h>

#include <cmath>

#include "ops/checks.h"
#include "ops/kernels.h"

namespace fastwhisper::cpu {

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  check_attention_args(c10::DeviceType::CPU, q, k, v, n_head);
  const int64_t batch = q.size(0), n_q = q.size(1), n_kv = k.size(1), n_state = q.size(2);
  const int64_t head_dim = n_state / n_head;
  if (q.numel() == 0) return at::empty_like(q, at::MemoryFormat::Contiguous);
  // [B, T, H*Dh] -> [B, H, T, Dh] views; no copies
  auto qh = q.reshape({batch, n_q, n_head, head_dim}).transpose(1, 2);
  auto kh = k.reshape({batch, n_kv, n_head, head_dim}).transpose(1, 2);
  auto vh = v.reshape({batch, n_kv, n_head, head_dim}).transpose(1, 2);
  // strided views go in as they are (the CPU flash kernel reads strides): no [B, H, T, Dh] copies
  auto o = at::scaled_dot_product_attention(qh, kh, vh, {}, 0.0,
                                            /*is_causal=*/false, 1.0 / std::sqrt(static_cast<double>(head_dim)));
  return o.transpose(1, 2).reshape({batch, n_q, n_state});
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("attention", &attention); }

}  // namespace fastwhisper::cpu
