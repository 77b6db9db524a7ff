// out = gelu(x @ weight^T + bias) as one Hopper GEMM (CUTLASS 3, TMA + WGMMA, warp-specialized) whose
// epilogue adds the bias and applies Whisper's exact-erf GELU to the fp32 accumulator before the one
// rounding to out's dtype: the GEMM output is written once and never read back (cuBLASLt's GELU epilogue
// is the tanh approximation, so without this the encoder's MLP needs a separate GELU pass).
#pragma once
#include <ATen/ATen.h>

namespace fastwhisper::cuda {

// Every matrix row-major with unit inner stride:
//   x      [M, K]  (row stride >= K)
//   weight [N, K]  (row stride >= K)
//   bias   [N] contiguous
//   out    [M, N]  (row stride >= N), written
// All float16 or all bfloat16, on the current CUDA device; runs on the current stream.
// Returns false without touching `out` where the kernel cannot take the problem (not built, the device is
// not compute capability 9.0, another dtype, K or N not a multiple of 8, a pointer or row stride not
// 16-byte aligned, or fewer than four 128x256 output tiles per SM, as in decoding steps and in encoders at
// batch 1 or 2, where cuBLASLt + the GELU pass is as fast): the caller then uses its own path.
bool cutlass_linear_bias_gelu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& out);

}  // namespace fastwhisper::cuda
