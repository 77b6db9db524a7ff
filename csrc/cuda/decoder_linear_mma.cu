// CUDA decoder_linear for 2 to 16 fp16/bf16 input rows on tensor cores (beam search, batched windows; CPU
// reference: decoder_linear in cpu/decoder_step.cpp). The one-row kernel (decoder_linear.cu) multiplies each
// weight vector with every input row on the CUDA cores, which with 5-8 rows turns compute bound; cuBLASLt
// instead needs a LayerNorm kernel, one GEMM per weight, a concatenation and a GELU pass per call, each a
// launch without PDL (h200-2026-12-02-step-timeline-batch8-f62e4b5.md: about 60 us of a large-v3 layer's 95).
//
// The weights' rows (the call's output columns) go in octets of 8: one mma.m16n8k16 multiplies 16 features of
// an octet (its n = 8 columns) with the same 16 features of the input rows (m = 16: input rows 0-15, zero
// past the call's rows). Octet o belongs to block o % blocks (one block per SM, as many as there are octets), so every SM
// streams, and to its warp o / blocks % streams there: each of those warps streams its octets, piece by piece
// along K, through its own ring of two shared-memory slots filled by the bulk copy engine (one copy for an octet's
// whole rows, else one per row), requested before the kernel waits for its producer (PDL), like the one-row
// kernel. The input rows, with the optional LayerNorm, are staged in shared memory by the whole block, which
// has a warp per input row for that even where fewer warps stream.
//
// Fragments without ldmatrix: a dot product does not care in which order its features are summed, so each
// thread loads its 16 features of a 64-feature chunk as two 16-byte vectors (features 8q..8q+7 and
// 32+8q..32+8q+7 of the chunk, q = lane % 4) from the weight row and from the input rows of its fragment
// (row g = lane / 4 of both, and input row g + 8), and hands them to four mma k-steps in the same order for
// both operands. Threads
// of odd g load their two vectors in the other order, so that the 8 lanes of a quarter warp (rows g, g+1)
// read 128 distinct bytes: no bank conflicts when rows are 128-byte multiples apart.
//
// Epilogue at an octet's last piece: lane (g, q) holds output rows g and g + 8, columns 8o + 2q + {0, 1}, and
// applies bias, GELU and the residual with the roundings of the one-row kernel; its fp32 sums come in
// another order, so results may differ from it in the last bit of the activation dtype.
#include "cuda/decoder_linear_mma.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "cuda/bulk_copy.cuh"
#include "cuda/device_utils.cuh"
#include "cuda/layer_norm_rows.cuh"
#include "env_choice.h"
#include "gelu.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kOctet = 8;          // weight rows per mma (its n)
constexpr int kMaxRows = 16;       // input rows: the mma's m
constexpr int kChunk = 64;         // features per two 16-byte loads of each lane: four mma k-steps
constexpr int kSlots = 2;          // ring slots per warp
constexpr int kMaxWarps = 16;
constexpr int64_t kBlockSmemBudget = 108 * 1024;  // two blocks (this kernel and the next) per SM

struct MmaPlan {
  int warps;            // per block: at least one per input row (the LayerNorm), and the streaming warps
  int streams;          // of them, warps 0 .. streams-1 stream octets
  int k_pieces;         // pieces per octet along K
  int64_t octets;       // ceil(N / 8)
  int64_t total_streams;  // blocks * streams: octet o goes to block o % blocks, warp o / blocks % streams
  int64_t piece_k;      // features per piece, a multiple of kChunk
  unsigned int blocks;
  size_t ln_offset;     // shared bytes: input rows [0, ln_offset), LayerNorm weight and bias, then the rings
  size_t ring_offset;
  size_t smem;
};

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// The cut of one call within `budget` bytes of shared memory per block; k_pieces == 0 when it does not fit.
MmaPlan plan_linear_mma(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm, size_t budget) {
  MmaPlan p{};
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  p.octets = ceil_div(N, kOctet);
  p.blocks = static_cast<unsigned int>(std::min(sms, p.octets));
  p.streams = static_cast<int>(std::clamp<int64_t>(ceil_div(p.octets, p.blocks), 1, kMaxWarps));
  p.warps = static_cast<int>(std::max<int64_t>(p.streams, rows));
  p.total_streams = static_cast<int64_t>(p.blocks) * p.streams;
  p.ln_offset = round_up(static_cast<size_t>(rows * K * elem), 128);
  p.ring_offset = round_up(p.ln_offset + (layer_norm ? static_cast<size_t>(2 * K * 4) : 0), 128);
  if (budget <= p.ring_offset) return p;
  const int64_t slot_bytes = static_cast<int64_t>(budget - p.ring_offset) / (p.streams * kSlots);
  const int64_t max_chunks = slot_bytes / (kOctet * kChunk * elem);  // chunks per piece that fit a slot
  const int64_t chunks = K / kChunk;
  if (max_chunks < 1) return p;
  int64_t pieces = ceil_div(chunks, max_chunks);
  while (chunks % pieces != 0) ++pieces;  // ends at chunks at the latest
  p.k_pieces = static_cast<int>(pieces);
  p.piece_k = K / pieces;
  p.smem = p.ring_offset + static_cast<size_t>(p.streams * kSlots * kOctet * p.piece_k * elem);
  return p;
}

size_t dynamic_smem_max() {
  return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin - sizeof(uint64_t) * kMaxWarps * kSlots;
}

// Within two blocks per SM (this kernel's and the next one's, see kBlockSmemBudget), unless that leaves a
// stream less than half of an octet's features in flight (the input rows take most of it: large-v3's mlp2
// with 8 rows of 5120 features, 80 KB, had 2 x 5 KB slots per stream and took 34 us against cuBLASLt's 9;
// h200-2026-12-02-step-timeline-batch8-mma-*.md) or does not fit at all: then within one block per SM.
MmaPlan plan_for(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm) {
  MmaPlan p = plan_linear_mma(rows, K, N, elem, layer_norm, kBlockSmemBudget);
  if (p.k_pieces > 0 && 2 * kSlots * p.piece_k >= K) return p;
  const MmaPlan whole = plan_linear_mma(rows, K, N, elem, layer_norm, dynamic_smem_max());
  return whole.k_pieces > 0 ? whole : p;
}

// Weight rows [lo, hi) (hi - lo <= 8), features [k0, k0 + piece_k) -> dst ([hi - lo, piece_k]), tracked by bar:
// one bulk copy per segment for whole rows, else one per row. Called by one thread.
template <typename T>
__device__ void request_octet_piece(const Segments<T>& seg, int64_t lo, int64_t hi, int64_t k0, int64_t piece_k,
                                    int64_t K, T* dst, uint64_t* bar) {
  if (piece_k == K) return request_rows(seg, lo, hi, K, dst, bar);
  mbarrier_arrive_expect_tx(bar, static_cast<uint32_t>((hi - lo) * piece_k * sizeof(T)));
  for (int64_t n = lo; n < hi; ++n) {
    const int i = seg.find(n);
    bulk_copy_to_shared(dst + (n - lo) * piece_k, seg.weight_of(i) + (n - seg.begin(i)) * K + k0,
                        static_cast<uint32_t>(piece_k * sizeof(T)), bar);
  }
}

// c[0..3] += A (16 x 16 input rows) * B (16 x 8 weight columns), fp32 accumulators: c[0..1] row g, c[2..3] row
// g + 8, columns 2q, 2q + 1. a_lo / a_hi: this thread's features {2q, 2q+1} / {2q+8, 2q+9} of row g, a8_lo /
// a8_hi: the same of row g + 8; b_lo / b_hi: the same features of column g. T: c10::Half or c10::BFloat16.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], uint32_t a_lo, uint32_t a8_lo, uint32_t a_hi,
                                             uint32_t a8_hi, uint32_t b_lo, uint32_t b_hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, c10::Half>) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a_lo), "r"(a8_lo), "r"(a_hi), "r"(a8_hi), "r"(b_lo), "r"(b_hi));
  } else {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a_lo), "r"(a8_lo), "r"(a_hi), "r"(a8_hi), "r"(b_lo), "r"(b_hi));
  }
#endif
}

// This thread's 16 features of a 64-feature chunk at p: lo = p[8q .. 8q+7], hi = p[32+8q .. 32+8q+7]; the
// thread loads them in the order `swap` says (bank conflicts, see the file comment).
template <typename T>
__device__ __forceinline__ void load_chunk(const T* p, int q, bool swap, uint4& lo, uint4& hi) {
  const uint4 first = *reinterpret_cast<const uint4*>(p + (swap ? 32 : 0) + q * 8);
  const uint4 second = *reinterpret_cast<const uint4*>(p + (swap ? 0 : 32) + q * 8);
  lo = swap ? second : first;
  hi = swap ? first : second;
}

template <typename T>
__global__ void __launch_bounds__(kMaxWarps * 32)
    decoder_linear_mma_kernel(const T* __restrict__ x,           // [rows, K]
                              const float* __restrict__ ln_w,    // [K] or nullptr (no LayerNorm)
                              const float* __restrict__ ln_b,    // [K]
                              const Segments<T> seg,             // weights [N_i, K], biases [N_i]
                              const T* __restrict__ residual,    // [rows, N] or nullptr
                              T* __restrict__ out,               // [rows, N] (out_float == nullptr)
                              float* __restrict__ out_float,     // [rows, N] or nullptr
                              int rows, int64_t K, int64_t N, const MmaPlan plan, bool apply_gelu) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full[kMaxWarps][kSlots];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, q = lane % 4;  // fragment row (input row, weight row of the octet), thread in group
  T* h = reinterpret_cast<T*>(smem_raw);                                    // [rows, K] (normalized) input rows
  float* ln_s = reinterpret_cast<float*>(smem_raw + plan.ln_offset);        // [2, K] LayerNorm weight, bias
  const int64_t slot_elems = kOctet * plan.piece_k;
  T* ring = reinterpret_cast<T*>(smem_raw + plan.ring_offset) + warp * kSlots * slot_elems;  // [kSlots, 8, piece_k]
  // octets blockIdx.x + blocks * (warp + streams * i), i = 0, 1, ...: spread over every SM first
  const int64_t first_octet = blockIdx.x + static_cast<int64_t>(plan.blocks) * warp;
  const int64_t n_octets = warp < plan.streams && first_octet < plan.octets
                               ? (plan.octets - 1 - first_octet) / plan.total_streams + 1
                               : 0;
  const int n_pieces = static_cast<int>(n_octets * plan.k_pieces);
  // piece j: octet octet_of(j), features [(j % k_pieces) * piece_k, + piece_k), in slot j % kSlots
  auto octet_of = [&](int j) { return first_octet + static_cast<int64_t>(j / plan.k_pieces) * plan.total_streams; };
  auto slot = [&](int j) { return ring + (j % kSlots) * slot_elems; };
  auto request = [&](int j) {
    const int64_t lo = octet_of(j) * kOctet;
    request_octet_piece(seg, lo, min(N, lo + kOctet), (j % plan.k_pieces) * plan.piece_k, plan.piece_k, K, slot(j),
                        &full[warp][j % kSlots]);
  };
  // the biases of this lane's two output columns of octet o
  float bias[2] = {0.f, 0.f};
  auto load_bias = [&](int64_t o) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t n = o * kOctet + 2 * q + e;
      bias[e] = n < N ? seg.bias_at(n) : 0.f;
    }
  };

  // 1. the first pieces, the first octet's biases and the LayerNorm parameters, before the input exists
  if (kHasBulkCopy && lane == 0 && n_pieces > 0) {
    for (int s = 0; s < kSlots; ++s) mbarrier_init(&full[warp][s], 1);
    for (int j = 0; j < min(kSlots, n_pieces); ++j) request(j);
  }
  allow_dependents();
  if (n_pieces > 0) load_bias(first_octet);
  if (ln_w != nullptr) stage_layer_norm(ln_w, ln_b, ln_s, K);
  wait_for_producers();

  // 2. input rows (normalized) into shared memory; the closing barrier also publishes the barriers' init
  load_input_rows<T>(x, ln_w != nullptr ? ln_s : nullptr, ln_s + K, h, rows, K, K);

  // 3. the warp's pieces in order; acc (two chains) holds the octet's sums over its pieces so far
  const bool row_used = g < rows, row8_used = g + 8 < rows;  // row8_used: the same for every lane of a call
  const bool swap = (g & 1) != 0;
  const T* x_row = h + static_cast<int64_t>(g) * K;
  const T* x_row8 = x_row + 8 * K;
  float acc[2][4] = {};
  for (int j = 0; j < n_pieces; ++j) {
    const int piece = j % plan.k_pieces;
    const int64_t o = octet_of(j);
    if (piece == 0 && j > 0) load_bias(o);
    if (kHasBulkCopy) mbarrier_wait(&full[warp][j % kSlots], (j / kSlots) & 1);
    const T* w_row = slot(j) + static_cast<int64_t>(g) * plan.piece_k;  // weight row 8o + g of the piece
    const T* xp = x_row + piece * plan.piece_k;
    const T* xp8 = x_row8 + piece * plan.piece_k;
#pragma unroll 2
    for (int64_t c = 0; c < plan.piece_k; c += kChunk) {
      uint4 w_lo, w_hi, x_lo = {0, 0, 0, 0}, x_hi = {0, 0, 0, 0}, y_lo = {0, 0, 0, 0}, y_hi = {0, 0, 0, 0};
      load_chunk(w_row + c, q, swap, w_lo, w_hi);
      if (row_used) load_chunk(xp + c, q, swap, x_lo, x_hi);
      if (row8_used) load_chunk(xp8 + c, q, swap, y_lo, y_hi);
      mma_m16n8k16<T>(acc[0], x_lo.x, y_lo.x, x_lo.y, y_lo.y, w_lo.x, w_lo.y);
      mma_m16n8k16<T>(acc[1], x_lo.z, y_lo.z, x_lo.w, y_lo.w, w_lo.z, w_lo.w);
      mma_m16n8k16<T>(acc[0], x_hi.x, y_hi.x, x_hi.y, y_hi.y, w_hi.x, w_hi.y);
      mma_m16n8k16<T>(acc[1], x_hi.z, y_hi.z, x_hi.w, y_hi.w, w_hi.z, w_hi.w);
    }
    __syncwarp();  // every lane is done with the slot
    if (kHasBulkCopy && lane == 0 && j + kSlots < n_pieces) {
      fence_shared_for_bulk_copy();
      request(j + kSlots);
    }
    if (piece + 1 < plan.k_pieces) continue;
    // the octet's last piece: this lane finishes outputs (g, 8o + 2q + e) and (g + 8, 8o + 2q + e)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t n = o * kOctet + 2 * q + e;
      if (n >= N) continue;
      if (row_used) store_linear_output(acc[0][e] + acc[1][e], bias[e], apply_gelu, residual, out, out_float, g, n, N);
      if (row8_used) {
        store_linear_output(acc[0][2 + e] + acc[1][2 + e], bias[e], apply_gelu, residual, out, out_float, g + 8, n, N);
      }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[0][e] = acc[1][e] = 0.f;
  }
}


// ---- The streaming kernel (FASTWHISPER_MMA_KERNEL=stream, the default) ----
// The ring kernel above gives each octet to one warp, which walks its K features alone through two ring slots:
// with 16 rows of large-v3's qkv, 4 of a block's 16 warps did all the multiplying, a chain of 20 chunks each,
// and the block took 12.2 us against cuBLAS's 6.0 (h200-2026-12-02-step-kernels-session21.md; Nsight Compute
// put most warp time in that loop). Here every warp multiplies: a block's octets are cut along K into items of
// slice_units units (32 features each), items go to the block's 16 warps in turn, and each warp streams its
// items' weights straight from global memory into registers, kAhead units ahead of the mma. Before the
// producer wait, the block asks L2 for its first octets' weights (an L2 prefetch, no shared memory) and each
// warp loads its first kAhead units. Partial sums of split octets meet in shared memory (in slice order, so
// the result does not depend on timing), and one warp per octet applies the epilogue.
//
// Fragments: lane (g, q) holds features 8q .. 8q+7 of each 32-feature unit, of weight row 8o + g and of input
// rows g and g + 8 (one 16-byte vector each), and gives them to two mma k-steps in the same order for both
// operands. Input rows sit 64 bytes (mod 128) apart in shared memory, so the 8 lanes of a quarter warp (rows g,
// g + 1) read distinct banks. Input rows past the call's (fragment rows g >= rows) read the last row again:
// their outputs are never stored.
constexpr int kUnit = 32;          // features per unit: one 16-byte vector per lane and operand row, two k-steps
constexpr int kMaxItems = 64;      // items per block: their sums wait in shared memory for the epilogue
constexpr int64_t kPrefetchBytes = 128 * 1024;  // weights per block asked of L2 before the producer wait

// The kernel's shape: warps per block, weight units in flight per warp (registers) and the blocks per SM its
// registers leave room for (this kernel's and the next kernel's). FASTWHISPER_MMA_STREAM=wide|deep|lean
// (wide: unset) picks one; an experiment to be settled by measurement.
struct StreamShape {
  int warps, ahead, blocks_per_sm;
};
constexpr StreamShape kWide{16, 4, 1}, kDeep{8, 8, 2}, kLean{16, 2, 2};
const StreamShape& stream_shape() {
  static const std::string c = env_choice("FASTWHISPER_MMA_STREAM", {"wide", "deep", "lean"}, "wide");
  return c == "deep" ? kDeep : c == "lean" ? kLean : kWide;
}

struct StreamPlan {
  int64_t octets;        // ceil(N / 8); octet o belongs to block o % blocks
  unsigned int blocks;
  int max_octets;        // octets of the busiest block
  int slice_units;       // units per item: one octet's features [s * slice_units * 32, (s + 1) * slice_units * 32)
  int slices;            // items per octet
  int prefetch_octets;   // a block's first octets asked of L2 before the producer wait
  int64_t x_stride;      // elements between input rows in shared memory
  size_t ln_offset;      // shared bytes: input rows, LayerNorm weight and bias, then the partial sums
  size_t partial_offset;
  size_t smem;
};

// The slice that gives the busiest warp the fewest units (ties: fewer, longer items), within kMaxItems partials.
StreamPlan plan_stream(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm, int warps) {
  StreamPlan p{};
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  p.octets = ceil_div(N, kOctet);
  p.blocks = static_cast<unsigned int>(std::min(sms, p.octets));
  p.max_octets = static_cast<int>(ceil_div(p.octets, p.blocks));
  const int64_t units = K / kUnit;
  int64_t best = -1;
  for (int64_t s = units; s >= 1; --s) {
    if (units % s != 0) continue;
    const int64_t slices = units / s, items = p.max_octets * slices;
    if (items > kMaxItems) break;  // a shorter slice only makes more items
    const int64_t chain = ceil_div(items, warps) * s;
    if (best < 0 || chain < best) {
      best = chain;
      p.slice_units = static_cast<int>(s);
      p.slices = static_cast<int>(slices);
    }
  }
  p.prefetch_octets = static_cast<int>(std::clamp<int64_t>(kPrefetchBytes / (kOctet * K * elem), 1, p.max_octets));
  const auto row_bytes = round_up(static_cast<size_t>(K * elem), 128) + 64;  // 64 bytes mod 128: no bank conflicts
  p.x_stride = static_cast<int64_t>(row_bytes) / elem;
  p.ln_offset = round_up(static_cast<size_t>(rows) * row_bytes, 128);
  p.partial_offset = round_up(p.ln_offset + (layer_norm ? static_cast<size_t>(2 * K * 4) : 0), 128);
  p.smem = p.partial_offset + static_cast<size_t>(p.max_octets * p.slices) * 32 * sizeof(float4);
  return p;
}

template <typename T, bool kHigh, int kWarps, int kAhead, int kBlocksPerSm>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSm)
    decoder_linear_stream_kernel(const T* __restrict__ x,           // [rows, K]
                                 const float* __restrict__ ln_w,    // [K] or nullptr (no LayerNorm)
                                 const float* __restrict__ ln_b,    // [K]
                                 const Segments<T> seg,             // weights [N_i, K], biases [N_i]
                                 const T* __restrict__ residual,    // [rows, N] or nullptr
                                 T* __restrict__ out,               // [rows, N] (out_float == nullptr)
                                 float* __restrict__ out_float,     // [rows, N] or nullptr
                                 int rows, int64_t K, int64_t N, const StreamPlan plan, bool apply_gelu) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, q = lane % 4;  // fragment row (input row, weight row of the octet), thread in group
  T* h = reinterpret_cast<T*>(smem_raw);                                        // [rows, x_stride] input rows
  float* ln_s = reinterpret_cast<float*>(smem_raw + plan.ln_offset);            // [2, K] LayerNorm weight, bias
  float4* partial = reinterpret_cast<float4*>(smem_raw + plan.partial_offset);  // [items, 32 lanes]
  const int n_octets = static_cast<int>((plan.octets - 1 - blockIdx.x) / plan.blocks + 1);  // blocks <= octets
  const int items = n_octets * plan.slices;
  const int S = plan.slice_units;
  // the block's octet i, and item t's weight row 8o + g (the last row past N) at this lane's first feature
  auto octet = [&](int i) { return blockIdx.x + static_cast<int64_t>(plan.blocks) * i; };
  auto weight_at = [&](int t) {
    const int64_t n = min(octet(t / plan.slices) * kOctet + g, N - 1);
    const int i = seg.find(n);
    return seg.weight_of(i) + (n - seg.begin(i)) * K + static_cast<int64_t>(t % plan.slices) * S * kUnit + q * 8;
  };
  auto load_bias = [&](int i, float (&b)[2]) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t n = octet(i) * kOctet + 2 * q + e;
      b[e] = n < N ? seg.bias_at(n) : 0.f;
    }
  };
  float first_bias[2] = {0.f, 0.f};  // of octet `warp`, the first this warp finishes
  // outputs (g, 8o + 2q + e) and (g + 8, 8o + 2q + e) of the block's octet i from its sums c
  auto finish = [&](int i, const float (&c)[4]) {
    float b[2] = {first_bias[0], first_bias[1]};
    if (i != warp) load_bias(i, b);
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t n = octet(i) * kOctet + 2 * q + e;
      if (n >= N) continue;
      if (g < rows) store_linear_output(c[e], b[e], apply_gelu, residual, out, out_float, g, n, N);
      if (kHigh && g + 8 < rows) store_linear_output(c[2 + e], b[e], apply_gelu, residual, out, out_float, g + 8, n, N);
    }
  };
  // this warp's units, items warp, warp + 16, ..., in order; the load cursor runs kAhead units ahead
  const int my_units = warp < items ? ((items - 1 - warp) / kWarps + 1) * S : 0;
  int load_item = warp, load_left = S;
  const T* load_ptr = my_units > 0 ? weight_at(warp) : nullptr;
  auto next_weights = [&]() {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(load_ptr));
    if (--load_left > 0) {
      load_ptr += kUnit;
    } else {
      load_item += kWarps;
      load_left = S;
      if (load_item < items) load_ptr = weight_at(load_item);
    }
    return v;
  };

  // 1. before the input exists: the block's first octets into L2, this warp's first units into registers,
  // the first bias and the LayerNorm parameters
  if (lane == 0) {
    for (int i = warp; i < min(n_octets, plan.prefetch_octets); i += kWarps) {
      prefetch_rows(seg, octet(i) * kOctet, min(N, (octet(i) + 1) * kOctet), K);
    }
  }
  allow_dependents();
  uint4 w_ahead[kAhead];
#pragma unroll
  for (int l = 0; l < kAhead; ++l) w_ahead[l] = l < my_units ? next_weights() : make_uint4(0, 0, 0, 0);
  if (warp < n_octets) load_bias(warp, first_bias);
  if (ln_w != nullptr) stage_layer_norm(ln_w, ln_b, ln_s, K);
  wait_for_producers();

  // 2. input rows (normalized) into shared memory
  load_input_rows<T>(x, ln_w != nullptr ? ln_s : nullptr, ln_s + K, h, rows, K, plan.x_stride);

  // 3. the units; acc (two chains) holds the current item's sums, which go to shared memory at its last unit
  const auto* x_row = reinterpret_cast<const char*>(h + static_cast<int64_t>(min(g, rows - 1)) * plan.x_stride + q * 8);
  const auto* x_row8 =
      reinterpret_cast<const char*>(h + static_cast<int64_t>(min(g + 8, rows - 1)) * plan.x_stride + q * 8);
  const int slice_bytes = S * kUnit * static_cast<int>(sizeof(T));
  int item = warp, unit = 0;
  uint32_t x_off = static_cast<uint32_t>(item % plan.slices * slice_bytes);  // bytes into the input rows
  float acc[2][4] = {};
  for (int j0 = 0; j0 < my_units; j0 += kAhead) {
#pragma unroll
    for (int l = 0; l < kAhead; ++l) {
      if (j0 + l >= my_units) break;
      const uint4 w = w_ahead[l];
      if (j0 + l + kAhead < my_units) w_ahead[l] = next_weights();
      const uint4 a = *reinterpret_cast<const uint4*>(x_row + x_off);
      const uint4 a8 = kHigh ? *reinterpret_cast<const uint4*>(x_row8 + x_off) : make_uint4(0, 0, 0, 0);
      mma_m16n8k16<T>(acc[l & 1], a.x, a8.x, a.y, a8.y, w.x, w.y);
      mma_m16n8k16<T>(acc[l & 1], a.z, a8.z, a.w, a8.w, w.z, w.w);
      x_off += kUnit * sizeof(T);
      if (++unit < S) continue;
      partial[item * 32 + lane] =
          make_float4(acc[0][0] + acc[1][0], acc[0][1] + acc[1][1], acc[0][2] + acc[1][2], acc[0][3] + acc[1][3]);
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[0][e] = acc[1][e] = 0.f;
      item += kWarps;
      unit = 0;
      x_off = static_cast<uint32_t>(item % plan.slices * slice_bytes);
    }
  }

  // 4. each octet's slices summed in slice order, then the epilogue, one warp per octet
  __syncthreads();
  for (int i = warp; i < n_octets; i += kWarps) {
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    for (int s = 0; s < plan.slices; ++s) {
      const float4 v = partial[(i * plan.slices + s) * 32 + lane];
      c[0] += v.x;
      c[1] += v.y;
      c[2] += v.z;
      c[3] += v.w;
    }
    finish(i, c);
  }
}

// FASTWHISPER_MMA_KERNEL=stream|ring (stream: unset): which tensor-core kernel takes 2 to 16 rows.
bool mma_by_ring() {
  static const bool ring = env_choice("FASTWHISPER_MMA_KERNEL", {"stream", "ring"}, "stream") == "ring";
  return ring;
}

}  // namespace

bool linear_mma_fits(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm) {
  if (rows < 2 || rows > kMaxRows || elem != 2 || N < 1) return false;
  if (at::cuda::getCurrentDeviceProperties()->major < 9) return false;  // the bulk copy engine, the L2 prefetch
  if (!mma_by_ring()) {
    const StreamPlan p = plan_stream(rows, K, N, elem, layer_norm, stream_shape().warps);
    return K % kUnit == 0 && p.slice_units > 0 && p.smem <= dynamic_smem_max();
  }
  if (K % kChunk != 0) return false;
  const MmaPlan p = plan_for(rows, K, N, elem, layer_norm);
  return p.k_pieces > 0 && p.smem <= dynamic_smem_max();
}

template <typename T>
void launch_linear_mma(const T* x, int rows, int64_t K, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                       const T* residual, T* out, float* out_float, int64_t N, bool apply_gelu) {
  if (!mma_by_ring()) {
    const StreamShape& shape = stream_shape();
    const StreamPlan plan = plan_stream(rows, K, N, sizeof(T), ln_w != nullptr, shape.warps);
    auto pick = [&](auto low, auto high) {
      static const size_t max_smem = std::min(allow_all_dynamic_smem(low), allow_all_dynamic_smem(high));
      TORCH_CHECK(plan.smem <= max_smem, "fastwhisper.decoder_linear (CUDA): ", rows, " rows of ", K,
                  " features do not fit the tensor-core kernel's shared memory");
      launch_pdl(rows > 8 ? high : low, dim3(plan.blocks), dim3(shape.warps * 32), plan.smem, x, ln_w, ln_b, seg,
                 residual, out, out_float, rows, K, N, plan, apply_gelu);
    };
    if (&shape == &kDeep) {
      return pick(decoder_linear_stream_kernel<T, false, 8, 8, 2>, decoder_linear_stream_kernel<T, true, 8, 8, 2>);
    }
    if (&shape == &kLean) {
      return pick(decoder_linear_stream_kernel<T, false, 16, 2, 2>, decoder_linear_stream_kernel<T, true, 16, 2, 2>);
    }
    return pick(decoder_linear_stream_kernel<T, false, 16, 4, 1>, decoder_linear_stream_kernel<T, true, 16, 4, 1>);
  }
  const MmaPlan plan = plan_for(rows, K, N, sizeof(T), ln_w != nullptr);
  auto kernel = decoder_linear_mma_kernel<T>;
  static const size_t dynamic_max = allow_all_dynamic_smem(kernel);  // once per instantiation
  TORCH_CHECK(plan.k_pieces > 0 && plan.smem <= dynamic_max, "fastwhisper.decoder_linear (CUDA): ", rows,
              " rows of ", K, " features do not fit the tensor-core kernel's shared memory");
  launch_pdl(kernel, dim3(plan.blocks), dim3(plan.warps * 32), plan.smem, x, ln_w, ln_b, seg, residual, out, out_float,
             rows, K, N, plan, apply_gelu);
}

template void launch_linear_mma<c10::Half>(const c10::Half*, int, int64_t, const float*, const float*,
                                           const Segments<c10::Half>&, const c10::Half*, c10::Half*, float*, int64_t,
                                           bool);
template void launch_linear_mma<c10::BFloat16>(const c10::BFloat16*, int, int64_t, const float*, const float*,
                                               const Segments<c10::BFloat16>&, const c10::BFloat16*, c10::BFloat16*,
                                               float*, int64_t, bool);

}  // namespace fastwhisper::cuda
