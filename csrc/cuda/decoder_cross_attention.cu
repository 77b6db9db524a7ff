// CUDA cross-attention of the decoder's one-token step over the cached K/V of the audio (CPU
// reference: decoder_cross_attention in cpu/decoder_step.cpp). One row per window runs ATen's SDPA
// or the kernels below (one_row_uses_sdpa); several rows per window (beams) run the kernels below.
//
// One query per row against T = 1500 keys: too little work per (row, head) for one block, so the
// keys are split into chunks (split-K, "flash decoding"). Pass 1, one block per (window, head, chunk):
// the scores of the chunk's keys (one key per thread, 16-byte loads) for every row of the window (the
// beams of one audio read its K/V once), their max and exp-sum, and the exp-weighted value sum.
// Pass 2, one block per (row, head): rescales the chunks' partial results to a common max and
// divides by the total exp-sum.
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "cuda/bulk_copy.cuh"
#include "cuda/device_utils.cuh"
#include "env_choice.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;  // rows per window (kDecoderMaxRows)

template <typename T, int kGroup>
__global__ void __launch_bounds__(kThreads)
    cross_attention_chunk_kernel(const T* __restrict__ q,        // [W * G, d]
                                 const T* __restrict__ k,        // [W, n_keys, d]
                                 const T* __restrict__ v,        // [W, n_keys, d]
                                 float* __restrict__ part_out,   // [W * G, H, n_chunks, head_dim]
                                 float* __restrict__ part_max,   // [W * G, H, n_chunks]
                                 float* __restrict__ part_sum,   // [W * G, H, n_chunks]
                                 int64_t n_keys, int64_t d, int head_dim, int chunk, float scale) {
  extern __shared__ float sm[];  // q [G][head_dim], scores [G][chunk], partial [G][n_groups][head_dim]
  __shared__ float red[32];
  constexpr int V = kPack16<T>;
  const int w = blockIdx.x, head = blockIdx.y, c = blockIdx.z;
  const int n_heads = gridDim.y, n_chunks = gridDim.z;
  const int vecs = head_dim / V;  // 16-byte slices of one head (host: head_dim % V == 0, kThreads % vecs == 0)
  float* qs = sm;
  float* scores = qs + kGroup * head_dim;
  float* partial = scores + kGroup * chunk;
  const int64_t t0 = static_cast<int64_t>(c) * chunk;
  const int n_t = static_cast<int>(min(static_cast<int64_t>(chunk), n_keys - t0));  // >= 1 (host)
  const T* kb = k + (static_cast<int64_t>(w) * n_keys + t0) * d + static_cast<int64_t>(head) * head_dim;
  const T* vb = v + (static_cast<int64_t>(w) * n_keys + t0) * d + static_cast<int64_t>(head) * head_dim;

  // K/V were written before the step: ask L2 for this block's slice of each key and value (one
  // request per slice) while the kernel before still computes the query
  allow_dependents();
  for (int idx = threadIdx.x; idx < 2 * n_t; idx += blockDim.x) {
    const T* line = (idx < n_t ? kb : vb) + static_cast<int64_t>(idx % n_t) * d;
    prefetch_l2(line, head_dim * static_cast<int>(sizeof(T)));
  }
  wait_for_producers();  // q comes from the kernel before
  for (int i = threadIdx.x; i < kGroup * head_dim; i += blockDim.x) {
    const int g = i / head_dim, j = i % head_dim;
    qs[i] = static_cast<float>(q[(static_cast<int64_t>(w) * kGroup + g) * d + static_cast<int64_t>(head) * head_dim + j]) *
            scale;
  }
  __syncthreads();

  // scores: one key per thread, dotted with every row's query
  float local_max[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) local_max[g] = -INFINITY;
  for (int t = threadIdx.x; t < n_t; t += blockDim.x) {
    const auto* key = reinterpret_cast<const Pack16<T>*>(kb + static_cast<int64_t>(t) * d);
    float s[kGroup];
#pragma unroll
    for (int g = 0; g < kGroup; ++g) s[g] = 0.f;
    for (int i = 0; i < vecs; ++i) {
      const Pack16<T> kv = key[i];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float kf = static_cast<float>(kv.v[j]);
#pragma unroll
        for (int g = 0; g < kGroup; ++g) s[g] += qs[g * head_dim + i * V + j] * kf;
      }
    }
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      scores[g * chunk + t] = s[g];
      local_max[g] = fmaxf(local_max[g], s[g]);
    }
  }
  float row_max[kGroup], row_sum[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) row_max[g] = block_reduce<true>(local_max[g], red);
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    float local_sum = 0.f;
    for (int t = threadIdx.x; t < n_t; t += blockDim.x) {
      const float e = __expf(scores[g * chunk + t] - row_max[g]);
      scores[g * chunk + t] = e;
      local_sum += e;
    }
    row_sum[g] = block_reduce<false>(local_sum, red);  // its barriers also publish scores[]
  }

  // exp-weighted values: thread = (slice i of the head, key group kg)
  const int i = threadIdx.x % vecs, kg = threadIdx.x / vecs, n_groups = blockDim.x / vecs;
  float acc[kGroup][V];
#pragma unroll
  for (int g = 0; g < kGroup; ++g)
#pragma unroll
    for (int j = 0; j < V; ++j) acc[g][j] = 0.f;
  for (int t = kg; t < n_t; t += n_groups) {
    const Pack16<T> vv = reinterpret_cast<const Pack16<T>*>(vb + static_cast<int64_t>(t) * d)[i];
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      const float e = scores[g * chunk + t];
#pragma unroll
      for (int j = 0; j < V; ++j) acc[g][j] += e * static_cast<float>(vv.v[j]);
    }
  }
#pragma unroll
  for (int g = 0; g < kGroup; ++g)
#pragma unroll
    for (int j = 0; j < V; ++j) partial[(g * n_groups + kg) * head_dim + i * V + j] = acc[g][j];
  __syncthreads();
  for (int idx = threadIdx.x; idx < kGroup * head_dim; idx += blockDim.x) {
    const int g = idx / head_dim, j = idx % head_dim;
    float total = 0.f;
    for (int gg = 0; gg < n_groups; ++gg) total += partial[(g * n_groups + gg) * head_dim + j];
    const int64_t slot = ((static_cast<int64_t>(w) * kGroup + g) * n_heads + head) * n_chunks + c;
    part_out[slot * head_dim + j] = total;
    if (j == 0) {
      part_max[slot] = row_max[g];
      part_sum[slot] = row_sum[g];
    }
  }
}

template <typename T>
__global__ void cross_attention_combine_kernel(const float* __restrict__ part_out,  // [R, H, n_chunks, head_dim]
                                               const float* __restrict__ part_max,  // [R, H, n_chunks]
                                               const float* __restrict__ part_sum,  // [R, H, n_chunks]
                                               T* __restrict__ out,                 // [R, d]
                                               int n_chunks, int64_t d, int head_dim) {
  const int64_t r = blockIdx.x;
  const int head = blockIdx.y, n_heads = gridDim.y;
  allow_dependents();
  wait_for_producers();
  const int64_t base = (r * n_heads + head) * n_chunks;
  float m = -INFINITY;
  for (int c = 0; c < n_chunks; ++c) m = fmaxf(m, part_max[base + c]);
  float total_sum = 0.f;
  for (int c = 0; c < n_chunks; ++c) total_sum += part_sum[base + c] * __expf(part_max[base + c] - m);
  for (int j = threadIdx.x; j < head_dim; j += blockDim.x) {
    float o = 0.f;
    for (int c = 0; c < n_chunks; ++c) o += part_out[(base + c) * head_dim + j] * __expf(part_max[base + c] - m);
    out[r * d + static_cast<int64_t>(head) * head_dim + j] = static_cast<T>(o / total_sum);
  }
}

template <typename T, int kGroup>
void launch_chunks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& part_out,
                   at::Tensor& part_max, at::Tensor& part_sum, int n_head, int n_chunks, int chunk, size_t smem) {
  const int64_t d = q.size(1);
  const int head_dim = static_cast<int>(d / n_head);
  auto kernel = cross_attention_chunk_kernel<T, kGroup>;
  // The kernel's static shared memory counts against the same 48 KiB default: raise the limit from
  // 40 KiB of dynamic memory on (a launch over the limit fails with 'invalid argument').
  static size_t smem_allowed = 40 * 1024;  // raised once per kernel, before any graph capture (eager warm-up)
  if (smem > smem_allowed) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    smem_allowed = smem;
  }
  launch_pdl(kernel, dim3(static_cast<unsigned int>(k.size(0)), n_head, n_chunks), dim3(kThreads), smem,
             q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), part_out.data_ptr<float>(), part_max.data_ptr<float>(),
             part_sum.data_ptr<float>(), k.size(1), d, head_dim, chunk,
             1.0f / std::sqrt(static_cast<float>(head_dim)));
}

// FASTWHISPER_CROSS_ATTENTION=sdpa|split|auto (auto: unset): which computes one row per window,
// ATen's SDPA or the split kernels above (several rows per window always take the split kernels).
// Measured on the H100 (large-v3 shapes, benchmarks/step_kernels_bench.py): one row per window, SDPA
// (cuDNN) 9.5 us, the split kernels 12.7 before their L2 prefetch and 9.5 with it; turbo's whole
// greedy decoder (benchmarks/decoder_bench.py) 0.442 ms/token with SDPA, 0.465 with the split kernels.
// Five rows (beams): SDPA 21.0 us, the split kernels 19.2 before the prefetch.
bool one_row_uses_sdpa() {
  static const bool sdpa = env_choice("FASTWHISPER_CROSS_ATTENTION", {"sdpa", "split", "auto"}, "auto") != "split";
  return sdpa;
}

}  // namespace

at::Tensor decoder_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  check_decoder_cross_attention_args(c10::DeviceType::CUDA, q, k, v, n_head);
  const int64_t rows = q.size(0), d = q.size(1), windows = k.size(0), n_keys = k.size(1), head_dim = d / n_head;
  const int64_t group = rows / windows;
  const int64_t vec = 16 / q.element_size();
  TORCH_CHECK(group <= kMaxGroup, "fastwhisper.decoder_cross_attention (CUDA): at most ", kMaxGroup,
              " rows per audio window, got ", group);
  TORCH_CHECK(head_dim % vec == 0 && kThreads % (head_dim / vec) == 0, "fastwhisper.decoder_cross_attention (CUDA): "
              "head size ", head_dim, " must be a multiple of ", vec, " whose ", vec, "-element slices divide ", kThreads);
  TORCH_CHECK(is_aligned(k.data_ptr(), 16) && is_aligned(v.data_ptr(), 16),
              "fastwhisper.decoder_cross_attention (CUDA): k and v must start at 16-byte aligned addresses");
  const c10::cuda::CUDAGuard guard(q.device());
  if (group == 1 && one_row_uses_sdpa()) {  // [W, d] -> [W, H, 1, Dh]
    auto heads = [&](const at::Tensor& t) { return t.view({windows, -1, n_head, head_dim}).transpose(1, 2); };
    return at::scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape({rows, d});
  }
  // chunks: about two blocks per SM in all, at least 32 keys each
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t want = std::max<int64_t>(1, ceil_div(2 * sms, windows * n_head));
  const int64_t chunk = std::max<int64_t>(32, ceil_div(n_keys, want));
  const int64_t n_chunks = ceil_div(n_keys, chunk);
  const int64_t n_groups = kThreads / (head_dim / vec);
  const size_t smem = static_cast<size_t>(group * head_dim + group * chunk + group * n_groups * head_dim) * sizeof(float);
  TORCH_CHECK(smem <= 200 * 1024, "fastwhisper.decoder_cross_attention (CUDA): shapes too large for one block");
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor part_out = at::empty({rows, n_head, n_chunks, head_dim}, f32);
  at::Tensor part_max = at::empty({rows, n_head, n_chunks}, f32);
  at::Tensor part_sum = at::empty({rows, n_head, n_chunks}, f32);
  at::Tensor out = at::empty({rows, d}, q.options());
  FASTWHISPER_DISPATCH_FLOATS(q.scalar_type(), "fastwhisper_decoder_cross_attention", [&] {
    const int h = static_cast<int>(n_head), nc = static_cast<int>(n_chunks), ch = static_cast<int>(chunk);
    switch (group) {
      case 1: launch_chunks<scalar_t, 1>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
      case 2: launch_chunks<scalar_t, 2>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
      case 3: launch_chunks<scalar_t, 3>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
      case 4: launch_chunks<scalar_t, 4>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
      case 5: launch_chunks<scalar_t, 5>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
      case 6: launch_chunks<scalar_t, 6>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
      case 7: launch_chunks<scalar_t, 7>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
      default: launch_chunks<scalar_t, 8>(q, k, v, part_out, part_max, part_sum, h, nc, ch, smem); break;
    }
    launch_pdl(cross_attention_combine_kernel<scalar_t>, dim3(static_cast<unsigned int>(rows), h), dim3(64), 0,
               part_out.data_ptr<float>(), part_max.data_ptr<float>(), part_sum.data_ptr<float>(),
               out.data_ptr<scalar_t>(), nc, d, static_cast<int>(head_dim));
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_cross_attention", &decoder_cross_attention); }

}  // namespace fastwhisper::cuda
