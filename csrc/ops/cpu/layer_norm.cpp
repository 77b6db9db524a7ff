// CPU LayerNorm over the last dimension: ATen's, as whisper's LayerNorm computes it for float32 input.
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/kernels.h"

namespace fastwhisper::cpu {

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  check_layer_norm_args(c10::DeviceType::CPU, x, weight, bias, eps);
  // whisper's LayerNorm on float32 input: F.layer_norm over the last dimension (ATen's vectorized kernel)
  return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("layer_norm", &layer_norm); }

}  // namespace fastwhisper::cpu
