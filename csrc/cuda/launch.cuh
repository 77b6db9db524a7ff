// Helpers shared by the CUDA implementations: dtype dispatch and launch checking.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace fastwhisper::cuda {

// float32 / float16 / bfloat16 -> scalar_t: the ops' compute dtypes on CUDA (check_compute_dtype refuses
// the others before any dispatch, so no kernel is instantiated for float64).
#define FASTWHISPER_DISPATCH_FLOATS(TYPE, NAME, ...)                              \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::ScalarType::Float, __VA_ARGS__) \
                                     AT_DISPATCH_CASE(at::ScalarType::Half, __VA_ARGS__) \
                                         AT_DISPATCH_CASE(at::ScalarType::BFloat16, __VA_ARGS__))

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride elementwise loop over n elements.
inline unsigned int elementwise_blocks(int64_t n, int threads) {
  const int64_t max_blocks = 8LL * at::cuda::getCurrentDeviceProperties()->multiProcessorCount * 8;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, threads), max_blocks)));
}

}  // namespace fastwhisper::cuda
