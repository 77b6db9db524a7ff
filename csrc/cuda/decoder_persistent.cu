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
#include "cuda/decoder_persistent_attention.cuh"
#include "cuda/decoder_persistent_linear.cuh"
#include "cuda/decoder_persistent_plan.cuh"
#include "cuda/device_utils.cuh"
#include "env_choice.h"
#include "gelu.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

using namespace persistent;  // NOLINT: the kernel's own helpers

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
  stage_layer_norm_async(field<float>(table, kPAttnLnW), field<float>(table, kPAttnLnB), ln_s, d);  // layer 0's first
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
    stage_layer_norm_async(field<float>(layer, kPCrossLnW), field<float>(layer, kPCrossLnB), ln_s, d);
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
    stage_layer_norm_async(field<float>(layer, kPMlpLnW), field<float>(layer, kPMlpLnB), ln_s, d);
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
      stage_layer_norm_async(field<float>(next, kPAttnLnW), field<float>(next, kPAttnLnB), ln_s, d);
      grid_barrier(p, target);
    }
  }
  // 9. the final LayerNorm and the vocabulary: logits in fp32 of the products rounded to T (whisper's
  // (x @ W.T).float() in the activation dtype)
  stage_layer_norm_async(p.final_ln_w, p.final_ln_b, ln_s, d);
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
// workspace (DecoderSession.persistent_trace), read once per process; for benchmarks/persistent_trace.py.
bool tracing() {
  static const bool on = env_choice("FASTWHISPER_PERSISTENT_TRACE", {"0", "1"}, "0") == "1";
  return on;
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
  AT_DISPATCH_SWITCH(s.dtype, "fastwhisper_decoder_step_persistent",
                     AT_DISPATCH_CASE(at::ScalarType::Half, [&] {
                       launch_persistent<scalar_t>(p, layers, x.data_ptr<scalar_t>(), position);
                     }) AT_DISPATCH_CASE(at::ScalarType::BFloat16, [&] {
                       launch_persistent<scalar_t>(p, layers, x.data_ptr<scalar_t>(), position);
                     }));
  return logits;
}

}  // namespace fastwhisper::cuda
