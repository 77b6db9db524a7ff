// What decoder_linear's two CUDA kernels share: the CUDA-core kernel (decoder_linear.cu) and the tensor-core
// kernel for several rows (decoder_linear_mma.cu). The weights of one call as the kernels see them (up to
// three weight matrices, q, k and v, whose rows are the call's output columns, one after the other), the
// staging of the LayerNorm parameters and the one store of each output.
#pragma once
#include <cstdint>

#include "ops/cuda/bulk_copy.cuh"
#include "ops/cuda/device_utils.cuh"
#include "ops/gelu.h"

namespace fastwhisper::cuda {

constexpr int kMaxSegments = 3;  // q, k and v weights in one call

template <typename T>
struct Segments {
  const T* weight[kMaxSegments];  // weight[i]: [end[i] - end[i-1], K] row-major
  const T* bias[kMaxSegments];    // [end[i] - end[i-1]] or nullptr
  int64_t end[kMaxSegments];      // cumulative output-column ends
  int count;

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

// Weight rows [lo, hi) of the concatenated segments -> dst (rows of K), tracked by bar: one bulk copy
// per segment the range touches. Called by one thread.
template <typename T>
__device__ void request_rows(const Segments<T>& seg, int64_t lo, int64_t hi, int64_t K, T* dst, uint64_t* bar) {
  mbarrier_arrive_expect_tx(bar, static_cast<uint32_t>((hi - lo) * K * sizeof(T)));
#pragma unroll
  for (int i = 0; i < kMaxSegments; ++i) {  // unrolled: i is a constant, so no run-time indexing
    if (i >= seg.count) break;
    const int64_t s0 = seg.begin(i);
    const int64_t a = max(lo, s0), b = min(hi, seg.end[i]);
    if (a < b) bulk_copy_to_shared(dst + (a - lo) * K, seg.weight[i] + (a - s0) * K,
                                   static_cast<uint32_t>((b - a) * K * sizeof(T)), bar);
  }
}

// Asks L2 for weight rows [lo, hi) of the concatenated segments (one bulk prefetch per segment the range
// touches), without waiting. Called by one thread.
template <typename T>
__device__ void prefetch_rows(const Segments<T>& seg, int64_t lo, int64_t hi, int64_t K) {
#pragma unroll
  for (int i = 0; i < kMaxSegments; ++i) {
    if (i >= seg.count) break;
    const int64_t s0 = seg.begin(i);
    const int64_t a = max(lo, s0), b = min(hi, seg.end[i]);
    if (a < b) prefetch_l2(seg.weight[i] + (a - s0) * K, static_cast<uint32_t>((b - a) * K * sizeof(T)));
  }
}

// The LayerNorm weight and bias ln_w, ln_b [K] fp32 (16-byte aligned, K % 4 == 0) -> shared ln_s [2, K] by the
// whole block, published by a block barrier (the warps that normalize read rows other threads copied).
__device__ __forceinline__ void stage_layer_norm(const float* ln_w, const float* ln_b,
                                                 float* ln_s, int64_t K) {
  auto* dst = reinterpret_cast<float4*>(ln_s);
  for (int64_t i = threadIdx.x; i < K / 4; i += blockDim.x) {
    dst[i] = reinterpret_cast<const float4*>(ln_w)[i];
    dst[K / 4 + i] = reinterpret_cast<const float4*>(ln_b)[i];
  }
  __syncthreads();
}

// Output (m, n) of out [rows, N] from the fp32 sum of row m and column n and the column's bias, rounded as
// whisper's ops round: the Linear's output (bias added in fp32), the GELU output and the residual sum each to
// T; stored to out, or as fp32 to out_float [rows, N] where that is given. residual [rows, N] or nullptr.
template <typename T>
__device__ __forceinline__ void store_linear_output(float sum, float bias, bool apply_gelu, const T* residual, T* out,
                                                    float* out_float, int m, int64_t n, int64_t N) {
  T y = static_cast<T>(sum + bias);  // the Linear's output
  if (apply_gelu) y = static_cast<T>(gelu(static_cast<float>(y)));
  if (residual != nullptr) y = static_cast<T>(static_cast<float>(residual[m * N + n]) + static_cast<float>(y));
  if (out_float != nullptr) {
    out_float[m * N + n] = static_cast<float>(y);
  } else {
    out[m * N + n] = y;
  }
}

}  // namespace fastwhisper::cuda
