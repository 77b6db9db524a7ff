// CPU conv stem: the ATen ops of whisper's AudioEncoder stem (oneDNN convolutions, vectorized GELU).
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/kernels.h"

namespace fastwhisper::cpu {

at::Tensor conv_stem(const at::Tensor& mel, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,
                     const at::Tensor& conv2_weight, const at::Tensor& conv2_bias,
                     const at::Tensor& positional_embedding) {
  const auto d = check_conv_stem_args(c10::DeviceType::CPU, mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias,
                                      positional_embedding);
  if (d.batch == 0) return at::empty({d.batch, d.n_out, d.n_state}, mel.options());
  // whisper's AudioEncoder: gelu(conv1(x)), gelu(conv2(x)), permute to [B, T, C], + positional embedding
  at::Tensor h = at::gelu(at::conv1d(mel, conv1_weight, conv1_bias, /*stride=*/1, /*padding=*/1));    // [B, d, T]
  at::Tensor y = at::gelu(at::conv1d(h, conv2_weight, conv2_bias, /*stride=*/2, /*padding=*/1));      // [B, d, T_out]
  return (y.permute({0, 2, 1}) + positional_embedding).contiguous();                                // [B, T_out, d]
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("conv_stem", &conv_stem); }

}  // namespace fastwhisper::cpu
