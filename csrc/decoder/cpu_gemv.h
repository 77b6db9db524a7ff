// One row times a weight matrix on the CPU, in the order of MKL's generic (non-Intel) sgemv kernel.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace fastwhisper::decoder {

// A one-token step of one row is a matrix-vector product per Linear. On CPUs where MKL takes its generic code
// path (mkl_blas_def_xsgemv, AMD among them), that kernel reads the weight at about one core's bandwidth and
// does not split the outputs over threads. gemv_rows computes the same sums in the same order, so the bits are
// the reference's, and cpu_linear runs it on every torch thread:
//   y[n] = ((w[0]x[0] + w[1]x[1]) + w[2]x[2]) + w[3]x[3] in lane 0, then 4 lanes l += w[k+l]x[k+l] for
//   k = 4, 8, ..., then (l0 + l2) + (l1 + l3), then + bias[n] (products and sums rounded one by one, no FMA).
// MKL computes the last n % 4 outputs another way, so cpu_linear leaves those to at::linear.
//   x:      [k] float32, 16-byte aligned
//   weight: [n, k] float32 rows, row stride k, 16-byte aligned; k a multiple of 4, at least 8
//   bias:   [n] float32 or nullptr
//   y:      [n] float32; outputs [begin, end) are written
void gemv_rows(const float* x, const float* weight, const float* bias, float* y, int64_t begin, int64_t end,
               int64_t k);

// Whether gemv_rows can take a product of x [1, k] with this weight [n, k] (and bias [n]): float32, contiguous,
// aligned, and on this machine bit-identical to at::linear. The last is measured once per (n, k, bias, threads)
// on the first such call, against at::linear of a random row with this weight (outside a parallel region).
bool gemv_takes(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);

// x [1, k] @ weight [n, k]^T (+ bias) -> [1, n] by gemv_rows over torch's threads, the last n % 4 by at::linear.
// Only where gemv_takes(x, weight, bias).
at::Tensor gemv_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);

}  // namespace fastwhisper::decoder
