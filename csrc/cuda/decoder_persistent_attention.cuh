// The persistent decoder kernel's attention phases (decoder_persistent.cu): one head's attention over a run of
// keys, the self-attention phase, the cross-attention's chunks and their merge into the cross out phase's input.
#pragma once
#include <cmath>

#include "cuda/decoder_persistent_plan.cuh"

namespace fastwhisper::cuda::persistent {

// ---- attention -----------------------------------------------------------------------------------------------

// One head's query qs [64] (shared, fp32, scaled) over keys 0 .. n-1: key_at(t), value_at(t) give 16-byte
// aligned rows of 64 T. Returns the unnormalized output sum_t exp(s_t - max) v_t[i] in thread i < 64, and the
// max and exp-sum in every thread. Scores: 8 lanes per key (one 16-byte slice each); values: lane = (slice,
// key of 4), warps over keys, summed across warps in vsum [kWarps, 64].
template <typename T, typename KeyAt, typename ValueAt>
__device__ float attend(const float* qs, int n, KeyAt key_at, ValueAt value_at, float* scores, float* vsum,
                        float* red, float& max_out, float& sum_out) {
  constexpr int V = kPack16<T>;
  static_assert(kHeadDim == 8 * V, "a key is 8 16-byte slices");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, slice = lane % 8;
  float local_max = -INFINITY;
  for (int t0 = 0; t0 < n; t0 += kThreads / 8) {
    const int t = t0 + static_cast<int>(threadIdx.x) / 8;
    float s = 0.f;
    if (t < n) {
      const Pack16<T> k = reinterpret_cast<const Pack16<T>*>(key_at(t))[slice];
#pragma unroll
      for (int e = 0; e < V; ++e) s += qs[slice * V + e] * static_cast<float>(k.v[e]);
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 4);
    if (t < n) {
      if (slice == 0) scores[t] = s;
      local_max = fmaxf(local_max, s);
    }
  }
  const float top = block_reduce<true>(local_max, red);  // its barriers also publish scores[]
  float local_sum = 0.f;
  for (int t = threadIdx.x; t < n; t += kThreads) {
    const float e = __expf(scores[t] - top);
    scores[t] = e;
    local_sum += e;
  }
  const float sum = block_reduce<false>(local_sum, red);
  float acc[V];
#pragma unroll
  for (int e = 0; e < V; ++e) acc[e] = 0.f;
  for (int t = warp * 4 + lane / 8; t < n; t += kThreads / 8) {
    const Pack16<T> v = reinterpret_cast<const Pack16<T>*>(value_at(t))[slice];
    const float w = scores[t];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] += w * static_cast<float>(v.v[e]);
  }
#pragma unroll
  for (int e = 0; e < V; ++e) {
    acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], 8);
    acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], 16);
  }
  if (lane < 8) {
#pragma unroll
    for (int e = 0; e < V; ++e) vsum[warp * kHeadDim + lane * V + e] = acc[e];
  }
  __syncthreads();
  float out = 0.f;
  if (threadIdx.x < kHeadDim) {
    for (int w = 0; w < kWarps; ++w) out += vsum[w * kHeadDim + threadIdx.x];
  }
  max_out = top;
  sum_out = sum;
  return out;
}

// Phase 1's tail, block `head`: phase 2's cached keys and values (positions before pos) asked of L2.
template <typename T>
__device__ void prefetch_self_cache(const PersistentPlan& p, const int64_t* layer, int64_t pos) {
  if (static_cast<int>(blockIdx.x) >= p.n_head || pos <= 0 || pos >= p.n_ctx) return;
  const T* kc = field<T>(layer, kPSelfK) + blockIdx.x * kHeadDim;
  const T* vc = field<T>(layer, kPSelfV) + blockIdx.x * kHeadDim;
  for (int idx = threadIdx.x; idx < 2 * pos; idx += kThreads) {
    prefetch_l2((idx < pos ? kc : vc) + (idx % pos) * p.d, kHeadDim * sizeof(T));
  }
}

// Phase 2, block `head`: the new K/V into the cache at position pos, then attention over positions 0 .. pos.
template <typename T>
__device__ void self_attention_phase(const PersistentPlan& p, const int64_t* layer, int64_t pos, const T* qkv,
                                     T* attn, float* qs, float* scores, float* vsum, float* red) {
  const int head = blockIdx.x;
  if (head >= p.n_head) return;
  const int d = p.d;
  T* kc = const_cast<T*>(field<T>(layer, kPSelfK)) + head * kHeadDim;
  T* vc = const_cast<T*>(field<T>(layer, kPSelfV)) + head * kHeadDim;
  T* o = attn + head * kHeadDim;
  if (pos < 0 || pos >= p.n_ctx) {  // no error can be raised inside a graph: make it visible in the output
    if (threadIdx.x < kHeadDim) o[threadIdx.x] = static_cast<T>(NAN);
    return;
  }
  const T* src = qkv + head * kHeadDim;
  if (threadIdx.x < kHeadDim) {
    const int i = threadIdx.x;
    qs[i] = load_cg1(src + i) * p.scale;
    kc[pos * d + i] = static_cast<T>(load_cg1(src + d + i));
    vc[pos * d + i] = static_cast<T>(load_cg1(src + 2 * d + i));
  }
  __syncthreads();  // the new K/V and q are visible to the whole block
  float top, sum;
  const float out = attend<T>(
      qs, static_cast<int>(pos) + 1, [&](int t) { return kc + static_cast<int64_t>(t) * d; },
      [&](int t) { return vc + static_cast<int64_t>(t) * d; }, scores, vsum, red, top, sum);
  if (threadIdx.x < kHeadDim) o[threadIdx.x] = static_cast<T>(out / sum);
}

// Phase 4's tail, block (head, chunk): that chunk's keys and values -> stage [2, chunk_len, 64] (cp.async).
template <typename T>
__device__ void stage_cross_chunk(const PersistentPlan& p, const int64_t* layer, T* stage) {
  const int item = blockIdx.x;
  if (item >= p.n_head * p.chunks) return;
  const int head = item / p.chunks, t0 = item % p.chunks * p.chunk_len;
  const int n = max(0, min(p.chunk_len, p.n_audio_ctx - t0));
  const T* k = field<T>(layer, kPCrossK) + head * kHeadDim;
  const T* v = field<T>(layer, kPCrossV) + head * kHeadDim;
  for (int idx = threadIdx.x; idx < 2 * n * 8; idx += kThreads) {
    const int kv = idx / (n * 8), r = idx % (n * 8), t = r / 8, s = r % 8;
    const T* src = (kv == 0 ? k : v) + static_cast<int64_t>(t0 + t) * p.d + s * kPack16<T>;
    async_copy16(stage + (kv * p.chunk_len + t) * kHeadDim + s * kPack16<T>, src);
  }
  async_copy_commit();
}

// Phase 5, block (head, chunk): attention over the staged chunk -> its partial result.
template <typename T>
__device__ void cross_attention_phase(const PersistentPlan& p, const T* cq, const T* stage, float* qs, float* scores,
                                      float* vsum, float* red) {
  const int item = blockIdx.x;
  if (item >= p.n_head * p.chunks) return;
  const int head = item / p.chunks, t0 = item % p.chunks * p.chunk_len;
  const int n = max(0, min(p.chunk_len, p.n_audio_ctx - t0));
  async_copy_wait_group<0>();
  if (threadIdx.x < kHeadDim) qs[threadIdx.x] = load_cg1(cq + head * kHeadDim + threadIdx.x) * p.scale;
  __syncthreads();  // the query and every thread's staged copies
  float top, sum;
  const T* values = stage + p.chunk_len * kHeadDim;
  const float out = attend<T>(
      qs, n, [&](int t) { return stage + t * kHeadDim; }, [&](int t) { return values + t * kHeadDim; }, scores,
      vsum, red, top, sum);
  float* part = p.cross_part + static_cast<int64_t>(item) * kPartWords;
  if (threadIdx.x < kHeadDim) part[2 + threadIdx.x] = out;
  if (threadIdx.x == 0) {
    part[0] = top;
    part[1] = sum;
  }
}


// The cross-attention's partial results [n_head * chunks, kPartWords] -> h [d]: per head, the chunks' sums
// rescaled to the largest maximum, over their total exp-sum, rounded to T.
// In three steps, each one wave of independent loads or arithmetic: the chunks' maxima and exp-sums into
// weights [2, n_head * chunks] (shared), each chunk's share exp(m - max) / sum per head, then every output.
template <typename T>
__device__ void merge_cross_input(const PersistentPlan& p, const float* part, T* h, float* weights) {
  const int C = p.chunks, items = p.n_head * C;
  for (int i = threadIdx.x; i < items; i += kThreads) {
    weights[i] = __ldcg(part + static_cast<int64_t>(i) * kPartWords);
    weights[items + i] = __ldcg(part + static_cast<int64_t>(i) * kPartWords + 1);
  }
  __syncthreads();
  for (int head = threadIdx.x; head < p.n_head; head += kThreads) {
    float* m = weights + head * C;
    const float* l = weights + items + head * C;
    float top = -INFINITY;
    for (int c = 0; c < C; ++c) top = fmaxf(top, m[c]);
    float sum = 0.f;
    for (int c = 0; c < C; ++c) sum += m[c] == -INFINITY ? 0.f : l[c] * __expf(m[c] - top);  // -inf: no keys
    for (int c = 0; c < C; ++c) m[c] = m[c] == -INFINITY ? 0.f : __expf(m[c] - top) / sum;
  }
  __syncthreads();
  for (int j = threadIdx.x; j < p.d; j += kThreads) {
    const int head = j / kHeadDim;
    const float* ph = part + static_cast<int64_t>(head) * C * kPartWords + 2 + j % kHeadDim;
    float out = 0.f;
    for (int c = 0; c < C; ++c) out += __ldcg(ph + c * kPartWords) * weights[head * C + c];
    h[j] = static_cast<T>(out);
  }
  __syncthreads();
}

}  // namespace fastwhisper::cuda::persistent
