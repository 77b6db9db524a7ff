// CUDA linear: cuBLAS GEMM through ATen, then one fused epilogue pass (bias, GELU, residual) that
// reads the GEMM output once and writes it once.
#include <torch/library.h>

#include "checks.h"
#include "gelu.h"
#include "kernels.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

template <typename T>
__global__ void bias_gelu_residual_kernel(T* __restrict__ y,               // [rows, n], in place
                                          const T* __restrict__ bias,      // [n] or nullptr
                                          const T* __restrict__ residual,  // [rows, n] or nullptr
                                          int64_t total, int64_t n, bool apply_gelu) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = static_cast<float>(y[i]);
    if (bias) v += static_cast<float>(bias[i % n]);
    if (apply_gelu) v = gelu(v);
    if (residual) v += static_cast<float>(residual[i]);
    y[i] = static_cast<T>(v);
  }
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, bool gelu_act) {
  check_linear_args(c10::DeviceType::CUDA, x, weight, bias, residual);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t k = x.size(-1), n = weight.size(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = n;
  auto x2 = x.reshape({-1, k});
  const bool epilogue = gelu_act || residual.has_value();
  if (!epilogue) {
    // bias only: cuBLASLt adds it in the GEMM's own epilogue
    auto y = bias.has_value() ? at::addmm(*bias, x2, weight.t()) : at::mm(x2, weight.t());
    return y.view(out_shape);
  }
  auto y = at::mm(x2, weight.t()).contiguous();  // [M, N]
  if (y.numel() == 0) return y.view(out_shape);
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor r = residual.has_value() ? residual->contiguous() : at::Tensor();
  constexpr int kThreads = 256;
  const unsigned int blocks = elementwise_blocks(y.numel(), kThreads);
  auto stream = at::cuda::getCurrentCUDAStream();
  FASTWHISPER_DISPATCH_FLOATS(x.scalar_type(), "fastwhisper_linear_epilogue", [&] {
    bias_gelu_residual_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        y.data_ptr<scalar_t>(), b.defined() ? b.data_ptr<scalar_t>() : nullptr,
        r.defined() ? r.data_ptr<scalar_t>() : nullptr, y.numel(), n, gelu_act);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y.view(out_shape);
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("linear", &linear); }

}  // namespace fastwhisper::cuda
