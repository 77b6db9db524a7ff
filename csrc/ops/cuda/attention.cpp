// CUDA attention: ATen's fused SDPA kernels, chosen explicitly. fp16/bf16 with head_dim a multiple of 8, at
// most 256: cuDNN attention where ATen says it applies to the shape (and it has not raised on that shape
// before), else flash attention; otherwise ATen's dispatcher (memory-efficient attention for fp32).
#include <ATen/cuda/CUDAContext.h>
#include <ATen/native/transformers/cuda/sdp_utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>

#include "ops/checks.h"
#include "ops/kernels.h"

namespace fastwhisper::cuda {
namespace {

// Problems cuDNN raised on once: they go straight to flash attention from then on.
using ProblemKey = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t>;
std::mutex cudnn_failed_mutex;
std::set<ProblemKey>& cudnn_failed() {
  static std::set<ProblemKey> failed;
  return failed;
}

ProblemKey problem_key(const at::Tensor& qh, const at::Tensor& kh) {  // [B, H, T, Dh] views
  return {static_cast<int>(qh.get_device()), static_cast<int>(qh.scalar_type()), qh.size(0), qh.size(1),
          qh.size(2), kh.size(2), qh.size(3)};
}

bool cudnn_usable(const at::Tensor& qh, const at::Tensor& kh, const at::Tensor& vh) {
  sdp::sdp_params params;
  params.query = qh;
  params.key = kh;
  params.value = vh;
  params.attn_mask = std::nullopt;
  params.dropout = 0.0;
  params.is_causal = false;
  params.enable_gqa = false;
  return sdp::can_use_cudnn_attention(params, /*debug=*/false);
}

// cuDNN's output, or nullopt when cuDNN raised (then remembered for this problem, with one warning per problem).
std::optional<at::Tensor> try_cudnn(const at::Tensor& qh, const at::Tensor& kh, const at::Tensor& vh, double scale) {
  const ProblemKey key = problem_key(qh, kh);
  {
    const std::lock_guard<std::mutex> lock(cudnn_failed_mutex);
    if (cudnn_failed().count(key)) return std::nullopt;
  }
  try {
    return std::get<0>(at::_scaled_dot_product_cudnn_attention(qh, kh, vh, /*attn_bias=*/std::nullopt,
                                                               /*compute_log_sumexp=*/false, /*dropout_p=*/0.0,
                                                               /*is_causal=*/false, /*return_debug_mask=*/false,
                                                               scale));
  } catch (const c10::Error& e) {
    {
      const std::lock_guard<std::mutex> lock(cudnn_failed_mutex);
      cudnn_failed().insert(key);
    }
    TORCH_WARN("fastwhisper.attention: cuDNN attention failed, using flash attention for this shape from now on: ",
               e.what_without_backtrace());
    return std::nullopt;
  }
}

}  // namespace

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
  const bool fused_ok = q.scalar_type() != at::kFloat && head_dim % 8 == 0 && head_dim <= 256;
  std::optional<at::Tensor> o;
  if (fused_ok) {
    if (cudnn_usable(qh, kh, vh)) o = try_cudnn(qh, kh, vh, scale);
    if (!o) {
      o = std::get<0>(at::_scaled_dot_product_flash_attention(qh, kh, vh, 0.0, /*is_causal=*/false,
                                                              /*return_debug_mask=*/false, scale));
    }
  } else {
    // fp32 or unusual head sizes: ATen picks memory-efficient attention where it applies, else its math path
    o = at::scaled_dot_product_attention(qh, kh, vh, {}, 0.0, /*is_causal=*/false, scale);
  }
  return o->transpose(1, 2).reshape({batch, n_q, n_state});  // [B, T, H*Dh]
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("attention", &attention); }

}  // namespace fastwhisper::cuda
