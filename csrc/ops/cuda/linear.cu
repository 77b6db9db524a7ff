// CUDA linear. Main path: one cuBLASLt call with the bias in the GEMM epilogue and the residual added
// through beta = 1 (cublaslt_gemm.h). With GELU (the encoder MLP's first layer) in fp16/bf16 on an H100 and
// enough rows: one CUTLASS GEMM whose epilogue adds the bias and applies Whisper's exact-erf GELU
// (cutlass_gelu_gemm.h); elsewhere cuBLASLt (its GELU is the tanh one), then one vectorized exact-erf GELU
// pass in place. Fallback (shapes, dtypes or alignments cuBLASLt does not take): ATen's GEMM and
// one fused epilogue pass (bias, GELU, residual) that reads the GEMM output once and writes it once.
#include <torch/library.h>

#include <algorithm>

#include "ops/checks.h"
#include "ops/cuda/cublaslt_gemm.h"
#include "ops/cuda/cutlass_gelu_gemm.h"
#include "ops/gelu.h"
#include "ops/kernels.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vec.cuh"

namespace fastwhisper::cuda {
namespace {

// y = gelu?(y + bias?) + residual?, in place, kVec elements per load. Grid: x over column packs, y over
// rows (grid-stride); a thread keeps its bias pack in registers for all its rows. No integer division.
template <typename T, int kVec>
__global__ void bias_gelu_residual_kernel(T* __restrict__ y,               // [rows, n], in place
                                          const T* __restrict__ bias,      // [n] or nullptr
                                          const T* __restrict__ residual,  // [rows, n] or nullptr
                                          int64_t rows, int n_packs,       // n_packs = n / kVec
                                          bool apply_gelu) {
  using P = Pack<T, kVec>;
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= n_packs) return;
  float b[kVec];
  if (bias) {
    const P bp = reinterpret_cast<const P*>(bias)[col];
#pragma unroll
    for (int e = 0; e < kVec; ++e) b[e] = static_cast<float>(bp.v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) b[e] = 0.f;
  }
  P* yp = reinterpret_cast<P*>(y);
  const P* rp = reinterpret_cast<const P*>(residual);
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t i = row * n_packs + col;
    P v = yp[i];
    P r;
    if (residual) r = rp[i];
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      float f = static_cast<float>(v.v[e]) + b[e];
      if (apply_gelu) f = gelu(f);
      if (residual) f += static_cast<float>(r.v[e]);
      v.v[e] = static_cast<T>(f);
    }
    yp[i] = v;
  }
}

template <typename T, int kVec>
void launch_epilogue(const at::Tensor& y, const T* bias, const T* residual, bool apply_gelu) {
  const int64_t rows = y.size(0);
  const int n_packs = static_cast<int>(y.size(1) / kVec);
  const int threads = n_packs >= 128 ? 128 : static_cast<int>(ceil_div(n_packs, 32) * 32);
  const auto col_blocks = static_cast<unsigned int>(ceil_div(n_packs, threads));
  // about 16 blocks per SM in all, at most one block row per output row
  const int64_t target = 16LL * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const auto row_blocks =
      static_cast<unsigned int>(std::clamp<int64_t>(target / col_blocks, 1, std::min<int64_t>(rows, 65535)));
  bias_gelu_residual_kernel<T, kVec><<<dim3(col_blocks, row_blocks), threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      y.data_ptr<T>(), bias, residual, rows, n_packs, apply_gelu);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// y [rows, n] contiguous, bias [n] contiguous or undefined, residual [rows, n] contiguous or undefined.
void epilogue(const at::Tensor& y, const at::Tensor& bias, const at::Tensor& residual, bool apply_gelu) {
  FASTWHISPER_DISPATCH_FLOATS(y.scalar_type(), "fastwhisper_linear_epilogue", [&] {
    const scalar_t* b = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    const scalar_t* r = residual.defined() ? residual.data_ptr<scalar_t>() : nullptr;
    constexpr int kVec = kPack16<scalar_t>;
    constexpr int64_t kBytes = 16;
    const bool vectorized = y.size(1) % kVec == 0 && is_aligned(y.data_ptr(), kBytes) &&
                            (!b || is_aligned(b, kBytes)) && (!r || is_aligned(r, kBytes));
    if (vectorized) {
      launch_epilogue<scalar_t, kVec>(y, b, r, apply_gelu);
    } else {
      launch_epilogue<scalar_t, 1>(y, b, r, apply_gelu);
    }
  });
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, bool gelu_act) {
  check_linear_args(c10::DeviceType::CUDA, x, weight, bias, residual);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t k = x.size(-1), n = weight.size(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = n;
  const auto x2 = x.reshape({-1, k});
  const int64_t m = x2.size(0);
  auto y = at::empty({m, n}, x.options());  // [M, N]
  if (y.numel() == 0) return y.view(out_shape);
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const at::Tensor r = residual.has_value() ? residual->reshape({m, n}) : at::Tensor();

  if (gelu_act && b.defined() && !r.defined() && cutlass_linear_bias_gelu(x2, weight, b, y)) {
    return y.view(out_shape);
  }
  // GELU comes before the residual: with GELU the residual is added by the GELU pass, not the GEMM
  const at::Tensor* gemm_residual = r.defined() && !gelu_act ? &r : nullptr;
  if (cublaslt_linear(x2, weight, b.defined() ? &b : nullptr, gemm_residual, y)) {
    if (gelu_act) epilogue(y, at::Tensor(), r.defined() ? r.contiguous() : r, /*apply_gelu=*/true);
    return y.view(out_shape);
  }
  if (!gelu_act && !r.defined()) {  // bias only: ATen adds it in its own GEMM epilogue
    if (b.defined()) {
      at::addmm_out(y, b, x2, weight.t());
    } else {
      at::mm_out(y, x2, weight.t());
    }
    return y.view(out_shape);
  }
  at::mm_out(y, x2, weight.t());
  epilogue(y, b, r.defined() ? r.contiguous() : r, gelu_act);
  return y.view(out_shape);
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("linear", &linear); }

}  // namespace fastwhisper::cuda
