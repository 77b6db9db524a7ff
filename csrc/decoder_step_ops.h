// Per-device implementations of the decoder step ops that another op of the same device composes
// (decoder_cross_query_attention falls back to decoder_linear, then decoder_cross_attention).
#pragma once
#include <ATen/ATen.h>

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

}  // namespace fastwhisper
