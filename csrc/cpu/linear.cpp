// CPU linear: ATen GEMM (MKL/oneDNN), then one fused pass for GELU and the residual add.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "gelu.h"
#include "kernels.h"

namespace fastwhisper::cpu {

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, bool gelu_act) {
  check_linear_args(c10::DeviceType::CPU, x, weight, bias, residual);
  const int64_t k = x.size(-1), n = weight.size(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = n;
  auto x2 = x.reshape({-1, k});
  auto y = bias.has_value() ? at::addmm(*bias, x2, weight.t()) : at::mm(x2, weight.t());  // [M, N]
  if (gelu_act || residual.has_value()) {
    y = y.contiguous();
    float* yp = y.data_ptr<float>();
    at::Tensor r = residual.has_value() ? residual->contiguous() : at::Tensor();
    const float* rp = residual.has_value() ? r.data_ptr<float>() : nullptr;
    at::parallel_for(0, y.numel(), 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float v = yp[i];
        if (gelu_act) v = gelu(v);
        if (rp) v += rp[i];
        yp[i] = v;
      }
    });
  }
  return y.view(out_shape);
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("linear", &linear); }

}  // namespace fastwhisper::cpu
