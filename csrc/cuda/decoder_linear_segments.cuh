// The weights of one decoder_linear call as the kernels see them: up to three weight matrices (q, k and v)
// whose rows are the call's output columns, one after the other. Shared by the CUDA-core kernel
// (decoder_linear.cu) and the tensor-core kernel for several rows (decoder_linear_mma.cu).
#pragma once
#include <cstdint>

namespace fastwhisper::cuda {

constexpr int kMaxSegments = 3;  // q, k and v weights in one call

template <typename T>
struct Segments {
  const T* weight[kMaxSegments];  // weight[i]: [end[i] - end[i-1], K] row-major
  const T* bias[kMaxSegments];    // [end[i] - end[i-1]] or nullptr
  int64_t end[kMaxSegments];      // cumulative output-column ends
  int count;

  // a[i] for a run-time i, without indexing the kernel parameter at run time: that would copy the
  // whole struct to each thread's local memory, which spills out of the L1 left beside the ring
  template <typename A>
  __device__ static A pick(const A (&a)[kMaxSegments], int i) {
    A r = a[0];
#pragma unroll
    for (int s = 1; s < kMaxSegments; ++s) r = i == s ? a[s] : r;
    return r;
  }
  __device__ const T* weight_of(int i) const { return pick(weight, i); }
  __device__ const T* bias_of(int i) const { return pick(bias, i); }
  __device__ int64_t begin(int i) const { return i == 0 ? 0 : pick(end, i - 1); }
  // the segment holding output column n (the ends increase, so it is the count of ends <= n)
  __device__ int find(int64_t n) const {
    int i = 0;
#pragma unroll
    for (int s = 0; s + 1 < kMaxSegments; ++s) i += (s + 1 < count && n >= end[s]) ? 1 : 0;
    return i;
  }
  // the bias of output column n, 0 when its segment has none
  __device__ float bias_at(int64_t n) const {
    const int i = find(n);
    const T* b = bias_of(i);
    return b == nullptr ? 0.f : static_cast<float>(b[n - begin(i)]);
  }
};

}  // namespace fastwhisper::cuda
