// CPU LayerNorm over the last dimension, two-pass fp32 statistics per row.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "kernels.h"

namespace fastwhisper::cpu {

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  check_layer_norm_args(c10::DeviceType::CPU, x, weight, bias, eps);
  auto xc = x.contiguous();
  auto out = at::empty_like(xc);
  const int64_t d = x.size(-1), rows = x.numel() / d;
  const float* xp = xc.data_ptr<float>();
  auto wc = weight.contiguous(), bc = bias.contiguous();
  const float* wp = wc.data_ptr<float>();
  const float* bp = bc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = xp + r * d;
      float* o = op + r * d;
      float sum = 0.f;
      for (int64_t i = 0; i < d; ++i) sum += xr[i];
      const float mean = sum / d;
      float sq = 0.f;
      for (int64_t i = 0; i < d; ++i) sq += (xr[i] - mean) * (xr[i] - mean);
      const float rstd = 1.f / std::sqrt(sq / d + static_cast<float>(eps));
      for (int64_t i = 0; i < d; ++i) o[i] = (xr[i] - mean) * rstd * wp[i] + bp[i];
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("layer_norm", &layer_norm); }

}  // namespace fastwhisper::cpu
