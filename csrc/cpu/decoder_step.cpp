// CPU reference of the decoder step ops (decoder_linear, decoder_self_attention): the ATen ops
// whisper/model.py runs, in its order and dtypes. The CUDA kernels (cuda/decoder_step.cu) are checked
// against these.
#include <torch/library.h>

#include "checks.h"
#include "kernels.h"

namespace fastwhisper::cpu {

at::Tensor decoder_linear(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,
                          const std::optional<at::Tensor>& ln_bias, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases, const std::optional<at::Tensor>& residual,
                          bool gelu, bool float_output) {
  const std::vector<at::Tensor> w = weights.vec();
  std::vector<std::optional<at::Tensor>> b(biases.begin(), biases.end());
  check_decoder_linear_args(c10::DeviceType::CPU, x, ln_weight, ln_bias, w, b, residual);
  at::Tensor h = x;
  if (ln_weight.has_value()) {  // whisper's LayerNorm: F.layer_norm(x.float()).type(x.dtype)
    h = at::layer_norm(x.to(at::kFloat), {x.size(1)}, *ln_weight, *ln_bias, kLayerNormEps).to(x.scalar_type());
  }
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < w.size(); ++i) parts.push_back(at::linear(h, w[i], b[i]));
  at::Tensor y = parts.size() == 1 ? parts[0] : at::cat(parts, 1);  // [M, N]
  if (gelu) y = at::gelu(y);
  if (residual.has_value()) y = *residual + y;
  return float_output ? y.to(at::kFloat) : y;
}

at::Tensor decoder_self_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                                  const at::Tensor& position, int64_t n_head) {
  check_decoder_self_attention_args(c10::DeviceType::CPU, qkv, k_cache, v_cache, position, n_head);
  const int64_t rows = k_cache.size(0), n_ctx = k_cache.size(1), d = k_cache.size(2), dh = d / n_head;
  const int64_t p = position.item<int64_t>();
  TORCH_CHECK(p >= 0 && p < n_ctx, "fastwhisper.decoder_self_attention: position must be in [0, ", n_ctx,
              ") (the cache's positions), got ", p);
  k_cache.select(1, p).copy_(qkv.narrow(1, d, d));
  v_cache.select(1, p).copy_(qkv.narrow(1, 2 * d, d));
  auto heads = [&](const at::Tensor& t) { return t.reshape({rows, t.size(1), n_head, dh}).transpose(1, 2); };
  at::Tensor q = qkv.narrow(1, 0, d).reshape({rows, 1, d});
  at::Tensor a = at::scaled_dot_product_attention(heads(q), heads(k_cache.narrow(1, 0, p + 1)),
                                                  heads(v_cache.narrow(1, 0, p + 1)));  // [R, H, 1, Dh]
  return a.transpose(1, 2).reshape({rows, d});
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) {
  m.impl("decoder_linear", &decoder_linear);
  m.impl("decoder_self_attention", &decoder_self_attention);
}

}  // namespace fastwhisper::cpu
