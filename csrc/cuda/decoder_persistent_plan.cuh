// The persistent decoder kernel (decoder_persistent.cu): its constants, its plan (how a call is cut, where its
// workspace and shared memory lie), the plan's per-block arithmetic, the loads of data other blocks wrote, the
// trace and the grid-wide barrier.
#pragma once
#include <cstdint>

#include "cuda/async_copy.cuh"
#include "cuda/decoder_persistent.h"
#include "cuda/device_utils.cuh"

namespace fastwhisper::cuda::persistent {

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
    while (true) {  // a pause between polls gained nothing (h200-2026-12-02-persistent-trace-sleep100-4408a94.md)
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(p.sync) : "memory");
      if (seen >= target) break;
    }
    __threadfence();
    trace_time(p, index, 1);
  }
  async_copy_wait_group<0>();  // this thread's copies issued before the barrier (LayerNorm parameters, cross K/V)
  __syncthreads();
}

}  // namespace fastwhisper::cuda::persistent
