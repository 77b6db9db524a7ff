// CUDA cross-attention of the decoder's one-token step over the cached K/V of the audio (CPU
// reference: decoder_cross_attention in cpu/decoder_step.cpp): ATen's SDPA for one row per window, the
// kernel below for 2 to kMaxGroup (beams), SDPA again for more (uses_sdpa).
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

#include "ops/checks.h"
#include "ops/cuda/async_copy.cuh"
#include "ops/cuda/device_utils.cuh"
#include "ops/cuda/layer_norm_rows.cuh"
#include "ops/decoder_step_ops.h"
#include "ops/cuda/launch.cuh"

namespace fastwhisper::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;  // rows per window in the cluster kernel (more: SDPA)
constexpr int kCluster = 8;   // key chunks per (window, head): the portable cluster size

// The query projection the fused kernel computes itself: q = LayerNorm(x) Wq^T + bq, as decoder_linear
// computes it (LayerNorm output and q rounded to T).
template <typename T>
struct QueryProjection {
  const T* x;          // [W * G, d] the residual stream
  const float* ln_w;   // [d]
  const float* ln_b;   // [d]
  const T* weight;     // [d, d] Wq (rows: output features)
  const T* bias;       // [d] or nullptr
};

// Byte offsets of the kernel's dynamic shared memory regions (the host sizes the launch with the same).
struct CrossLayout {
  size_t k, v, result, scores, partial, q_part, bias, ln, weight, h, total;
};

__host__ __device__ inline size_t align16(size_t bytes) { return (bytes + 15) / 16 * 16; }

// group rows per window, chunk keys per block, n_groups key groups of the value loop, cols query features per
// block (project) of d, elem bytes of T
__host__ __device__ inline CrossLayout cross_layout(int group, int chunk, int head_dim, int n_groups, int64_t d,
                                                    int cols, int elem, bool project) {
  CrossLayout l{};
  l.k = 0;
  l.v = l.k + static_cast<size_t>(chunk) * head_dim * elem;
  l.result = l.v + static_cast<size_t>(chunk) * head_dim * elem;
  l.scores = align16(l.result + static_cast<size_t>(group) * head_dim * 4);
  l.partial = align16(l.scores + static_cast<size_t>(group) * chunk * 4);
  l.q_part = align16(l.partial + static_cast<size_t>(group) * n_groups * head_dim * 4);
  l.total = l.q_part;
  if (project) {
    l.bias = align16(l.q_part + static_cast<size_t>(group) * cols * 4);
    l.ln = align16(l.bias + static_cast<size_t>(cols) * 4);
    l.weight = align16(l.ln + static_cast<size_t>(2 * d) * 4);
    l.h = align16(l.weight + static_cast<size_t>(cols) * d * elem);
    l.total = align16(l.h + static_cast<size_t>(group) * d * elem);
  }
  return l;
}

template <typename T, int kGroup, bool kProject>
__global__ void __launch_bounds__(kThreads)
    cross_attention_kernel(const T* __restrict__ q,             // [W * G, d] (nullptr when kProject)
                           const QueryProjection<T> proj,       // kProject: what q is computed from
                           const T* __restrict__ k,             // [W, n_keys, d]
                           const T* __restrict__ v,             // [W, n_keys, d]
                           T* __restrict__ out,                 // [W * G, d]
                           int64_t n_keys, int64_t d, int head_dim, int chunk, float scale) {
  // grid (kCluster, H, W), clusters of kCluster blocks along x: block c = this cluster's rank c takes keys
  // [c * chunk, (c + 1) * chunk) of window w, head `head` (and, kProject, the head's query features
  // [c * cols, (c + 1) * cols)).
  // dynamic shared memory (cross_layout): staged keys [chunk][head_dim] and values [chunk][head_dim] (T),
  // (float) result [G][head_dim] (first q), scores [G][chunk], partial [G][n_groups][head_dim]; kProject:
  // (float) q_part [G][cols], bias [cols], ln [2][d], then (T) weight [cols][d], h [G][d]
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float red[32];
  __shared__ float block_max[kGroup], block_sum[kGroup];  // per row: this chunk's score max, exp-sum
  constexpr int V = kPack16<T>;
  const cg::cluster_group cluster = cg::this_cluster();
  const int c = static_cast<int>(cluster.block_rank()), head = blockIdx.y, w = blockIdx.z;
  const int vecs = head_dim / V;  // 16-byte slices of one head (host: head_dim % V == 0, kThreads % vecs == 0)
  const int n_groups = blockDim.x / vecs, cols = head_dim / kCluster;
  const CrossLayout layout = cross_layout(kGroup, chunk, head_dim, n_groups, d, cols, sizeof(T), kProject);
  T* k_s = reinterpret_cast<T*>(smem_raw + layout.k);
  T* v_s = reinterpret_cast<T*>(smem_raw + layout.v);
  float* result = reinterpret_cast<float*>(smem_raw + layout.result);  // holds the scaled queries until the scores are done
  float* scores = reinterpret_cast<float*>(smem_raw + layout.scores);
  float* partial = reinterpret_cast<float*>(smem_raw + layout.partial);
  const int64_t t0 = static_cast<int64_t>(c) * chunk;
  const int n_t = static_cast<int>(max(static_cast<int64_t>(0), min(static_cast<int64_t>(chunk), n_keys - t0)));
  const T* k_global = k + (static_cast<int64_t>(w) * n_keys + t0) * d + static_cast<int64_t>(head) * head_dim;
  const T* v_global = v + (static_cast<int64_t>(w) * n_keys + t0) * d + static_cast<int64_t>(head) * head_dim;

  // Nothing here depends on the kernels before (weights, and K/V written before the step), so it is all
  // copied into shared memory while they still compute: first (kProject) the block's query weight rows and
  // the LayerNorm parameters, then this block's slice of the keys and values, every thread copying 16-byte
  // pieces (asynchronous copies, consecutive threads along one row slice). One bulk copy per 128-byte K/V
  // slice took longer to issue than a short producer kernel runs, so the copies were not hidden.
  allow_dependents();
  float* q_part = reinterpret_cast<float*>(smem_raw + layout.q_part);  // kProject: [G][cols] this block's q features
  float* bias_s = reinterpret_cast<float*>(smem_raw + layout.bias);
  float* ln_s = reinterpret_cast<float*>(smem_raw + layout.ln);
  T* weight_s = reinterpret_cast<T*>(smem_raw + layout.weight);
  T* h = reinterpret_cast<T*>(smem_raw + layout.h);
  const int64_t q_row0 = static_cast<int64_t>(head) * head_dim + static_cast<int64_t>(c) * cols;  // first Wq row
  if constexpr (kProject) {
    const int64_t d_vecs = d / V;
    for (int64_t idx = threadIdx.x; idx < cols * d_vecs; idx += blockDim.x) {
      stage16(weight_s + idx * V, proj.weight + q_row0 * d + idx * V);  // rows q_row0.. are contiguous
    }
    for (int64_t idx = threadIdx.x; idx < d / 4; idx += blockDim.x) {
      stage16(ln_s + idx * 4, proj.ln_w + idx * 4);
      stage16(ln_s + d + idx * 4, proj.ln_b + idx * 4);
    }
    async_copy_commit();
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      bias_s[j] = proj.bias == nullptr ? 0.f : static_cast<float>(proj.bias[q_row0 + j]);
    }
  }
  for (int idx = threadIdx.x; idx < 2 * n_t * vecs; idx += blockDim.x) {
    const int piece = idx % (n_t * vecs), t = piece / vecs, i = piece % vecs;
    const bool is_key = idx < n_t * vecs;
    stage16((is_key ? k_s : v_s) + static_cast<int64_t>(t) * head_dim + i * V,
            (is_key ? k_global : v_global) + static_cast<int64_t>(t) * d + i * V);
  }
  async_copy_commit();
  wait_for_producers();  // q (or x) comes from the kernel before

  if constexpr (kProject) {
    async_copy_wait_group<1>();  // the weight rows and LayerNorm parameters (the K/V may still be in flight)
    __syncthreads();
    load_input_rows<T>(proj.x + static_cast<int64_t>(w) * kGroup * d, ln_s, ln_s + d, h, kGroup, d, d);
    // this block's query features: warp-sized dot products of a normalized row with a weight row
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    const int64_t d_vecs = d / V;
    for (int p = warp; p < kGroup * cols; p += n_warps) {
      const int g = p / cols, col = p % cols;
      const auto* hv = reinterpret_cast<const Pack16<T>*>(h + static_cast<int64_t>(g) * d);
      const auto* wv = reinterpret_cast<const Pack16<T>*>(weight_s + static_cast<int64_t>(col) * d);
      float acc = 0.f;
      for (int64_t i = lane; i < d_vecs; i += 32) {
        const Pack16<T> a = hv[i], b = wv[i];
#pragma unroll
        for (int j = 0; j < V; ++j) acc += static_cast<float>(a.v[j]) * static_cast<float>(b.v[j]);
      }
      acc = warp_sum(acc);
      if (lane == 0) q_part[p] = static_cast<float>(static_cast<T>(acc + bias_s[col]));  // the Linear's output
    }
    cluster.sync();  // every block's query features are written and visible to the cluster
    for (int i = threadIdx.x; i < kGroup * head_dim; i += blockDim.x) {
      const int g = i / head_dim, j = i % head_dim;
      result[i] = *cluster.map_shared_rank(&q_part[g * cols + j % cols], j / cols) * scale;
    }
  } else {
    for (int i = threadIdx.x; i < kGroup * head_dim; i += blockDim.x) {
      const int g = i / head_dim, j = i % head_dim;
      result[i] = static_cast<float>(q[(static_cast<int64_t>(w) * kGroup + g) * d + static_cast<int64_t>(head) * head_dim + j]) *
                  scale;
    }
  }
  async_copy_wait_all();
  __syncthreads();  // every thread's copies and the scaled queries are visible to the block

  // scores: one key per thread, dotted with every row's query
  float local_max[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) local_max[g] = -INFINITY;
  for (int t = threadIdx.x; t < n_t; t += blockDim.x) {
    const auto* key = reinterpret_cast<const Pack16<T>*>(k_s + static_cast<int64_t>(t) * head_dim);
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
  const int i = threadIdx.x % vecs, kg = threadIdx.x / vecs;
  float acc[kGroup][V];
#pragma unroll
  for (int g = 0; g < kGroup; ++g)
#pragma unroll
    for (int j = 0; j < V; ++j) acc[g][j] = 0.f;
  for_each_key_slice<T, kValueLoads, int>(v_s, head_dim, i, kg, n_t, n_groups, [&](int t, const Pack16<T>& vv) {
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

// The cluster kernel's launch for a call: q [R, d] given (kProject false) or computed from proj.
template <typename T, int kGroup, bool kProject>
void launch_group(const T* q, const QueryProjection<T>& proj, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
                  int n_head, int chunk, size_t smem) {
  const int64_t d = out.size(1);
  const int head_dim = static_cast<int>(d / n_head);
  allow_dynamic_smem<cross_attention_kernel<T, kGroup, kProject>>(smem);
  launch_pdl_clusters(kCluster, cross_attention_kernel<T, kGroup, kProject>,
                      dim3(kCluster, n_head, static_cast<unsigned int>(k.size(0))), dim3(kThreads), smem, q, proj,
                      k.data_ptr<T>(), v.data_ptr<T>(), out.data_ptr<T>(), k.size(1), d, head_dim, chunk,
                      1.0f / std::sqrt(static_cast<float>(head_dim)));
}

template <typename T, bool kProject>
void launch_cross_attention(const T* q, const QueryProjection<T>& proj, const at::Tensor& k, const at::Tensor& v,
                            at::Tensor& out, int64_t group, int n_head, int chunk, size_t smem) {
  switch (group) {
    case 1: return launch_group<T, 1, kProject>(q, proj, k, v, out, n_head, chunk, smem);
    case 2: return launch_group<T, 2, kProject>(q, proj, k, v, out, n_head, chunk, smem);
    case 3: return launch_group<T, 3, kProject>(q, proj, k, v, out, n_head, chunk, smem);
    case 4: return launch_group<T, 4, kProject>(q, proj, k, v, out, n_head, chunk, smem);
    case 5: return launch_group<T, 5, kProject>(q, proj, k, v, out, n_head, chunk, smem);
    case 6: return launch_group<T, 6, kProject>(q, proj, k, v, out, n_head, chunk, smem);
    case 7: return launch_group<T, 7, kProject>(q, proj, k, v, out, n_head, chunk, smem);
    default: return launch_group<T, 8, kProject>(q, proj, k, v, out, n_head, chunk, smem);
  }
}

// The cluster kernel's checks and cut (shared by both ops): rows per window, key chunk, shared memory (the
// callers check its size).
struct CrossPlan {
  int64_t group;
  int64_t chunk;
  size_t smem;
};

CrossPlan plan_cross(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head,
                     bool project) {
  const int64_t rows = q.size(0), d = q.size(1), n_keys = k.size(1), head_dim = d / n_head;
  const int64_t vec = 16 / q.element_size();
  CrossPlan p{};
  p.group = rows / k.size(0);
  TORCH_CHECK(p.group <= kMaxGroup, "fastwhisper.", op, " (CUDA): at most ", kMaxGroup, " rows per audio window, got ",
              p.group);
  TORCH_CHECK(head_dim % vec == 0 && kThreads % (head_dim / vec) == 0, "fastwhisper.", op, " (CUDA): head size ",
              head_dim, " must be a multiple of ", vec, " whose ", vec, "-element slices divide ", kThreads);
  TORCH_CHECK(is_aligned(k.data_ptr(), 16) && is_aligned(v.data_ptr(), 16), "fastwhisper.", op,
              " (CUDA): k and v must start at 16-byte aligned addresses");
  // kCluster chunks of the keys; an empty chunk (fewer keys than kCluster) adds nothing
  p.chunk = ceil_div(n_keys, kCluster);
  const int n_groups = static_cast<int>(kThreads / (head_dim / vec));
  p.smem = cross_layout(static_cast<int>(p.group), static_cast<int>(p.chunk), static_cast<int>(head_dim), n_groups, d,
                        static_cast<int>(head_dim / kCluster), static_cast<int>(q.element_size()), project)
               .total;
  return p;
}

// ATen's SDPA (the rows of one window folded into its query length) for one row per window, the cluster kernel
// above for several (beams): with one row SDPA was as fast in whole steps, with beams the kernel was faster.
// More than kMaxGroup rows per window take SDPA (the kernel keeps at most kMaxGroup).
bool uses_sdpa(int64_t group) { return group == 1 || group > kMaxGroup; }

}  // namespace

at::Tensor decoder_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  check_decoder_cross_attention_args(c10::DeviceType::CUDA, q, k, v, n_head);
  const int64_t rows = q.size(0), d = q.size(1), windows = k.size(0), head_dim = d / n_head;
  const int64_t group = rows / windows;
  const c10::cuda::CUDAGuard guard(q.device());
  if (uses_sdpa(group)) {  // [W * G, d] -> [W, H, G, Dh]: a window's rows are its queries
    auto heads = [&](const at::Tensor& t) { return t.view({windows, -1, n_head, head_dim}).transpose(1, 2); };
    return at::scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape({rows, d});
  }
  const CrossPlan plan = plan_cross("decoder_cross_attention", q, k, v, n_head, false);
  TORCH_CHECK(plan.smem <= 200 * 1024, "fastwhisper.decoder_cross_attention (CUDA): ", k.size(1),
              " audio positions of ", group, " rows are too many for one block per key chunk");
  at::Tensor out = at::empty({rows, d}, q.options());
  FASTWHISPER_DISPATCH_FLOATS(q.scalar_type(), "fastwhisper_decoder_cross_attention", [&] {
    launch_cross_attention<scalar_t, false>(q.data_ptr<scalar_t>(), QueryProjection<scalar_t>{}, k, v, out, plan.group,
                                            static_cast<int>(n_head), static_cast<int>(plan.chunk), plan.smem);
  });
  return out;
}

// q = LayerNorm(x) Wq^T + bq, then the cross-attention (decoder_linear and decoder_cross_attention in one
// kernel): the cluster kernel computing its own query when the head splits evenly over the cluster (each
// block kCluster-th of the head's query features, gathered through distributed shared memory) and two of
// its blocks fit on an SM, else the two ops. (CPU reference: decoder_cross_query_attention in cpu/decoder_step.cpp.)
at::Tensor decoder_cross_query_attention(const at::Tensor& x, const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                         const at::Tensor& q_weight, const std::optional<at::Tensor>& q_bias,
                                         const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  check_decoder_cross_query_attention_args(c10::DeviceType::CUDA, x, ln_weight, ln_bias, q_weight, q_bias, k, v, n_head);
  const int64_t rows = x.size(0), d = x.size(1), head_dim = d / n_head;
  const bool aligned = is_aligned(x.data_ptr(), 16) && is_aligned(q_weight.data_ptr(), 16) &&
                       is_aligned(ln_weight.data_ptr(), 16) && is_aligned(ln_bias.data_ptr(), 16);
  const c10::cuda::CUDAGuard guard(x.device());
  if (rows / k.size(0) > kMaxGroup) {  // more rows per window than the cluster kernel keeps: SDPA after the query
    return cross_query_then_attention(decoder_linear, decoder_cross_attention, x, ln_weight, ln_bias, q_weight, q_bias,
                                      k, v, n_head);
  }
  const CrossPlan plan = plan_cross("decoder_cross_query_attention", x, k, v, n_head, true);
  // The fused kernel only where two of its blocks share an SM: with one (large-v3, 5 rows: 116 KB) its 8
  // blocks x heads take two waves, slower than the two ops.
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const size_t pair_smem = prop->sharedMemPerMultiprocessor / 2 - prop->reservedSharedMemPerBlock - 1024;
  if (head_dim % kCluster != 0 || !aligned || plan.smem > pair_smem) {
    return cross_query_then_attention(decoder_linear, decoder_cross_attention, x, ln_weight, ln_bias, q_weight, q_bias,
                                      k, v, n_head);
  }
  at::Tensor out = at::empty({rows, d}, x.options());
  FASTWHISPER_DISPATCH_FLOATS(x.scalar_type(), "fastwhisper_decoder_cross_query_attention", [&] {
    const QueryProjection<scalar_t> proj{x.data_ptr<scalar_t>(), ln_weight.data_ptr<float>(), ln_bias.data_ptr<float>(),
                                         q_weight.data_ptr<scalar_t>(),
                                         q_bias.has_value() ? q_bias->data_ptr<scalar_t>() : nullptr};
    launch_cross_attention<scalar_t, true>(nullptr, proj, k, v, out, plan.group, static_cast<int>(n_head),
                                           static_cast<int>(plan.chunk), plan.smem);
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) {
  m.impl("decoder_cross_attention", &decoder_cross_attention);
  m.impl("decoder_cross_query_attention", &decoder_cross_query_attention);
}

}  // namespace fastwhisper::cuda
