// The decoder's one-token step for one row in one persistent kernel (decoder_persistent.h says why). The CPU
// reference is the step the kernel replaces: DecoderSession's step ops (cpu/decoder_step.cpp) and its
// ATen step; tests/test_decoder_step_ops.py compares the three.
//
// One block per SM, all co-resident (a cooperative launch), 16 warps. A layer is eight phases; between two
// phases every block waits at a grid-wide barrier (a counter in global memory):
//   1. LayerNorm + q/k/v               5. cross-attention: one block per (head, chunk of keys), partial sums
//   2. self-attention: one block a head  6. the partial sums merged, cross out + residual
//   3. out + residual                  7. LayerNorm + mlp.0 + GELU
//   4. LayerNorm + cross query         8. mlp.2 + residual
// and after the last layer a ninth: the final LayerNorm and the vocabulary (the logits, fp32).
// Linear phases: a block owns a contiguous range of output columns (weight rows); each row is cut along K
// into `splits` slices, and the (row, slice) items go round-robin to the warps. A warp streams its items'
// weights through its own ring of kSlots shared-memory slots with the bulk copy engine, in the order it
// will use them: its items of phase 1 of layer 0, of phase 3, ..., of phase 8 of the last layer, then of the
// vocabulary. Weights do not depend on activations, so a warp refills a slot as soon as it has used it,
// whatever phase or layer the next item belongs to: when a block reaches a barrier its rings already hold the
// next phase's weights. The items' sums meet in shared memory and are added in slice order, so a result does
// not depend on timing. What a phase needs besides its input is requested before its input exists: a thread's
// bias and residual row when the phase begins, the LayerNorm parameters and the cross-attention's keys and
// values of a block's chunk as asynchronous copies (cp.async) before the barrier that precedes the phase.
//
// Rounding follows whisper's ops as decoder_linear's does: the LayerNorm output, each linear output (bias
// added in fp32), the GELU output, the residual sums and each attention output are rounded to T.
// Data that other blocks wrote in this launch is read through L2 (ld.global.cg): L1 is not coherent.
#include "cuda/decoder_persistent.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>

#include "cuda/async_copy.cuh"
#include "cuda/bulk_copy.cuh"
#include "cuda/device_utils.cuh"
#include "env_choice.h"
#include "gelu.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kWarps = 16;
constexpr int kThreads = kWarps * 32;
constexpr int kSlots = 3;              // ring slots per warp
constexpr int kHeadDim = 64;           // every Whisper model's head size
constexpr int kMaxItems = 1024;        // (row, slice) items of one linear phase in one block
constexpr int kMaxItemElems = 1280;    // weights of one item: one ring slot
constexpr int kMinItemElems = 128;     // a finer cut leaves lanes idle
constexpr int kMaxLnVecs = 5;          // 16-byte vectors of a LayerNorm row per lane: d <= 5 * 32 * 8
constexpr int kPartWords = 2 + kHeadDim;  // cross-attention partial: max, exp-sum, unnormalized output

// The linear phases: six in every layer, then the vocabulary once.
enum Kind : int { kQkv = 0, kOut, kCrossQ, kCrossOut, kMlp0, kMlp2, kVocab, kKinds };
constexpr int kLayerKinds = kVocab;

struct PersistentPlan {
  int n_layer, d, n_head, n_ctx, n_audio_ctx, n_vocab;
  int rows_per_block[kKinds];  // weight rows (output columns) a block owns
  int splits[kKinds];          // slices per weight row
  int chunks, chunk_len;       // cross-attention: key chunks per head, keys per chunk
  int slot_elems;              // elements of one ring slot
  int max_items;               // items of the largest linear phase in one block (at most kThreads rows)
  float scale;                 // 1 / sqrt(head size)
  // workspace
  unsigned int* sync;          // [2] barrier counter, exit counter
  void* qkv;                   // [3d] T
  void* attn;                  // [d] T
  void* cq;                    // [d] T
  void* hidden;                // [4d] T
  float* cross_part;           // [n_head * chunks, kPartWords]
  const void* vocab_w;         // [n_vocab, d] T: the token embedding
  const float* final_ln_w;     // [d]
  const float* final_ln_b;     // [d]
  float* logits;               // [n_vocab] the step's output
  unsigned long long* trace;   // [8 n_layer + 2, grid, 4] or nullptr: see persistent_trace (ns)
  int barrier_sleep_ns;        // pause between two polls of the barrier counter (0: none)
  // shared memory, byte offsets
  int h_off, kv_off, part_off, scores_off, vsum_off, q_off, ln_off, smem;
};

// ---- device helpers -------------------------------------------------------------------------------------

__device__ __forceinline__ int kind_n(const PersistentPlan& p, int kind) {
  return kind == kQkv ? 3 * p.d : kind == kMlp0 ? 4 * p.d : kind == kVocab ? p.n_vocab : p.d;
}
__device__ __forceinline__ int kind_k(const PersistentPlan& p, int kind) { return kind == kMlp2 ? 4 * p.d : p.d; }

__device__ __forceinline__ int block_rows(const PersistentPlan& p, int kind) {
  const int rpb = pick(p.rows_per_block, kind);
  return max(0, min(rpb, kind_n(p, kind) - static_cast<int>(blockIdx.x) * rpb));
}
__device__ __forceinline__ int block_items(const PersistentPlan& p, int kind) {
  return block_rows(p, kind) * pick(p.splits, kind);
}

template <typename T>
__device__ __forceinline__ const T* field(const int64_t* layer, int f) {
  return reinterpret_cast<const T*>(layer[f]);
}

// 16 bytes that another block wrote in this launch, from L2
template <typename T>
__device__ __forceinline__ Pack16<T> load_cg(const T* p, int vec) {
  const int4 raw = __ldcg(reinterpret_cast<const int4*>(p) + vec);
  return *reinterpret_cast<const Pack16<T>*>(&raw);
}
template <typename T>
__device__ __forceinline__ float load_cg1(const T* p) {
  if constexpr (sizeof(T) == 2) {
    const unsigned short raw = __ldcg(reinterpret_cast<const unsigned short*>(p));
    return static_cast<float>(*reinterpret_cast<const T*>(&raw));
  } else {
    return __ldcg(reinterpret_cast<const float*>(p));
  }
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// trace[(index * grid + block) * 4 + which] = now, where tracing is on (FASTWHISPER_PERSISTENT_TRACE). One thread.
// which: 0 arrival at barrier `index`, 1 departure from it, 2 and 3: the phase that ends at barrier `index` has
// its input (2) and its products (3).
__device__ __forceinline__ void trace_time(const PersistentPlan& p, int index, int which) {
  if (p.trace != nullptr) p.trace[(static_cast<int64_t>(index) * gridDim.x + blockIdx.x) * 4 + which] = global_ns();
}
// The same for the phase running now (target: the barrier target so far), by thread 0.
__device__ __forceinline__ void trace_phase(const PersistentPlan& p, unsigned int target, int which) {
  if (threadIdx.x == 0) trace_time(p, static_cast<int>(target / gridDim.x) + 1, which);
}

// Every block arrives, then waits until all have: one counter, whose target grows by the grid each time.
__device__ __forceinline__ void grid_barrier(const PersistentPlan& p, unsigned int& target) {
  target += gridDim.x;
  const int index = static_cast<int>(target / gridDim.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    trace_time(p, index, 0);
    __threadfence();
    atomicAdd(p.sync, 1u);
    unsigned int seen = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(p.sync) : "memory");
      if (seen >= target) break;
      if (p.barrier_sleep_ns > 0) __nanosleep(p.barrier_sleep_ns);
    }
    __threadfence();
    trace_time(p, index, 1);
  }
  async_copy_wait_group<0>();  // this thread's copies issued before the barrier (LayerNorm parameters, cross K/V)
  __syncthreads();
}

// ---- the weight streams -----------------------------------------------------------------------------------

// The next item a warp requests: layer, kind, item index in the block. The layers' kinds in order, then (layer
// n_layer) the vocabulary; past that (layer > n_layer) none is left.
struct Stream {
  int layer, kind, i;
};

__device__ __forceinline__ bool stream_live(const PersistentPlan& p, const Stream& s) { return s.layer <= p.n_layer; }

// Moves s to the first item at or after it that exists (this warp takes items warp, warp + kWarps, ...).
__device__ void skip_empty(const PersistentPlan& p, Stream& s, int warp) {
  while (stream_live(p, s) && s.i >= block_items(p, s.kind)) {
    s.i = warp;
    if (s.kind == kVocab) {
      ++s.layer;  // done
    } else if (++s.kind == kLayerKinds) {
      s.kind = ++s.layer == p.n_layer ? kVocab : 0;
    }
  }
}

// The first weight row of item s's row: the token embedding for the vocabulary, else that layer's weight
// (q, k or v by the row for the first phase); n: the row in the phase's output columns.
template <typename T>
__device__ const T* item_row(const PersistentPlan& p, const int64_t* __restrict__ table, const Stream& s, int n) {
  if (s.kind == kVocab) return static_cast<const T*>(p.vocab_w) + static_cast<int64_t>(n) * p.d;
  const int64_t* layer = table + static_cast<int64_t>(s.layer) * kPersistentFields;
  int f;
  switch (s.kind) {
    case kQkv: {
      const int seg = n / p.d;
      n -= seg * p.d;
      f = seg == 0 ? kPQW : seg == 1 ? kPKW : kPVW;
      break;
    }
    case kOut: f = kPOutW; break;
    case kCrossQ: f = kPCrossQW; break;
    case kCrossOut: f = kPCrossOutW; break;
    case kMlp0: f = kPMlp0W; break;
    default: f = kPMlp2W; break;
  }
  return field<T>(layer, f) + static_cast<int64_t>(n) * kind_k(p, s.kind);
}

// Item s's weights -> dst (one ring slot), tracked by bar; then s moves to the warp's next item. One lane.
template <typename T>
__device__ void request_item(const PersistentPlan& p, const int64_t* __restrict__ table, Stream& s, T* dst,
                             uint64_t* bar, int warp) {
  const int ks = pick(p.splits, s.kind), ksl = kind_k(p, s.kind) / ks;
  const int n = static_cast<int>(blockIdx.x) * pick(p.rows_per_block, s.kind) + s.i / ks;
  const T* src = item_row<T>(p, table, s, n) + (s.i % ks) * ksl;
  const auto bytes = static_cast<uint32_t>(ksl * sizeof(T));
  mbarrier_arrive_expect_tx(bar, bytes);
  bulk_copy_to_shared(dst, src, bytes, bar);
  s.i += kWarps;
  skip_empty(p, s, warp);
}

struct WarpRing {
  uint64_t* full;  // [kSlots] this warp's barriers
  int used;        // items consumed so far
};

// This warp's items of phase `kind`: each item's dot product with its slice of h [K] (shared), into
// partial[item]; each used slot refilled with the warp's next item, whatever phase it belongs to.
template <typename T>
__device__ void multiply_items(const PersistentPlan& p, int kind, const T* h, T* ring, WarpRing& wr, Stream& s,
                               const int64_t* __restrict__ table, float* partial) {
  constexpr int V = kPack16<T>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int ks = pick(p.splits, kind), ksl = kind_k(p, kind) / ks, n_items = block_items(p, kind);
  const int nv = ksl / V;
  for (int i = warp; i < n_items; i += kWarps, ++wr.used) {
    const int slot = wr.used % kSlots;
    T* w = ring + slot * p.slot_elems;
    mbarrier_wait(&wr.full[slot], (wr.used / kSlots) & 1);
    const auto* wv = reinterpret_cast<const Pack16<T>*>(w);
    const auto* hv = reinterpret_cast<const Pack16<T>*>(h + (i % ks) * ksl);
    float acc = 0.f;
#pragma unroll 2
    for (int v = lane; v < nv; v += 32) {
      const Pack16<T> a = wv[v], b = hv[v];
#pragma unroll
      for (int e = 0; e < V; ++e) acc += static_cast<float>(a.v[e]) * static_cast<float>(b.v[e]);
    }
    acc = warp_sum(acc);
    if (lane == 0) partial[i] = acc;
    __syncwarp();  // every lane is done with the slot
    if (lane == 0 && stream_live(p, s)) {
      fence_shared_for_bulk_copy();
      request_item(p, table, s, w, &wr.full[slot], warp);
    }
  }
}

// What thread t needs to finish output row n0 + t of a linear phase: its bias and, where the phase adds the
// residual, that row of x. Loaded when the phase begins and used after the multiply, so that the loads' latency
// (DRAM for the biases: a step streams far more weights than L2 holds) hides behind the input and the products.
struct RowParams {
  float bias, residual;
};

template <typename T>
__device__ RowParams row_params(const PersistentPlan& p, int kind, const int64_t* layer, const T* x) {
  RowParams r{0.f, 0.f};
  const int t = threadIdx.x;
  if (t >= block_rows(p, kind)) return r;
  const int n = static_cast<int>(blockIdx.x) * pick(p.rows_per_block, kind) + t;
  const T* b = nullptr;
  int bn = n;
  switch (kind) {
    case kQkv:
      if (n < p.d) {
        b = field<T>(layer, kPQB);
      } else if (n >= 2 * p.d) {
        b = field<T>(layer, kPVB);
        bn = n - 2 * p.d;
      }
      break;
    case kOut: b = field<T>(layer, kPOutB); break;
    case kCrossQ: b = field<T>(layer, kPCrossQB); break;
    case kCrossOut: b = field<T>(layer, kPCrossOutB); break;
    case kMlp0: b = field<T>(layer, kPMlp0B); break;
    case kMlp2: b = field<T>(layer, kPMlp2B); break;
    default: break;  // the vocabulary: no bias (and no layer)
  }
  if (b != nullptr) r.bias = static_cast<float>(b[bn]);
  if (kind == kOut || kind == kCrossOut || kind == kMlp2) r.residual = load_cg1(x + n);
  return r;
}

// The block's output columns of phase `kind`: store(n, sum + bias, residual) with each row's slices added in
// order; thread t finishes row n0 + t (a block has at most kThreads rows: make_plan).
template <typename Store>
__device__ void finish_rows(const PersistentPlan& p, int kind, const float* partial, const RowParams& rp,
                            unsigned int target, Store store) {
  __syncthreads();  // every item's sum is in partial
  trace_phase(p, target, 3);
  const int ks = pick(p.splits, kind), t = threadIdx.x;
  if (t < block_rows(p, kind)) {
    float total = 0.f;
    for (int s = 0; s < ks; ++s) total += partial[t * ks + s];
    store(static_cast<int>(blockIdx.x) * pick(p.rows_per_block, kind) + t, total + rp.bias, rp.residual);
  }
}

// ---- phase inputs -----------------------------------------------------------------------------------------

// x [d] -> h [d]: whisper's LayerNorm (fp32 mean, then fp32 variance around it), rounded to T. Every warp with
// vectors to write computes the statistics itself (no block barrier before them); warp w writes vectors
// lane + 32 w. ln_w, ln_b [d] fp32 in shared memory (stage_layer_norm before the barrier).
template <typename T>
__device__ void layer_norm_input(const T* x, const float* ln_w, const float* ln_b, T* h, int d) {
  constexpr int V = kPack16<T>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nv = d / V;
  if (warp * 32 < nv) {
    const int mine = lane + 32 * warp;
    float4 g[V / 4], b[V / 4];
    if (mine < nv) {
#pragma unroll
      for (int j = 0; j < V / 4; ++j) {
        g[j] = reinterpret_cast<const float4*>(ln_w)[mine * (V / 4) + j];
        b[j] = reinterpret_cast<const float4*>(ln_b)[mine * (V / 4) + j];
      }
    }
    Pack16<T> v[kMaxLnVecs];
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxLnVecs; ++j) {
      if (lane + 32 * j < nv) v[j] = load_cg(x, lane + 32 * j);
    }
#pragma unroll
    for (int j = 0; j < kMaxLnVecs; ++j) {
      if (lane + 32 * j < nv) {
#pragma unroll
        for (int e = 0; e < V; ++e) sum += static_cast<float>(v[j].v[e]);
      }
    }
    const float mean = warp_sum(sum) / static_cast<float>(d);
    float squares = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxLnVecs; ++j) {
      if (lane + 32 * j < nv) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float c = static_cast<float>(v[j].v[e]) - mean;
          squares += c * c;
        }
      }
    }
    const float rstd = rsqrtf(warp_sum(squares) / static_cast<float>(d) + 1e-5f);
    if (mine < nv) {
      Pack16<T> out = v[0];
#pragma unroll
      for (int j = 1; j < kMaxLnVecs; ++j) out = j == warp ? v[j] : out;  // v[warp] without local memory
#pragma unroll
      for (int j = 0; j < V / 4; ++j) {
        const float gs[4] = {g[j].x, g[j].y, g[j].z, g[j].w}, bs[4] = {b[j].x, b[j].y, b[j].z, b[j].w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          out.v[j * 4 + e] = static_cast<T>((static_cast<float>(out.v[j * 4 + e]) - mean) * rstd * gs[e] + bs[e]);
        }
      }
      reinterpret_cast<Pack16<T>*>(h)[mine] = out;
    }
  }
  __syncthreads();
}

// A LayerNorm's weight and bias [d] fp32 (global, 16-byte aligned) -> ln_s [2, d] shared, by asynchronous copies
// that the next grid barrier waits for: issued before the barrier that precedes the phase using them.
__device__ void stage_layer_norm(const float* w, const float* b, float* ln_s, int d) {
  for (int i = threadIdx.x; i < d / 4; i += kThreads) {
    async_copy16(ln_s + 4 * i, w + 4 * i);
    async_copy16(ln_s + d + 4 * i, b + 4 * i);
  }
  async_copy_commit();
}

// src [n] (written by other blocks) -> h [n]
template <typename T>
__device__ void copy_input(const T* src, T* h, int n) {
  constexpr int V = kPack16<T>;
  for (int i = threadIdx.x; i < n / V; i += kThreads) reinterpret_cast<Pack16<T>*>(h)[i] = load_cg(src, i);
  __syncthreads();
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

// ---- the kernel -----------------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    decoder_step_persistent_kernel(const __grid_constant__ PersistentPlan p,
                          const int64_t* __restrict__ table,     // [n_layer, kPersistentFields]
                          T* x,                                  // [d] the residual stream, in place
                          const int64_t* __restrict__ position)  // [1]
{
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t full[kWarps][kSlots];
  __shared__ float red[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, d = p.d;
  T* ring = reinterpret_cast<T*>(smem) + warp * kSlots * p.slot_elems;  // [kSlots, slot_elems]
  T* h = reinterpret_cast<T*>(smem + p.h_off);                          // [4d] a phase's input
  T* stage = reinterpret_cast<T*>(smem + p.kv_off);                     // [2, chunk_len, 64]
  float* partial = reinterpret_cast<float*>(smem + p.part_off);         // [max_items]
  float* scores = reinterpret_cast<float*>(smem + p.scores_off);        // [max(n_ctx, chunk_len)]
  float* vsum = reinterpret_cast<float*>(smem + p.vsum_off);            // [kWarps, 64]
  float* qs = reinterpret_cast<float*>(smem + p.q_off);                 // [64]
  float* ln_s = reinterpret_cast<float*>(smem + p.ln_off);              // [2, d] the next LayerNorm's parameters
  T* qkv = static_cast<T*>(p.qkv);
  T* attn = static_cast<T*>(p.attn);
  T* cq = static_cast<T*>(p.cq);
  T* hidden = static_cast<T*>(p.hidden);

  // every warp requests its first items before anything else
  Stream s{0, kQkv, warp};
  WarpRing wr{full[warp], 0};
  if (lane == 0) {
    for (int j = 0; j < kSlots; ++j) mbarrier_init(&full[warp][j], 1);
    skip_empty(p, s, warp);
    for (int j = 0; j < kSlots && stream_live(p, s); ++j) {
      request_item(p, table, s, ring + j * p.slot_elems, &full[warp][j], warp);
    }
  }
  const int64_t pos = *position;
  stage_layer_norm(field<float>(table, kPAttnLnW), field<float>(table, kPAttnLnB), ln_s, d);  // layer 0's first
  async_copy_wait_group<0>();
  __syncthreads();  // the barriers' initialization, the first LayerNorm's parameters
  if (threadIdx.x == 0) trace_time(p, 0, 1);
  unsigned int target = 0;
  const float* ln_w = ln_s;
  const float* ln_b = ln_s + d;
  auto residual_sum = [](float residual, float y) { return static_cast<T>(residual + static_cast<float>(static_cast<T>(y))); };
  // one linear phase: the epilogue's parameters requested, input() into h, this warp's items multiplied, then the
  // block's rows finished by store(n, sum + bias, residual)
  auto linear = [&](int kind, const int64_t* layer, auto input, auto store) {
    const RowParams rp = row_params(p, kind, layer, x);
    input();
    trace_phase(p, target, 2);
    multiply_items(p, kind, h, ring, wr, s, table, partial);
    finish_rows(p, kind, partial, rp, target, store);
  };
  auto normalized = [&] { layer_norm_input(x, ln_w, ln_b, h, d); };
  auto add_residual = [&](int n, float y, float r) { x[n] = residual_sum(r, y); };

  for (int l = 0; l < p.n_layer; ++l) {
    const int64_t* layer = table + static_cast<int64_t>(l) * kPersistentFields;
    // 1. LayerNorm, q/k/v
    linear(kQkv, layer, normalized, [&](int n, float y, float) { qkv[n] = static_cast<T>(y); });
    prefetch_self_cache<T>(p, layer, pos);
    grid_barrier(p, target);
    // 2. self-attention
    self_attention_phase<T>(p, layer, pos, qkv, attn, qs, scores, vsum, red);
    grid_barrier(p, target);
    // 3. out + residual; then the cross LayerNorm's parameters
    linear(kOut, layer, [&] { copy_input(attn, h, d); }, add_residual);
    stage_layer_norm(field<float>(layer, kPCrossLnW), field<float>(layer, kPCrossLnB), ln_s, d);
    grid_barrier(p, target);
    // 4. LayerNorm, cross query; then this block's cross keys and values into shared memory
    linear(kCrossQ, layer, normalized, [&](int n, float y, float) { cq[n] = static_cast<T>(y); });
    stage_cross_chunk<T>(p, layer, stage);
    grid_barrier(p, target);
    // 5. cross-attention, one chunk of one head per block
    cross_attention_phase<T>(p, cq, stage, qs, scores, vsum, red);
    grid_barrier(p, target);
    // 6. the chunks merged, cross out + residual; then the MLP LayerNorm's parameters
    linear(kCrossOut, layer, [&] { merge_cross_input(p, p.cross_part, h, scores); }, add_residual);
    stage_layer_norm(field<float>(layer, kPMlpLnW), field<float>(layer, kPMlpLnB), ln_s, d);
    grid_barrier(p, target);
    // 7. LayerNorm, mlp.0, GELU
    linear(kMlp0, layer, normalized, [&](int n, float y, float) {
      hidden[n] = static_cast<T>(gelu(static_cast<float>(static_cast<T>(y))));
    });
    grid_barrier(p, target);
    // 8. mlp.2 + residual; then the next layer's first LayerNorm parameters
    linear(kMlp2, layer, [&] { copy_input(hidden, h, 4 * d); }, add_residual);
    if (l + 1 < p.n_layer) {
      const int64_t* next = layer + kPersistentFields;
      stage_layer_norm(field<float>(next, kPAttnLnW), field<float>(next, kPAttnLnB), ln_s, d);
      grid_barrier(p, target);
    }
  }
  // 9. the final LayerNorm and the vocabulary: logits in fp32 of the products rounded to T (whisper's
  // (x @ W.T).float() in the activation dtype)
  stage_layer_norm(p.final_ln_w, p.final_ln_b, ln_s, d);
  grid_barrier(p, target);
  linear(kVocab, table, normalized, [&](int n, float y, float) { p.logits[n] = static_cast<float>(static_cast<T>(y)); });

  // the last block out resets the counters for the next launch (every block has passed every barrier)
  __syncthreads();
  if (threadIdx.x == 0) {
    trace_time(p, 8 * p.n_layer + 1, 0);
    __threadfence();
    if (atomicAdd(p.sync + 1, 1u) == gridDim.x - 1) {
      p.sync[0] = 0;
      p.sync[1] = 0;
      __threadfence();
    }
  }
}

// ---- host -----------------------------------------------------------------------------------------------------

int round_up(int v, int to) { return (v + to - 1) / to * to; }

struct WorkspaceLayout {
  int64_t qkv, attn, cq, hidden, part, trace, bytes;
};

// FASTWHISPER_PERSISTENT_TRACE=1: every launch records each block's barrier arrivals and departures in its
// workspace (DecoderSession.persistent_trace). FASTWHISPER_PERSISTENT_SLEEP=<ns>: a pause between two polls of the
// barrier counter. Both read once per process; for benchmarks/persistent_trace.py.
bool tracing() {
  static const bool on = env_choice("FASTWHISPER_PERSISTENT_TRACE", {"0", "1"}, "0") == "1";
  return on;
}
int barrier_sleep_ns() {
  static const int ns = std::stoi(env_choice("FASTWHISPER_PERSISTENT_SLEEP", {"0", "20", "50", "100", "200"}, "0"));
  return ns;
}

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

int cross_chunks(const PersistentShape& s) { return std::max(1, sm_count() / static_cast<int>(s.n_head)); }

WorkspaceLayout workspace_layout(const PersistentShape& s) {
  const int64_t e = at::elementSize(s.dtype);
  auto up = [](int64_t v) { return (v + 127) / 128 * 128; };
  WorkspaceLayout w{};
  w.qkv = 128;  // [0, 128): the two counters
  w.attn = w.qkv + up(3 * s.d * e);
  w.cq = w.attn + up(s.d * e);
  w.hidden = w.cq + up(s.d * e);
  w.part = w.hidden + up(4 * s.d * e);
  w.trace = w.part + up(s.n_head * cross_chunks(s) * kPartWords * 4);
  w.bytes = w.trace + (tracing() ? (8 * s.n_layer + 2) * sm_count() * 4 * 8 : 0);
  return w;
}

// The plan without workspace pointers; nullopt-like: smem 0 where a kind cannot be cut.
PersistentPlan make_plan(const PersistentShape& s) {
  PersistentPlan p{};
  p.n_layer = static_cast<int>(s.n_layer);
  p.d = static_cast<int>(s.d);
  p.n_head = static_cast<int>(s.n_head);
  p.n_ctx = static_cast<int>(s.n_text_ctx);
  p.n_audio_ctx = static_cast<int>(s.n_audio_ctx);
  p.n_vocab = static_cast<int>(s.n_vocab);
  p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  const int sms = sm_count(), e = static_cast<int>(at::elementSize(s.dtype)), vec = 16 / e;
  p.slot_elems = 0;
  for (int kind = 0; kind < kKinds; ++kind) {
    const int n = kind == kQkv ? 3 * p.d : kind == kMlp0 ? 4 * p.d : kind == kVocab ? p.n_vocab : p.d;
    const int k = kind == kMlp2 ? 4 * p.d : p.d;
    const int rows = (n + sms - 1) / sms;
    const int vecs = k / vec;
    // the fewest slices that fit a slot, then more while the warps are not all busy and slices stay wide
    int ks = 1;
    while (ks <= vecs && (vecs % ks != 0 || vecs / ks * vec > kMaxItemElems)) ++ks;
    for (int next = ks + 1; rows * ks < kWarps && next <= vecs; ++next) {
      if (vecs % next != 0) continue;
      if (vecs / next * vec < kMinItemElems) break;
      ks = next;
    }
    if (ks > vecs || rows > kThreads || rows * ks > kMaxItems) return PersistentPlan{};
    p.max_items = std::max(p.max_items, rows * ks);
    p.rows_per_block[kind] = rows;
    p.splits[kind] = ks;
    p.slot_elems = std::max(p.slot_elems, k / ks);
  }
  p.chunks = cross_chunks(s);
  p.chunk_len = (p.n_audio_ctx + p.chunks - 1) / p.chunks;
  int off = kWarps * kSlots * p.slot_elems * e;
  p.h_off = off = round_up(off, 128);
  off += 4 * p.d * e;
  p.kv_off = off = round_up(off, 128);
  off += 2 * p.chunk_len * kHeadDim * e;
  p.part_off = off = round_up(off, 128);
  off += p.max_items * 4;
  p.scores_off = off;
  off += std::max({p.n_ctx, p.chunk_len, 2 * p.n_head * p.chunks}) * 4;  // also the merge's weights
  p.vsum_off = off = round_up(off, 16);
  off += kWarps * kHeadDim * 4;
  p.q_off = off;
  off += kHeadDim * 4;
  p.ln_off = off = round_up(off, 16);
  off += 2 * p.d * 4;
  p.smem = off;
  return p;
}

size_t static_smem() { return sizeof(uint64_t) * kWarps * kSlots + 32 * sizeof(float); }

// One block per SM, all co-resident: a cooperative launch (also inside a CUDA graph), without PDL, so that the
// kernel starts after every earlier kernel of the step has finished and the counters are its own.
template <typename T>
void launch_persistent(const PersistentPlan& p, const at::Tensor& layers, T* x, const at::Tensor& position) {
  auto kernel = decoder_step_persistent_kernel<T>;
  static const size_t allowed = allow_all_dynamic_smem(kernel);  // once per instantiation
  static const int blocks_per_sm = [&] {
    int n = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, static_cast<size_t>(allowed)));
    return n;
  }();
  TORCH_CHECK(static_cast<size_t>(p.smem) <= allowed && blocks_per_sm >= 1, "fastwhisper: the persistent decoder "
              "kernel needs ", p.smem, " bytes of shared memory and one block per SM; this GPU allows ", allowed);
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned int>(sm_count()));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = static_cast<size_t>(p.smem);
  config.stream = at::cuda::getCurrentCUDAStream();
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeCooperative;
  attribute[0].val.cooperative = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, p, layers.data_ptr<int64_t>(), x, position.data_ptr<int64_t>()));
}

}  // namespace

bool persistent_step_fits(const PersistentShape& s) {
  if (s.dtype != at::kHalf && s.dtype != at::kBFloat16) return false;
  if (s.n_layer < 1 || s.n_head < 1 || s.d != s.n_head * kHeadDim || s.d > kMaxLnVecs * 32 * 8) return false;
  if (s.n_text_ctx < 1 || s.n_audio_ctx < 1 || s.n_vocab < 1) return false;
  const auto* props = at::cuda::getCurrentDeviceProperties();
  if (props->major < 9) return false;
  int cooperative = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, at::cuda::current_device()));
  if (cooperative == 0 || s.n_head > props->multiProcessorCount) return false;
  const PersistentPlan p = make_plan(s);
  return p.smem > 0 && static_cast<size_t>(p.smem) + static_smem() <= props->sharedMemPerBlockOptin;
}

at::Tensor persistent_workspace(const PersistentShape& s, const at::Device& device) {
  return at::zeros({workspace_layout(s).bytes}, at::TensorOptions().dtype(at::kByte).device(device));
}

at::Tensor persistent_trace(const PersistentShape& s, const at::Tensor& workspace) {
  const WorkspaceLayout w = workspace_layout(s);
  if (!tracing() || !workspace.defined()) return at::Tensor();
  return workspace.narrow(0, w.trace, w.bytes - w.trace).view(at::kLong).view({8 * s.n_layer + 2, sm_count(), 4}).clone();
}

at::Tensor decoder_step_persistent(const PersistentShape& s, const at::Tensor& layers, at::Tensor& x,
                                   const at::Tensor& position, at::Tensor& workspace, const at::Tensor& token_embedding,
                                   const at::Tensor& ln_weight, const at::Tensor& ln_bias) {
  TORCH_CHECK(persistent_step_fits(s), "fastwhisper: the persistent decoder kernel does not take this shape");
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == s.dtype && x.numel() == s.d && x.is_contiguous(),
              "fastwhisper: the persistent decoder kernel takes x [1, ", s.d, "] contiguous in ", s.dtype);
  TORCH_CHECK(layers.is_cuda() && layers.scalar_type() == at::kLong && layers.numel() == s.n_layer * kPersistentFields,
              "fastwhisper: the persistent decoder kernel's layer table must be int64 [", s.n_layer * kPersistentFields,
              "] on the GPU");
  TORCH_CHECK(token_embedding.is_cuda() && token_embedding.scalar_type() == s.dtype && token_embedding.is_contiguous() &&
                  token_embedding.sizes() == at::IntArrayRef({s.n_vocab, s.d}),
              "fastwhisper: the persistent decoder kernel takes the token embedding [", s.n_vocab, ", ", s.d,
              "] contiguous in ", s.dtype);
  for (const at::Tensor* t : {&ln_weight, &ln_bias}) {
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == s.d,
                "fastwhisper: the persistent decoder kernel takes the final LayerNorm's parameters as float32 [", s.d, "]");
  }
  const WorkspaceLayout w = workspace_layout(s);
  TORCH_CHECK(workspace.is_cuda() && workspace.numel() >= w.bytes, "fastwhisper: persistent workspace too small");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor logits = at::empty({1, s.n_vocab}, x.options().dtype(at::kFloat));
  PersistentPlan p = make_plan(s);
  auto* base = static_cast<unsigned char*>(workspace.data_ptr());
  p.sync = reinterpret_cast<unsigned int*>(base);
  p.qkv = base + w.qkv;
  p.attn = base + w.attn;
  p.cq = base + w.cq;
  p.hidden = base + w.hidden;
  p.cross_part = reinterpret_cast<float*>(base + w.part);
  p.vocab_w = token_embedding.data_ptr();
  p.final_ln_w = ln_weight.data_ptr<float>();
  p.final_ln_b = ln_bias.data_ptr<float>();
  p.logits = logits.data_ptr<float>();
  p.trace = tracing() ? reinterpret_cast<unsigned long long*>(base + w.trace) : nullptr;
  p.barrier_sleep_ns = barrier_sleep_ns();
  AT_DISPATCH_SWITCH(s.dtype, "fastwhisper_decoder_step_persistent",
                     AT_DISPATCH_CASE(at::ScalarType::Half, [&] {
                       launch_persistent<scalar_t>(p, layers, x.data_ptr<scalar_t>(), position);
                     }) AT_DISPATCH_CASE(at::ScalarType::BFloat16, [&] {
                       launch_persistent<scalar_t>(p, layers, x.data_ptr<scalar_t>(), position);
                     }));
  return logits;
}

}  // namespace fastwhisper::cuda
