// The persistent decoder kernel's linear phases (decoder_persistent.cu): each warp's stream of weight slices
// through its ring, the multiply, the epilogue's parameters and stores, and the phase inputs.
#pragma once
#include "cuda/bulk_copy.cuh"
#include "cuda/decoder_persistent_plan.cuh"

namespace fastwhisper::cuda::persistent {

// ---- the weight streams -----------------------------------------------------------------------------------

// The next item a warp requests: layer, kind, item index in the block. The layers' kinds in order, then (layer
// n_layer) the vocabulary; past that (layer > n_layer) none is left.
struct Stream {
  int layer, kind, i;
};

__device__ __forceinline__ bool stream_live(const PersistentPlan& p, const Stream& s) { return s.layer <= p.n_layer; }

// Moves s to the first item at or after it that exists (this warp takes items warp, warp + kWarps, ...).
__device__ inline void skip_empty(const PersistentPlan& p, Stream& s, int warp) {
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
// lane + 32 w. ln_w, ln_b [d] fp32 in shared memory (stage_layer_norm_async before the barrier).
template <typename T>
__device__ void layer_norm_input(const T* x, const float* ln_w, const float* ln_b, T* h, int d) {
  constexpr int V = kPack16<T>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nv = d / V;
  if (warp * 32 < nv) {
    const int mine = lane + 32 * warp;
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
      for (int j = 0; j < V / 4; ++j) {  // the parameters from shared memory, where the barrier left them
        const float4 g = reinterpret_cast<const float4*>(ln_w)[mine * (V / 4) + j];
        const float4 b = reinterpret_cast<const float4*>(ln_b)[mine * (V / 4) + j];
        const float gs[4] = {g.x, g.y, g.z, g.w}, bs[4] = {b.x, b.y, b.z, b.w};
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
__device__ inline void stage_layer_norm_async(const float* w, const float* b, float* ln_s, int d) {
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

}  // namespace fastwhisper::cuda::persistent
