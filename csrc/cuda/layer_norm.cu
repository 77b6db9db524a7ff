// CUDA LayerNorm over the last dimension: one warp per row, fp32 statistics (two passes over the row,
// which stays in L1), output in the input's dtype.
#include <torch/library.h>

#include "checks.h"
#include "kernels.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kRowsPerBlock = 4;  // one warp per row

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T, typename W>
__global__ void layer_norm_kernel(const T* __restrict__ x,     // [rows, d]
                                  const W* __restrict__ weight,  // [d]
                                  const W* __restrict__ bias,    // [d]
                                  T* __restrict__ out,           // [rows, d]
                                  int64_t rows, int d, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const T* xr = x + row * d;
  float sum = 0.f;
  for (int i = lane; i < d; i += 32) sum += static_cast<float>(xr[i]);
  const float mean = warp_sum(sum) / d;
  float sq = 0.f;
  for (int i = lane; i < d; i += 32) {
    const float c = static_cast<float>(xr[i]) - mean;
    sq += c * c;
  }
  const float rstd = rsqrtf(warp_sum(sq) / d + eps);
  T* o = out + row * d;
  for (int i = lane; i < d; i += 32) {
    const float c = static_cast<float>(xr[i]) - mean;
    o[i] = static_cast<T>(c * rstd * static_cast<float>(weight[i]) + static_cast<float>(bias[i]));
  }
}

}  // namespace

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  check_layer_norm_args(c10::DeviceType::CUDA, x, weight, bias, eps);
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous();
  auto wc = weight.contiguous(), bc = bias.contiguous();
  auto out = at::empty_like(xc);
  const int64_t d = x.size(-1), rows = x.numel() / d;
  if (rows == 0) return out;
  const unsigned int blocks = static_cast<unsigned int>(ceil_div(rows, kRowsPerBlock));
  auto stream = at::cuda::getCurrentCUDAStream();
  FASTWHISPER_DISPATCH_FLOATS(x.scalar_type(), "fastwhisper_layer_norm", [&] {
    if (weight.scalar_type() == at::kFloat) {
      layer_norm_kernel<scalar_t, float><<<blocks, 32 * kRowsPerBlock, 0, stream>>>(
          xc.data_ptr<scalar_t>(), wc.data_ptr<float>(), bc.data_ptr<float>(), out.data_ptr<scalar_t>(), rows,
          static_cast<int>(d), static_cast<float>(eps));
    } else {
      layer_norm_kernel<scalar_t, scalar_t><<<blocks, 32 * kRowsPerBlock, 0, stream>>>(
          xc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), rows,
          static_cast<int>(d), static_cast<float>(eps));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("layer_norm", &layer_norm); }

}  // namespace fastwhisper::cuda
