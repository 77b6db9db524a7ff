// A block's input rows into shared memory, with whisper's LayerNorm applied on the way: the prologue of
// the decoder step's kernels that multiply a normalized row (decoder_linear, and the cross-attention
// kernel that computes its own query).
#pragma once
#include "ops/cuda/device_utils.cuh"

namespace fastwhisper::cuda {

// Input rows x [rows, K] -> shared memory h [rows, h_stride] (16-byte copies; h_stride >= K, a multiple of the
// 16-byte vector), then, when ln_w is given, whisper's LayerNorm of each row in place: fp32 mean, then fp32
// variance around it, output rounded to T. Each warp copies and normalizes whole rows alone (warp reductions,
// no block barrier; row m to warp m % warps), so the block waits at one barrier, the closing one, between the
// producer's output and its first use.
// ln_w and ln_b [K] fp32 (global or shared memory), 16-byte aligned; K % kPack16<T> == 0.
template <typename T>
__device__ void load_input_rows(const T* __restrict__ x, const float* __restrict__ ln_w,
                                const float* __restrict__ ln_b, T* h, int rows, int64_t K, int64_t h_stride) {
  constexpr int V = kPack16<T>;
  const int64_t n_vec = K / V, stride_vec = h_stride / V;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  auto* hv = reinterpret_cast<Pack16<T>*>(h);
  const auto* src = reinterpret_cast<const Pack16<T>*>(x);
  if (ln_w == nullptr) {
    if (stride_vec == n_vec) {  // packed rows: no index arithmetic on the path after the producer wait
      for (int64_t i = threadIdx.x; i < rows * n_vec; i += blockDim.x) hv[i] = src[i];
    } else {
      const int nv = static_cast<int>(n_vec), sv = static_cast<int>(stride_vec);
      for (int i = threadIdx.x; i < rows * nv; i += blockDim.x) hv[i / nv * sv + i % nv] = src[i];
    }
    __syncthreads();
    return;
  }
  for (int m = warp; m < rows; m += n_warps) {  // each lane reads back only the vectors it wrote
    Pack16<T>* row = hv + m * stride_vec;
    const Pack16<T>* in = src + m * n_vec;
    float sum = 0.f;
    for (int64_t i = lane; i < n_vec; i += 32) {
      const Pack16<T> p = in[i];
      row[i] = p;
#pragma unroll
      for (int j = 0; j < V; ++j) sum += static_cast<float>(p.v[j]);
    }
    const float mean = warp_sum(sum) / static_cast<float>(K);
    float squares = 0.f;
    for (int64_t i = lane; i < n_vec; i += 32) {
      const Pack16<T> p = row[i];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float c = static_cast<float>(p.v[j]) - mean;
        squares += c * c;
      }
    }
    const float rstd = rsqrtf(warp_sum(squares) / static_cast<float>(K) + 1e-5f);
    const auto* wv = reinterpret_cast<const float4*>(ln_w);  // [K / 4]: V is a multiple of 4
    const auto* bv = reinterpret_cast<const float4*>(ln_b);
    for (int64_t i = lane; i < n_vec; i += 32) {
      Pack16<T> p = row[i];
#pragma unroll
      for (int j4 = 0; j4 < V / 4; ++j4) {
        const float4 g = wv[i * (V / 4) + j4], b = bv[i * (V / 4) + j4];
        const float gs[4] = {g.x, g.y, g.z, g.w}, bs[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          p.v[j4 * 4 + j] = static_cast<T>((static_cast<float>(p.v[j4 * 4 + j]) - mean) * rstd * gs[j] + bs[j]);
        }
      }
      row[i] = p;
    }
  }
  __syncthreads();
}

}  // namespace fastwhisper::cuda
