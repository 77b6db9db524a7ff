#include "decoder/cpu_linear.h"

#include "decoder/cpu_gemv.h"

#include <ATen/Parallel.h>

#include <algorithm>

#ifndef _OPENMP
#error "cpu_linear.cpp splits work over torch's OpenMP threads: compile it with -fopenmp (CMakeLists.txt)"
#endif

namespace fastwhisper::decoder {

at::Tensor cpu_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const int64_t n = weight.size(0), k = weight.size(1);
  const int64_t rows = x.numel() / std::max<int64_t>(k, 1);
  const int64_t threads = at::get_num_threads();
  if (rows == 1 && !at::in_parallel_region() && gemv_takes(x, weight, bias)) {
    auto sizes = x.sizes().vec();
    sizes.back() = n;
    return gemv_linear(x, weight, bias).view(sizes);
  }
  const bool plain_bias = !bias.has_value() || (bias->is_contiguous() && bias->scalar_type() == at::kFloat);
  if (rows < 1 || rows > kSplitRows || threads < 2 || n < 2 * kSplitAlign || at::in_parallel_region() ||
      !x.is_contiguous() || !weight.is_contiguous() || x.scalar_type() != at::kFloat ||
      weight.scalar_type() != at::kFloat || !plain_bias) {
    return at::linear(x, weight, bias);
  }
  const at::Tensor x2 = x.view({rows, k});             // [M, K]
  at::Tensor out = at::empty({rows, n}, x.options());  // [M, N]
  const int64_t chunk = ((n + threads - 1) / threads + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  const int64_t chunks = (n + chunk - 1) / chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t start = c * chunk, len = std::min(chunk, n - start);
      at::Tensor o = out.narrow(1, start, len);  // [M, len], row stride N
      const at::Tensor w = weight.narrow(0, start, len).t();  // [K, len]
      if (bias.has_value()) {
        at::addmm_out(o, bias->narrow(0, start, len), x2, w);  // whisper's F.linear with a bias: addmm
      } else {
        at::mm_out(o, x2, w);
      }
    }
  });
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  return out.view(sizes);
}

}  // namespace fastwhisper::decoder
