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

// Lets kKernel take `smem` bytes of dynamic shared memory. Its static shared memory counts against the same
// 48 KiB default, so the limit is raised from 40 KiB of dynamic memory on (a launch over the limit fails with
// 'invalid argument'); once per kernel and larger size, which the ops' eager warm-up reaches before any capture.
template <auto kKernel>
void allow_dynamic_smem(size_t smem) {
  static size_t allowed = 40 * 1024;
  if (smem > allowed) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    allowed = smem;
  }
}

// Lets `kernel` take all the dynamic shared memory a block may opt in to beside its static shared memory, with
// the SM's carveout preferring shared memory over L1; returns those bytes. Callers keep the result in a
// static: once per kernel (an eager run precedes any graph capture).
template <typename Kernel>
size_t allow_all_dynamic_smem(Kernel kernel) {
  cudaFuncAttributes attributes{};
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  const size_t bytes = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin - attributes.sharedSizeBytes;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  C10_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  return bytes;
}

}  // namespace fastwhisper::cuda
