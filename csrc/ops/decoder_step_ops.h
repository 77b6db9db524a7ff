// Per-device implementations of the decoder step ops that another op of the same device composes
// (decoder_cross_query_attention as decoder_linear, then decoder_cross_attention: the CPU reference, and
// the CUDA op where its fused kernel does not apply), and that composition.
#pragma once
#include <ATen/ATen.h>

#include <initializer_list>
#include <optional>

namespace fastwhisper {

#define FASTWHISPER_DECLARE_DECODER_STEP_OPS                                                                       \
  at::Tensor decoder_linear(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,                       \
                            const std::optional<at::Tensor>& ln_bias, at::TensorList weights,                      \
                            const c10::List<std::optional<at::Tensor>>& biases,                                    \
                            const std::optional<at::Tensor>& residual, bool gelu_act, bool float_output);          \
  at::Tensor decoder_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head);

namespace cpu {
FASTWHISPER_DECLARE_DECODER_STEP_OPS
}
namespace cuda {
FASTWHISPER_DECLARE_DECODER_STEP_OPS
}

// The biases argument of decoder_linear: one optional bias per weight.
inline c10::List<std::optional<at::Tensor>> bias_list(std::initializer_list<std::optional<at::Tensor>> biases) {
  c10::List<std::optional<at::Tensor>> list;
  for (const auto& b : biases) list.push_back(b);
  return list;
}

// decoder_cross_query_attention through one device's two ops: q = linear(x) with LayerNorm, rounded to x's
// dtype ([R, d]), then attention(q, k, v, n_head).
template <typename Linear, typename Attention>
at::Tensor cross_query_then_attention(Linear linear, Attention attention, const at::Tensor& x,
                                      const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                      const at::Tensor& q_weight, const std::optional<at::Tensor>& q_bias,
                                      const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  const at::Tensor q = linear(x, ln_weight, ln_bias, {q_weight}, bias_list({q_bias}), std::nullopt, false, false);
  return attention(q, k, v, n_head);
}

}  // namespace fastwhisper
