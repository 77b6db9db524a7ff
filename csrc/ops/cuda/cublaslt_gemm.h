// A linear layer as one cuBLASLt call: the bias is added by the GEMM's epilogue and the residual
// through beta = 1 (C = residual), so the output is written once.
#pragma once
#include <ATen/ATen.h>

namespace fastwhisper::cuda {

// out = x @ weight^T (+ bias) (+ residual), rounded once to out's dtype (fp32 accumulation; fp32 follows
// torch's TF32 setting for cuBLAS). Every matrix is row-major with unit inner stride:
//   x        [M, K]  (row stride >= K)
//   weight   [N, K]  (row stride >= K)
//   bias     [N] contiguous, or nullptr
//   residual [M, N]  (row stride >= N), or nullptr
//   out      [M, N]  (row stride >= N), written
// All in one dtype (float32, float16 or bfloat16), on the current CUDA device; runs on the current stream.
// Returns false without touching `out` when cuBLASLt cannot take the problem (dtype, K or N not a multiple
// of 8, a pointer or row stride not 16-byte aligned, no algorithm): the caller then uses its own path.
bool cublaslt_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias,
                     const at::Tensor* residual, const at::Tensor& out);

}  // namespace fastwhisper::cuda
