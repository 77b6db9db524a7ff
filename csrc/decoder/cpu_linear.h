// The decoder's Linears and vocabulary projection on the CPU, for the few rows of a one-token step.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace fastwhisper::decoder {

// x [..., K] @ weight [N, K]^T (+ bias [N]) -> [..., N], on the CPU: the same bits as at::linear(x, weight, bias).
// A one-token step is bound by memory bandwidth (tiny.en reads 80 MB of vocabulary projection and 33 MB of
// Linear weights per step), and MKL computes a product of a few rows on one thread, at one core's bandwidth.
// With at most kSplitRows rows and several torch threads, the N outputs are split into one chunk per thread,
// each its own product, run on torch's OpenMP threads (at::parallel_for: the threads that otherwise spin idle
// between ATen's parallel ops, so a product on another pool would share the cores with them). A chunk starts at
// a multiple of kSplitAlign outputs, where MKL's value for an output does not depend on the chunk. Inside the
// parallel region MKL computes on one thread, which gives the bits of its threaded product for up to 4 rows but
// not for 5 to 7 (tests/test_cpp_decoder.py checks the bits against whisper on two threads). More rows, one
// thread, or fewer than two chunks of outputs: at::linear. One row where gemv_takes (cpu_gemv.h): gemv_linear.
at::Tensor cpu_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);

constexpr int64_t kSplitRows = 4;
constexpr int64_t kSplitAlign = 64;

}  // namespace fastwhisper::decoder
