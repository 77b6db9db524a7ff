// CUDA self-attention of the decoder's one-token step (CPU reference: cpu/decoder_step.cpp; the step's
// linear layers are in decoder_linear.cu).
//
// decoder_self_attention: one block per (row, head) writes the new K/V at the position read from
// device memory (so a CUDA graph can replay it for every position) and attends over positions 0..p:
// one key per thread (its 16-byte slices loaded together), then the value sum with one 16-byte slice of
// the head per thread. The cached positions are requested from L2 before the kernel waits for its input.
#include <torch/library.h>

#include <cmath>

#include "ops/checks.h"
#include "ops/cuda/bulk_copy.cuh"
#include "ops/cuda/device_utils.cuh"
#include "ops/cuda/launch.cuh"

namespace fastwhisper::cuda {
namespace {

template <typename T>
__global__ void decoder_self_attention_kernel(const T* __restrict__ qkv,            // [R, 3d]
                                              T* __restrict__ k_cache,              // [R, n_ctx, d]
                                              T* __restrict__ v_cache,              // [R, n_ctx, d]
                                              const int64_t* __restrict__ position, // [1]
                                              T* __restrict__ out,                  // [R, d]
                                              int64_t n_ctx, int64_t d, int head_dim, float scale) {
  extern __shared__ float sm[];  // q [head_dim], scores [n_ctx], partial sums [blockDim.x / vecs][head_dim]
  __shared__ float red[32];
  constexpr int V = kPack16<T>;
  const int vecs = head_dim / V;  // 16-byte slices of one head (head_dim % V == 0, host)
  float* q = sm;
  float* scores = sm + head_dim;
  float* partial = scores + n_ctx;
  const int64_t r = blockIdx.x;
  const int head = blockIdx.y;
  allow_dependents();  // the next kernel may start streaming its weights; it still waits for this one
  // The position and the cached keys/values before it were written before the step began (PDL
  // contract, device_utils.cuh): read the one and ask L2 for the others while the producer finishes.
  const int64_t p = *position;
  T* kc = k_cache + r * n_ctx * d + static_cast<int64_t>(head) * head_dim;
  T* vc = v_cache + r * n_ctx * d + static_cast<int64_t>(head) * head_dim;
  if (p > 0 && p < n_ctx) {
    for (int64_t idx = threadIdx.x; idx < 2 * p; idx += blockDim.x) {
      prefetch_l2((idx < p ? kc : vc) + (idx % p) * d, head_dim * static_cast<int>(sizeof(T)));
    }
  }
  wait_for_producers();
  T* o = out + r * d + static_cast<int64_t>(head) * head_dim;
  if (p < 0 || p >= n_ctx) {  // no sync possible inside a graph: make the error visible in the output
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) o[i] = static_cast<T>(NAN);
    return;
  }
  const T* src = qkv + r * 3 * d + static_cast<int64_t>(head) * head_dim;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    q[i] = static_cast<float>(src[i]) * scale;
    kc[p * d + i] = src[d + i];
    vc[p * d + i] = src[2 * d + i];
  }
  __syncthreads();  // the new K/V and q are visible to the whole block

  // scores: one key per thread, read as 16-byte slices
  float local_max = -INFINITY;
  for (int64_t t = threadIdx.x; t <= p; t += blockDim.x) {
    const auto* key = reinterpret_cast<const Pack16<T>*>(kc + t * d);
    float s = 0.f;
    for_each_slice<T, kKeyLoads>(key, vecs, [&](int i, const Pack16<T>& kv) {
#pragma unroll
      for (int j = 0; j < V; ++j) s += q[i * V + j] * static_cast<float>(kv.v[j]);
    });
    scores[t] = s;
    local_max = fmaxf(local_max, s);
  }
  const float max_score = block_reduce<true>(local_max, red);
  float local_sum = 0.f;
  for (int64_t t = threadIdx.x; t <= p; t += blockDim.x) {
    const float e = __expf(scores[t] - max_score);
    scores[t] = e;
    local_sum += e;
  }
  const float sum = block_reduce<false>(local_sum, red);  // its barriers also publish scores[]

  // weighted values: thread = (slice i of the head, key group g)
  const int i = threadIdx.x % vecs, g = threadIdx.x / vecs, n_groups = blockDim.x / vecs;
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  for_each_key_slice<T, kValueLoads, int64_t>(vc, d, i, g, p + 1, n_groups, [&](int64_t t, const Pack16<T>& vv) {
    const float e = scores[t];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += e * static_cast<float>(vv.v[j]);
  });
#pragma unroll
  for (int j = 0; j < V; ++j) partial[g * head_dim + i * V + j] = acc[j];
  __syncthreads();
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    float total = 0.f;
    for (int gg = 0; gg < n_groups; ++gg) total += partial[gg * head_dim + c];
    o[c] = static_cast<T>(total / sum);
  }
}

}  // namespace

at::Tensor decoder_self_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                                  const at::Tensor& position, int64_t n_head) {
  check_decoder_self_attention_args(c10::DeviceType::CUDA, qkv, k_cache, v_cache, position, n_head);
  const int64_t rows = k_cache.size(0), n_ctx = k_cache.size(1), d = k_cache.size(2), head_dim = d / n_head;
  constexpr int kThreads = 256;
  const int64_t vec = 16 / qkv.element_size();
  TORCH_CHECK(head_dim % vec == 0 && kThreads % (head_dim / vec) == 0, "fastwhisper.decoder_self_attention (CUDA): "
              "head size ", head_dim, " must be a multiple of ", vec, " whose ", vec, "-element slices divide ", kThreads);
  TORCH_CHECK(is_aligned(k_cache.data_ptr(), 16) && is_aligned(v_cache.data_ptr(), 16),
              "fastwhisper.decoder_self_attention (CUDA): k_cache and v_cache must start at 16-byte aligned addresses");
  const c10::cuda::CUDAGuard guard(qkv.device());
  at::Tensor out = at::empty({rows, d}, qkv.options());
  const size_t smem = static_cast<size_t>(head_dim + n_ctx + kThreads * vec) * sizeof(float);
  TORCH_CHECK(smem <= 48 * 1024, "fastwhisper.decoder_self_attention (CUDA): n_ctx ", n_ctx, " is too long");
  const dim3 grid(static_cast<unsigned int>(rows), static_cast<unsigned int>(n_head));
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  FASTWHISPER_DISPATCH_FLOATS(qkv.scalar_type(), "fastwhisper_decoder_self_attention", [&] {
    launch_pdl(decoder_self_attention_kernel<scalar_t>, grid, dim3(kThreads), smem, qkv.data_ptr<scalar_t>(),
               k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(), position.data_ptr<int64_t>(),
               out.data_ptr<scalar_t>(), n_ctx, d, static_cast<int>(head_dim), scale);
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) {
  m.impl("decoder_self_attention", &decoder_self_attention);
}

}  // namespace fastwhisper::cuda
