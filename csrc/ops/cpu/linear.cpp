// CPU linear: ATen GEMM (MKL/oneDNN) with the bias, then ATen's vectorized in-place GELU and residual
// add: the ops whisper/model.py runs, so the CPU encoder gives its numbers and its speed.
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/kernels.h"

namespace fastwhisper::cpu {

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, bool gelu_act) {
  check_linear_args(c10::DeviceType::CPU, x, weight, bias, residual);
  const int64_t k = x.size(-1), n = weight.size(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = n;
  auto x2 = x.reshape({-1, k});
  auto y = bias.has_value() ? at::addmm(*bias, x2, weight.t()) : at::mm(x2, weight.t());  // [M, N]
  if (gelu_act) at::gelu_(y);                    // whisper: F.gelu (erf), vectorized by ATen
  if (residual.has_value()) y.add_(residual->reshape({-1, n}));  // x + block(x)
  return y.view(out_shape);
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("linear", &linear); }

}  // namespace fastwhisper::cpu
