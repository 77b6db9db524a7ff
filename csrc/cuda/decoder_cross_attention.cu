// CUDA cross-attention of the decoder's one-token step over the cached K/V of the audio (CPU
// reference: decoder_cross_attention in cpu/decoder_step.cpp): ATen's SDPA for one row per window, the
// kernel below for several (beams), or as FASTWHISPER_CROSS_ATTENTION says (uses_sdpa).
//
// One query per row against T = 1500 keys: too little work per (row, head) for one block, so the
// keys are split into kCluster chunks ("flash decoding"), one block each, and the kCluster blocks of
// one (window, head) form a thread-block cluster (sm_90). Each block computes, for every row of the
// window (the beams of one audio read its K/V once), the scores of its chunk's keys (one key per
// thread, 16-byte loads), their max and exp-sum, and the exp-weighted value sum. The K/V do not depend
// on the step, so each block copies its chunk of them into shared memory (asynchronous copies) before it
// waits for the query's kernel, and reads only shared memory after it. After a cluster barrier each block
// reads the others' partial results from their shared memory (distributed shared memory), rescales them
// to the common max and writes its share of the outputs: one kernel, and the partial results never go
// to global memory.
#include <torch/library.h>

#include <cooperative_groups.h>

#include <cmath>

#include "checks.h"
#include "cuda/async_copy.cuh"
#include "cuda/device_utils.cuh"
#include "env_choice.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;  // rows per window (kDecoderMaxRows)
constexpr int kCluster = 8;   // key chunks per (window, head): the portable cluster size

template <typename T, int kGroup>
__global__ void __launch_bounds__(kThreads)
    cross_attention_kernel(const T* __restrict__ q,  // [W * G, d]
                           const T* __restrict__ k,  // [W, n_keys, d]
                           const T* __restrict__ v,  // [W, n_keys, d]
                           T* __restrict__ out,      // [W * G, d]
                           int64_t n_keys, int64_t d, int head_dim, int chunk, float scale) {
  // grid (kCluster, H, W), clusters of kCluster blocks along x: block c = this cluster's rank c takes keys
  // [c * chunk, (c + 1) * chunk) of window w, head `head`.
  // dynamic shared memory: staged keys [chunk][head_dim] and values [chunk][head_dim] (T), then (float)
  // result [G][head_dim] (first q), scores [G][chunk], partial [G][n_groups][head_dim]
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float red[32];
  __shared__ float block_max[kGroup], block_sum[kGroup];  // per row: this chunk's score max, exp-sum
  constexpr int V = kPack16<T>;
  const cg::cluster_group cluster = cg::this_cluster();
  const int c = static_cast<int>(cluster.block_rank()), head = blockIdx.y, w = blockIdx.z;
  const int vecs = head_dim / V;  // 16-byte slices of one head (host: head_dim % V == 0, kThreads % vecs == 0)
  T* k_s = reinterpret_cast<T*>(smem_raw);
  T* v_s = k_s + static_cast<int64_t>(chunk) * head_dim;
  float* result = reinterpret_cast<float*>(v_s + static_cast<int64_t>(chunk) * head_dim);  // holds the scaled queries until the scores are done
  float* scores = result + kGroup * head_dim;
  float* partial = scores + kGroup * chunk;
  const int64_t t0 = static_cast<int64_t>(c) * chunk;
  const int n_t = static_cast<int>(max(static_cast<int64_t>(0), min(static_cast<int64_t>(chunk), n_keys - t0)));
  const T* k_global = k + (static_cast<int64_t>(w) * n_keys + t0) * d + static_cast<int64_t>(head) * head_dim;
  const T* v_global = v + (static_cast<int64_t>(w) * n_keys + t0) * d + static_cast<int64_t>(head) * head_dim;

  // K/V were written before the step, so every thread copies 16-byte pieces of this block's slice of
  // the keys and values into shared memory (asynchronous copies, consecutive threads along one slice)
  // while the kernels before still compute the query. One bulk copy per 128-byte slice (55abaf6) took
  // longer than a short producer: step_kernels_bench.py --chain, large-v3 LN+cross-q -> attention 17.8 us
  // with bulk copies, 13.2 with these (h100-2026-11-23-cross-stage.md).
  allow_dependents();
  if (kHasAsyncCopy) {
    for (int idx = threadIdx.x; idx < 2 * n_t * vecs; idx += blockDim.x) {
      const int piece = idx % (n_t * vecs), t = piece / vecs, i = piece % vecs;
      const bool is_key = idx < n_t * vecs;
      async_copy16((is_key ? k_s : v_s) + static_cast<int64_t>(t) * head_dim + i * V,
                   (is_key ? k_global : v_global) + static_cast<int64_t>(t) * d + i * V);
    }
    async_copy_commit();
  }
  // where the keys and values are read from: the staged copies (row stride head_dim) or global memory (d)
  const T* kb = kHasAsyncCopy ? k_s : k_global;
  const T* vb = kHasAsyncCopy ? v_s : v_global;
  const int64_t kv_stride = kHasAsyncCopy ? head_dim : d;
  wait_for_producers();  // q comes from the kernel before
  for (int i = threadIdx.x; i < kGroup * head_dim; i += blockDim.x) {
    const int g = i / head_dim, j = i % head_dim;
    result[i] = static_cast<float>(q[(static_cast<int64_t>(w) * kGroup + g) * d + static_cast<int64_t>(head) * head_dim + j]) *
                scale;
  }
  async_copy_wait_all();
  __syncthreads();  // every thread's copies and the scaled queries are visible to the block

  // scores: one key per thread, dotted with every row's query
  float local_max[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) local_max[g] = -INFINITY;
  for (int t = threadIdx.x; t < n_t; t += blockDim.x) {
    const auto* key = reinterpret_cast<const Pack16<T>*>(kb + static_cast<int64_t>(t) * kv_stride);
    float s[kGroup];
#pragma unroll
    for (int g = 0; g < kGroup; ++g) s[g] = 0.f;
    for_each_slice<T, kKeyLoads>(key, vecs, [&](int i, const Pack16<T>& kv) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float kf = static_cast<float>(kv.v[j]);
#pragma unroll
        for (int g = 0; g < kGroup; ++g) s[g] += result[g * head_dim + i * V + j] * kf;
      }
    });
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
    row_sum[g] = block_reduce<false>(local_sum, red);  // its barriers also publish scores[] (and end the q reads)
  }

  // exp-weighted values: thread = (slice i of the head, key group kg)
  const int i = threadIdx.x % vecs, kg = threadIdx.x / vecs, n_groups = blockDim.x / vecs;
  float acc[kGroup][V];
#pragma unroll
  for (int g = 0; g < kGroup; ++g)
#pragma unroll
    for (int j = 0; j < V; ++j) acc[g][j] = 0.f;
  for_each_key_slice<T, kValueLoads, int>(vb, kv_stride, i, kg, n_t, n_groups, [&](int t, const Pack16<T>& vv) {
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      const float e = scores[g * chunk + t];
#pragma unroll
      for (int j = 0; j < V; ++j) acc[g][j] += e * static_cast<float>(vv.v[j]);
    }
  });
#pragma unroll
  for (int g = 0; g < kGroup; ++g)
#pragma unroll
    for (int j = 0; j < V; ++j) partial[(g * n_groups + kg) * head_dim + i * V + j] = acc[g][j];
  __syncthreads();
  for (int idx = threadIdx.x; idx < kGroup * head_dim; idx += blockDim.x) {
    const int g = idx / head_dim, j = idx % head_dim;
    float total = 0.f;
    for (int gg = 0; gg < n_groups; ++gg) total += partial[(g * n_groups + gg) * head_dim + j];
    result[idx] = total;
  }
  if (threadIdx.x == 0) {
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      block_max[g] = row_max[g];  // -inf (and a zero sum) for a chunk past the last key
      block_sum[g] = row_sum[g];
    }
  }
  cluster.sync();  // every block's result and statistics are written and visible to the cluster

  // combine: this block writes outputs [c * share, (c + 1) * share) of the window's G x head_dim for this head
  const int share = (kGroup * head_dim + kCluster - 1) / kCluster;
  for (int t = threadIdx.x; t < share && c * share + t < kGroup * head_dim; t += blockDim.x) {
    const int idx = c * share + t;
    const int g = idx / head_dim, j = idx % head_dim;
    float m = -INFINITY;
    for (int r = 0; r < kCluster; ++r) m = fmaxf(m, *cluster.map_shared_rank(&block_max[g], r));
    float total_sum = 0.f, o = 0.f;
    for (int r = 0; r < kCluster; ++r) {
      const float factor = __expf(*cluster.map_shared_rank(&block_max[g], r) - m);  // 0 for an empty chunk
      total_sum += *cluster.map_shared_rank(&block_sum[g], r) * factor;
      o += *cluster.map_shared_rank(&result[idx], r) * factor;
    }
    out[(static_cast<int64_t>(w) * kGroup + g) * d + static_cast<int64_t>(head) * head_dim + j] =
        static_cast<T>(o / total_sum);
  }
  cluster.sync();  // no block leaves while another still reads its shared memory
}

template <typename T, int kGroup>
void launch_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
                            int n_head, int chunk, size_t smem) {
  const int64_t d = q.size(1);
  const int head_dim = static_cast<int>(d / n_head);
  auto kernel = cross_attention_kernel<T, kGroup>;
  allow_dynamic_smem<cross_attention_kernel<T, kGroup>>(smem);
  launch_pdl_clusters(kCluster, kernel, dim3(kCluster, n_head, static_cast<unsigned int>(k.size(0))), dim3(kThreads),
                      smem, q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), out.data_ptr<T>(), k.size(1), d, head_dim, chunk,
             1.0f / std::sqrt(static_cast<float>(head_dim)));
}

// FASTWHISPER_CROSS_ATTENTION=sdpa|split|auto (auto: unset): ATen's SDPA (the rows of one window folded
// into its query length) or the cluster kernel above. auto: SDPA for one row per window, the kernel for
// several (beams). Measured on the H100 in whole steps (decoder_ablation.py, 6e21b2c, one call, SDPA vs
// kernel): beam 5 tiny 0.641 vs 0.577 ms, turbo 0.710 vs 0.714, large-v3 3.472 vs 3.337; greedy tiny 0.161
// vs 0.165, turbo 0.271 vs 0.280, large-v3 1.634 vs 1.631 (h100-2026-11-23-cross-stage.md). Before the
// asynchronous staging (bulk copies, 55abaf6) the kernel lost in both (large-v3 greedy 1.780 vs 1.902 ms,
// beam 5 3.359 vs 3.456; h100-2026-11-23-decoder-ablation-cross-{staged,beams}.md).
bool uses_sdpa(int64_t group) {
  static const std::string choice = env_choice("FASTWHISPER_CROSS_ATTENTION", {"sdpa", "split", "auto"}, "auto");
  if (choice == "auto") return group == 1;
  return choice == "sdpa";
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
  if (uses_sdpa(group)) {  // [W * G, d] -> [W, H, G, Dh]: a window's rows are its queries
    auto heads = [&](const at::Tensor& t) { return t.view({windows, -1, n_head, head_dim}).transpose(1, 2); };
    return at::scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape({rows, d});
  }
  // kCluster chunks of the keys; an empty chunk (fewer keys than kCluster) adds nothing
  const int64_t chunk = ceil_div(n_keys, kCluster);
  const int64_t n_groups = kThreads / (head_dim / vec);
  const size_t smem = static_cast<size_t>(2 * chunk * head_dim) * q.element_size() +
                      static_cast<size_t>(group * head_dim + group * chunk + group * n_groups * head_dim) * sizeof(float);
  TORCH_CHECK(smem <= 200 * 1024, "fastwhisper.decoder_cross_attention (CUDA): ", n_keys,
              " audio positions are too many for one block per chunk");
  at::Tensor out = at::empty({rows, d}, q.options());
  FASTWHISPER_DISPATCH_FLOATS(q.scalar_type(), "fastwhisper_decoder_cross_attention", [&] {
    const int h = static_cast<int>(n_head), ch = static_cast<int>(chunk);
    switch (group) {
      case 1: launch_cross_attention<scalar_t, 1>(q, k, v, out, h, ch, smem); break;
      case 2: launch_cross_attention<scalar_t, 2>(q, k, v, out, h, ch, smem); break;
      case 3: launch_cross_attention<scalar_t, 3>(q, k, v, out, h, ch, smem); break;
      case 4: launch_cross_attention<scalar_t, 4>(q, k, v, out, h, ch, smem); break;
      case 5: launch_cross_attention<scalar_t, 5>(q, k, v, out, h, ch, smem); break;
      case 6: launch_cross_attention<scalar_t, 6>(q, k, v, out, h, ch, smem); break;
      case 7: launch_cross_attention<scalar_t, 7>(q, k, v, out, h, ch, smem); break;
      default: launch_cross_attention<scalar_t, 8>(q, k, v, out, h, ch, smem); break;
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_cross_attention", &decoder_cross_attention); }

}  // namespace fastwhisper::cuda
