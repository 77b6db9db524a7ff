// The decoder's vocabulary projection on the CPU for the few rows of a one-token step.
#pragma once
#include <ATen/ATen.h>

namespace fastwhisper::decoder {

// x [..., K] @ weight [N, K]^T -> [..., N], float32 on the CPU: the same bits as at::matmul(x, weight.t()).
// MKL computes a product of a few rows on one thread, at one core's memory bandwidth, while the vocabulary
// projection of a one-token step reads 80 MB of float32 weights (tiny). With at most kSplitRows rows the N
// outputs are split into one chunk per torch thread, each one product of its own, run on torch's inter-op
// pool (at::launch) and this thread; a chunk starts at a multiple of kSplitAlign outputs, where MKL's value for
// an output does not depend on the chunk (tests/test_cpp_decoder.py checks the bits). More rows (a prompt's
// first step) or one thread: at::matmul.
at::Tensor cpu_project(const at::Tensor& x, const at::Tensor& weight);

constexpr int64_t kSplitRows = 8;
constexpr int64_t kSplitAlign = 64;

}  // namespace fastwhisper::decoder
