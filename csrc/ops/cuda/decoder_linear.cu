// CUDA decoder_linear: the linear layers of the decoder's one-token step (CPU reference:
// decoder_linear in cpu/decoder_step.cpp). At most 16 input rows, so a call is one pass over its
// weights, and its speed is the rate at which those weights arrive from DRAM. From 4 fp16/bf16 rows up
// (beam search, batched windows) the tensor-core kernel of decoder_linear_mma.cu does the multiplication,
// or cuBLASLt's GEMM (decoder_linear_by_gemm below) where that kernel does not fit; so do float32 rows
// whose input does not fit this kernel's shared memory (16 rows of 5120 features).
//
// Each block (one per SM) owns a contiguous range of output columns, that is a contiguous range of
// weight rows, and splits it into one contiguous range per warp. Every warp streams its own rows through
// its own ring of shared-memory slots with the bulk copy engine (bulk_copy.cuh): lane 0 starts a slot's
// copy, the warp waits on the slot's barrier, multiplies, and lane 0 refills the slot. The warps never
// wait for each other after the input is loaded, so 16 independent streams per SM hide DRAM latency
// (the earlier cut, where the whole block took each stage together, spent its time in block barriers).
// A slot holds several whole weight rows when K is small, or a slice of one row when it is large (the
// warp then keeps its partial sums across slices). The first slots are requested before the kernel
// waits for the kernel that produces its input (PDL, see device_utils.cuh), and the kernel lets its own
// successor be scheduled at once; a block takes about half of an SM's shared memory, so the next linear
// layer's blocks sit beside this one's and fill their rings while this one computes.
//
// Each warp multiplies its slot with every input row (kept in shared memory, with the optional
// LayerNorm of the input computed by each block); at a weight row's last slice its lanes sum the
// products, and lane m applies bias, GELU and the residual add of input row m before the single store. With
// one input row and several whole weight rows per slot (the vocabulary projections of tiny to small), the
// warp sums a slot's rows together and stores them at once (rows_dot_one_input); with one weight row per slot
// (the vocabulary projections of medium to large-v3) it reduces eight slots' rows together (reduce_eight_rows).
// Rounding follows whisper's ops: the LayerNorm output, the linear output (bias added in fp32), the
// GELU output and the residual sum are each rounded to the activation dtype.
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "ops/checks.h"
#include "ops/cuda/bulk_copy.cuh"
#include "ops/cuda/decoder_linear_common.cuh"
#include "ops/cuda/decoder_linear_mma.h"
#include "ops/cuda/device_utils.cuh"
#include "ops/cuda/layer_norm_rows.cuh"
#include "ops/gelu.h"
#include "ops/kernels.h"
#include "ops/cuda/launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kWarps = 16;                    // >= kDecoderMaxRows: one warp normalizes each input row
static_assert(kWarps >= kDecoderMaxRows, "load_input_rows gives each input row its own warp");
constexpr int kThreads = kWarps * 32;
constexpr int kSlots = 2;                     // ring slots per warp
constexpr int64_t kMaxRowsPerPiece = 8;       // whole weight rows in one slot at most
constexpr int64_t kBlockSmemBudget = 108 * 1024;  // two blocks (this kernel and the next) per SM

// How a call is cut: grid blocks of rows_per_block weight rows, warps of rows_per_warp of them, and
// each warp's rows into pieces (one ring slot each): rows_per_piece whole rows (k_pieces == 1), or a
// slice of piece_k features of one row (k_pieces > 1).
struct LinearPlan {
  int64_t rows_per_block;  // weight rows (output columns) per block
  int64_t rows_per_warp;   // of a block's rows, contiguous per warp
  int64_t rows_per_piece;  // weight rows per piece (1 when k_pieces > 1)
  int64_t k_pieces;        // pieces per weight row
  int64_t piece_k;         // features per piece: K / k_pieces, a multiple of the 16-byte vector
  int64_t slot_elems;      // elements of one ring slot: rows_per_piece * piece_k
  unsigned int blocks;
  size_t x_bytes;          // shared bytes of the input rows (rounded up to 128)
  size_t bias_offset;      // shared byte offset of the block's biases (after the rings)
  size_t ln_offset;        // shared byte offset of the LayerNorm weight and bias (after the biases)
  size_t smem;             // dynamic shared memory per block
  bool rows_together;      // one input row, several whole weight rows per slot summed together (rows_dot_one_input)
  bool rows_grouped;       // one input row, one whole weight row per slot, >= 8 per warp: 8 slots reduced together
};

// Piece [lo, hi) x [k0, k0 + piece_k) -> dst, tracked by bar (one thread): whole rows, or one row's slice.
template <typename T>
__device__ void request_piece(const Segments<T>& seg, int64_t lo, int64_t hi, int64_t k0, int64_t piece_k, int64_t K,
                              T* dst, uint64_t* bar) {
  if (piece_k == K) return request_rows(seg, lo, hi, K, dst, bar);
  const auto bytes = static_cast<uint32_t>(piece_k * sizeof(T));
  mbarrier_arrive_expect_tx(bar, bytes);
  const int i = seg.find(lo);
  bulk_copy_to_shared(dst, seg.weight_of(i) + (lo - seg.begin(i)) * K + k0, bytes, bar);
}

// The same piece copied by the warp with 16-byte loads (GPUs without the bulk copy engine).
template <typename T>
__device__ void copy_piece(const Segments<T>& seg, int64_t lo, int64_t hi, int64_t k0, int64_t piece_k, int64_t K,
                           T* dst) {
  constexpr int V = kPack16<T>;
  const int64_t n_vec = piece_k / V;
  for (int64_t idx = threadIdx.x % 32; idx < (hi - lo) * n_vec; idx += 32) {
    const int64_t n = lo + idx / n_vec;
    const int i = seg.find(n);
    const T* src = seg.weight_of(i) + (n - seg.begin(i)) * K + k0;
    reinterpret_cast<Pack16<T>*>(dst)[idx] = reinterpret_cast<const Pack16<T>*>(src)[idx % n_vec];
  }
  __syncwarp();
}

// Eight rows' partial sums (acc[r]: this lane's share of row r) reduced across the warp together: partners
// 16, 8 and 4 lanes apart exchange half of the rows they still hold, then 2 and 1 apart the last one. Lane l ends
// with the total of row (l >> 2) & 7. Each total adds the same pairs in the same order as warp_sum over that row
// (fp32 addition commutes), so it is bit for bit the one-row-at-a-time loop's; what it saves is the per-row
// reduction and store (9 shuffles and one store pass for eight rows instead of 40 shuffles and eight stores).
static_assert(kMaxRowsPerPiece == 8, "reduce_eight_rows: rows are reduced eight at a time");
__device__ __forceinline__ float reduce_eight_rows(float (&acc)[kMaxRowsPerPiece], int lane) {
  // rows 0-7 -> 4 per lane (partners 16 apart) -> 2 (8 apart) -> 1 (4 apart): the upper lane of a pair keeps
  // the upper half of the rows and sends the lower half
#pragma unroll
  for (int half = kMaxRowsPerPiece / 2, o = 16; half >= 1; half /= 2, o /= 2) {
    const bool upper = lane & o;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float keep = upper ? acc[i + half] : acc[i];
      const float send = upper ? acc[i] : acc[i + half];
      acc[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
  acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 2);
  acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 1);
  return acc[0];
}

// The row of reduce_eight_rows' total that `lane` holds.
__device__ __forceinline__ int reduced_row_of_lane(int lane) { return (lane >> 2) & 7; }

// One input row h [K] against the `count` (at most kMaxRowsPerPiece) whole weight rows of a slot (row r at
// wrow + r * K): each lane's partial sums (h converted once per 16-byte vector for all rows), reduced together.
template <typename T>
__device__ __forceinline__ float rows_dot_one_input(const T* wrow,  // [count, K] the slot's weight rows
                                                    const T* h,     // [K] the (normalized) input row
                                                    int count, int64_t K, int lane) {
  constexpr int V = kPack16<T>;
  float acc[kMaxRowsPerPiece];
#pragma unroll
  for (int r = 0; r < kMaxRowsPerPiece; ++r) acc[r] = 0.f;
  for (int64_t k = lane * V; k < K; k += 32 * V) {
    float hf[V];
    load_pack16_as_floats(h + k, hf);
#pragma unroll
    for (int r = 0; r < kMaxRowsPerPiece; ++r) {
      if (r < count) {
        const Pack16<T> wv = *reinterpret_cast<const Pack16<T>*>(wrow + r * K + k);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[r] += static_cast<float>(wv.v[e]) * hf[e];
      }
    }
  }
  return reduce_eight_rows(acc, lane);
}

// This lane's share of one weight row [K] times the input row h [K] (the products in the order the
// row-at-a-time loop adds them).
template <typename T>
__device__ __forceinline__ float lane_dot(const T* wrow,  // [K] one weight row
                                          const T* h,     // [K] the (normalized) input row
                                          int64_t K, int lane) {
  constexpr int V = kPack16<T>;
  float acc = 0.f;
#pragma unroll 4
  for (int64_t k = lane * V; k < K; k += 32 * V) {
    float wf[V];
    load_pack16_as_floats(wrow + k, wf);
    const Pack16<T> hv = *reinterpret_cast<const Pack16<T>*>(h + k);
#pragma unroll
    for (int e = 0; e < V; ++e) acc += wf[e] * static_cast<float>(hv.v[e]);
  }
  return acc;
}

template <typename T, int kMaxRows>
__global__ void __launch_bounds__(kThreads, 2)
    decoder_linear_kernel(const T* __restrict__ x,           // [rows, K]
                          const float* __restrict__ ln_w,    // [K] or nullptr (no LayerNorm)
                          const float* __restrict__ ln_b,    // [K]
                          const Segments<T> seg,             // weights [N_i, K], biases [N_i]
                          const T* __restrict__ residual,    // [rows, N] or nullptr
                          T* __restrict__ out,               // [rows, N] (out_float == nullptr)
                          float* __restrict__ out_float,     // [rows, N] or nullptr
                          int rows, int64_t K, int64_t N, const LinearPlan plan, bool apply_gelu) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full[kWarps][kSlots];
  constexpr int V = kPack16<T>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  T* h = reinterpret_cast<T*>(smem_raw);  // [rows, K]: the (normalized) input rows
  T* ring = reinterpret_cast<T*>(smem_raw + plan.x_bytes) + warp * kSlots * plan.slot_elems;  // [kSlots, slot_elems]
  const int64_t block_lo = static_cast<int64_t>(blockIdx.x) * plan.rows_per_block;
  const int64_t block_hi = min(N, block_lo + plan.rows_per_block);
  const int64_t warp_lo = min(block_hi, block_lo + warp * plan.rows_per_warp);
  const int64_t warp_hi = min(block_hi, warp_lo + plan.rows_per_warp);
  const int n_pieces =
      static_cast<int>((warp_hi - warp_lo + plan.rows_per_piece - 1) / plan.rows_per_piece * plan.k_pieces);
  // piece j: weight rows [rows_lo(j), rows_hi(j)), features [k_lo(j), k_lo(j) + piece_k), in slot j % kSlots
  auto rows_lo = [&](int j) { return warp_lo + j / plan.k_pieces * plan.rows_per_piece; };
  auto rows_hi = [&](int j) { return min(warp_hi, rows_lo(j) + plan.rows_per_piece); };
  auto k_lo = [&](int j) { return j % plan.k_pieces * plan.piece_k; };
  auto slot = [&](int j) { return ring + (j % kSlots) * plan.slot_elems; };
  auto request = [&](int j) {
    request_piece(seg, rows_lo(j), rows_hi(j), k_lo(j), plan.piece_k, K, slot(j), &full[warp][j % kSlots]);
  };

  float* bias_s = reinterpret_cast<float*>(smem_raw + plan.bias_offset);  // [rows_per_block] the block's biases
  float* ln_s = reinterpret_cast<float*>(smem_raw + plan.ln_offset);      // [2, K] LayerNorm weight, bias

  // 1. this warp's first pieces, its biases and the LayerNorm parameters, requested before the input exists
  if (kHasBulkCopy && lane == 0) {
    for (int s = 0; s < kSlots; ++s) mbarrier_init(&full[warp][s], 1);
    for (int j = 0; j < min(kSlots, n_pieces); ++j) request(j);
  }
  allow_dependents();
  for (int64_t n = warp_lo + lane; n < warp_hi; n += 32) bias_s[n - block_lo] = seg.bias_at(n);
  if (ln_w != nullptr) stage_layer_norm(ln_w, ln_b, ln_s, K);
  wait_for_producers();

  // 2. input rows into shared memory (its closing barrier also publishes the barriers' initialization
  // and the preloaded parameters)
  const bool ln_staged = ln_w != nullptr;
  load_input_rows<T>(x, ln_staged ? ln_s : ln_w, ln_staged ? ln_s + K : ln_b, h, rows, K, K);

  // 3. the warp's pieces, in order: take(j) waits for piece j's slot (or copies it), release(j) hands the slot
  // back for piece j + kSlots once every lane is done with it
  auto take = [&](int j) {
    if (kHasBulkCopy) {
      mbarrier_wait(&full[warp][j % kSlots], (j / kSlots) & 1);
    } else {
      copy_piece(seg, rows_lo(j), rows_hi(j), k_lo(j), plan.piece_k, K, slot(j));
    }
    return static_cast<const T*>(slot(j));
  };
  auto release = [&](int j) {
    __syncwarp();
    if (kHasBulkCopy && lane == 0 && j + kSlots < n_pieces) {
      fence_shared_for_bulk_copy();
      request(j + kSlots);
    }
  };
  auto store = [&](float total, int64_t n, int m) {  // output (m, n) from its row's total
    const float b = bias_s[n - block_lo];
    store_linear_output(total, b, apply_gelu, residual, out, out_float, m, n, N);
  };

  if (kMaxRows == 1 && plan.rows_grouped) {  // one input row, one weight row per slot: eight slots reduced together
    for (int j0 = 0; j0 < n_pieces; j0 += kMaxRowsPerPiece) {
      float part[kMaxRowsPerPiece];
#pragma unroll
      for (int r = 0; r < kMaxRowsPerPiece; ++r) {
        part[r] = 0.f;
        if (j0 + r < n_pieces) {
          part[r] = lane_dot(take(j0 + r), h, K, lane);
          release(j0 + r);
        }
      }
      const float total = reduce_eight_rows(part, lane);
      const int r = reduced_row_of_lane(lane);
      if ((lane & 3) == 0 && j0 + r < n_pieces) store(total, warp_lo + j0 + r, 0);
    }
    return;
  }

  if (kMaxRows == 1 && plan.rows_together) {  // one input row, several whole weight rows per slot
    for (int j = 0; j < n_pieces; ++j) {
      const int64_t lo = rows_lo(j);
      const int count = static_cast<int>(rows_hi(j) - lo), r = reduced_row_of_lane(lane);
      const float total = rows_dot_one_input(take(j), h, count, K, lane);
      if ((lane & 3) == 0 && r < count) store(total, lo + r, 0);
      release(j);
    }
    return;
  }

  // one weight row (or slice) at a time, every input row against it; acc holds a weight row's sums over its
  // slices so far
  float acc[kMaxRows];
#pragma unroll
  for (int m = 0; m < kMaxRows; ++m) acc[m] = 0.f;
  for (int j = 0; j < n_pieces; ++j) {
    const int64_t lo = rows_lo(j), hi = rows_hi(j), k0 = k_lo(j);
    const T* wrow = take(j);
    for (int64_t n = lo; n < hi; ++n, wrow += plan.piece_k) {
#pragma unroll 4
      for (int64_t k = lane * V; k < plan.piece_k; k += 32 * V) {
        float wf[V];
        load_pack16_as_floats(wrow + k, wf);
#pragma unroll
        for (int m = 0; m < kMaxRows; ++m) {
          if (m < rows) {
            const Pack16<T> hv = *reinterpret_cast<const Pack16<T>*>(h + m * K + k0 + k);
#pragma unroll
            for (int e = 0; e < V; ++e) acc[m] += wf[e] * static_cast<float>(hv.v[e]);
          }
        }
      }
      if (k0 + plan.piece_k < K) continue;  // more slices of this row to come
      // the row's last slice: lane m finishes output (m, n)
      float total = 0.f;
#pragma unroll
      for (int m = 0; m < kMaxRows; ++m) {
        if (m < rows) {
          const float t = warp_sum(acc[m]);
          if (lane == m) total = t;
        }
        acc[m] = 0.f;
      }
      if (lane < rows) store(total, n, lane);
    }
    release(j);
  }
}

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// The cut of one call: one block per SM, the block's rows shared among its warps, and ring slots as large
// as kSlots per warp allow beside the input rows and the preloaded parameters in the budget.
LinearPlan plan_linear(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm) {
  const int64_t vec = 16 / elem;
  LinearPlan p{};
  p.x_bytes = round_up(static_cast<size_t>(rows * K * elem), 128);
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  p.rows_per_block = ceil_div(N, std::min(sms, N));
  p.blocks = static_cast<unsigned int>(ceil_div(N, p.rows_per_block));
  p.rows_per_warp = ceil_div(p.rows_per_block, kWarps);
  const auto bias_bytes = round_up(static_cast<size_t>(p.rows_per_block * 4), 128);
  const auto ln_bytes = layer_norm ? static_cast<size_t>(2 * K * 4) : 0;
  const int64_t slot_bytes = std::max<int64_t>(
      16, (kBlockSmemBudget - static_cast<int64_t>(p.x_bytes + bias_bytes + ln_bytes)) / (kWarps * kSlots) / 16 * 16);
  const int64_t row_bytes = K * elem;
  if (row_bytes <= slot_bytes) {
    p.k_pieces = 1;
    p.piece_k = K;
    p.rows_per_piece = std::min({slot_bytes / row_bytes, kMaxRowsPerPiece, p.rows_per_warp});
  } else {
    p.rows_per_piece = 1;
    p.k_pieces = ceil_div(row_bytes, slot_bytes);
    while (K % (p.k_pieces * vec) != 0) ++p.k_pieces;  // K % vec == 0: ends at K / vec at the latest
    p.piece_k = K / p.k_pieces;
  }
  const bool one_row_whole = rows == 1 && p.k_pieces == 1;
  p.rows_together = one_row_whole && p.rows_per_piece > 1;
  p.rows_grouped = one_row_whole && p.rows_per_piece == 1 && p.rows_per_warp >= kMaxRowsPerPiece;
  p.slot_elems = p.rows_per_piece * p.piece_k;
  p.bias_offset = p.x_bytes + static_cast<size_t>(kWarps * kSlots * p.slot_elems * elem);
  p.ln_offset = p.bias_offset + bias_bytes;
  p.smem = p.ln_offset + ln_bytes;
  return p;
}

// Whether a cut fits the kernel's shared memory on this GPU: the opt-in maximum less the kernel's barriers (its
// only static shared memory). decoder_linear takes the GEMM path where it does not.
bool linear_plan_fits(const LinearPlan& plan) {
  const size_t optin = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  return plan.smem + sizeof(uint64_t) * kWarps * kSlots <= optin;
}

template <typename T, int kMaxRows>
void launch_linear(const at::Tensor& x, const LinearPlan& plan, const float* ln_w, const float* ln_b,
                   const Segments<T>& seg, const T* residual, T* out, float* out_float, int64_t n, bool apply_gelu) {
  const int64_t rows = x.size(0), k = x.size(1);
  auto kernel = decoder_linear_kernel<T, kMaxRows>;
  static const size_t dynamic_max = allow_all_dynamic_smem(kernel);  // once per instantiation
  TORCH_CHECK(linear_plan_fits(plan) && plan.smem <= dynamic_max, "fastwhisper.decoder_linear (CUDA): ", rows,
              " rows of ", k, " features need ", plan.smem, " bytes of shared memory; this GPU allows ", dynamic_max);
  launch_pdl(kernel, dim3(plan.blocks), dim3(kThreads), plan.smem, x.data_ptr<T>(), ln_w, ln_b, seg, residual, out,
             out_float, static_cast<int>(rows), k, n, plan, apply_gelu);
}

template <typename T>
void launch_linear_rows(const at::Tensor& x, const LinearPlan& plan, const float* ln_w, const float* ln_b,
                        const Segments<T>& seg, const T* residual, T* out, float* out_float, int64_t n,
                        bool apply_gelu) {
  const int64_t rows = x.size(0);
  if (rows <= 1) return launch_linear<T, 1>(x, plan, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 2) return launch_linear<T, 2>(x, plan, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 4) return launch_linear<T, 4>(x, plan, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if constexpr (std::is_same_v<T, float>) {  // fp16/bf16 take cuBLASLt from kGemmMinRows rows
    return launch_linear<T, kDecoderMaxRows>(x, plan, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  } else {
    TORCH_CHECK(false, "fastwhisper.decoder_linear (CUDA): ", rows, " fp16/bf16 rows go to cuBLASLt, not this kernel");
  }
}

// Four or more fp16/bf16 input rows go to the tensor-core kernel (decoder_linear_mma.cu) for up to kMmaMaxK
// features, where it fits; wider inputs (the MLP's second layer of large-v3, 5120 features) fill most of its
// shared memory with their input rows, and cuBLASLt (decoder_linear_by_gemm) is faster there.
constexpr int64_t kMmaMaxK = 2048;
bool many_rows_by_mma(int64_t k) { return k <= kMmaMaxK; }

// Four or more fp16/bf16 input rows without the tensor-core kernel: the LayerNorm kernel, then one cuBLASLt GEMM per weight (bias, and a
// single weight's residual, in its epilogue; GELU in the linear op's pass). The weights are read once either
// way, but this file's kernel multiplies each 16-byte weight vector with every input row and turns compute
// bound: with 5 rows of large-v3 it took about twice cuBLASLt's time on every layer.
// Rounding: as the kernel's, except that a single weight's residual is added before the one rounding of
// the GEMM output (as the encoder's linear does) instead of after it.
constexpr int64_t kGemmMinRows = 4;

at::Tensor decoder_linear_by_gemm(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,
                                  const std::optional<at::Tensor>& ln_bias, const DecoderLinearParts& parts,
                                  const std::optional<at::Tensor>& residual, bool gelu_act, bool float_output) {
  const at::Tensor h = ln_weight.has_value() ? layer_norm(x, *ln_weight, *ln_bias, kLayerNormEps) : x;  // [R, K]
  const bool one = parts.weights.size() == 1;
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i < parts.weights.size(); ++i) {
    outs.push_back(linear(h, parts.weights[i], parts.biases[i], one && !gelu_act ? residual : std::nullopt, gelu_act));
  }
  at::Tensor y = one ? outs[0] : at::cat(outs, 1);  // [R, N]
  if (residual.has_value() && (!one || gelu_act)) y = at::add(*residual, y);
  return float_output ? y.to(at::kFloat) : y;
}

}  // namespace

at::Tensor decoder_linear(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,
                          const std::optional<at::Tensor>& ln_bias, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases, const std::optional<at::Tensor>& residual,
                          bool gelu_act, bool float_output) {
  const DecoderLinearParts parts =
      check_decoder_linear_args(c10::DeviceType::CUDA, x, ln_weight, ln_bias, weights, biases, residual);
  const auto& w = parts.weights;
  const auto& b = parts.biases;
  const int64_t n = parts.out_features;
  const int64_t k = x.size(1);
  TORCH_CHECK(k % (16 / x.element_size()) == 0, "fastwhisper.decoder_linear (CUDA): the feature count ", k,
              " must be a multiple of ", 16 / x.element_size(), " (16-byte rows)");
  bool aligned = is_aligned(x.data_ptr(), 16);
  for (const auto& t : w) aligned = aligned && is_aligned(t.data_ptr(), 16);
  TORCH_CHECK(aligned, "fastwhisper.decoder_linear (CUDA): x and weights must start at 16-byte aligned addresses");
  TORCH_CHECK(!ln_weight.has_value() || (is_aligned(ln_weight->data_ptr(), 16) && is_aligned(ln_bias->data_ptr(), 16)),
              "fastwhisper.decoder_linear (CUDA): ln_weight and ln_bias must start at 16-byte aligned addresses");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.size(0);
  const bool many_rows = rows >= kGemmMinRows && x.scalar_type() != at::kFloat;
  // the tensor-core kernel's cut where it takes the call, else the CUDA-core kernel's where that one may
  const std::optional<MmaPlan> mma_plan =
      many_rows && many_rows_by_mma(k) ? plan_linear_mma(rows, k, n, 2, ln_weight.has_value()) : std::nullopt;
  const bool by_mma = mma_plan.has_value();
  const LinearPlan plan =
      many_rows ? LinearPlan{} : plan_linear(rows, k, n, x.element_size(), ln_weight.has_value());
  if (!by_mma && (many_rows || !linear_plan_fits(plan))) {
    return decoder_linear_by_gemm(x, ln_weight, ln_bias, parts, residual, gelu_act, float_output);
  }
  at::Tensor out = at::empty({x.size(0), n}, x.options().dtype(float_output ? at::kFloat : x.scalar_type()));
  FASTWHISPER_DISPATCH_FLOATS(x.scalar_type(), "fastwhisper_decoder_linear", [&] {
    Segments<scalar_t> seg{};
    seg.count = static_cast<int>(w.size());
    int64_t end = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      seg.weight[i] = w[i].data_ptr<scalar_t>();
      seg.bias[i] = b[i].has_value() ? b[i]->data_ptr<scalar_t>() : nullptr;
      end += w[i].size(0);
      seg.end[i] = end;
    }
    const float* ln_w = ln_weight.has_value() ? ln_weight->data_ptr<float>() : nullptr;
    const float* ln_b = ln_bias.has_value() ? ln_bias->data_ptr<float>() : nullptr;
    const scalar_t* res = residual.has_value() ? residual->data_ptr<scalar_t>() : nullptr;
    scalar_t* o = float_output ? nullptr : out.data_ptr<scalar_t>();
    float* of = float_output ? out.data_ptr<float>() : nullptr;
    if constexpr (!std::is_same_v<scalar_t, float>) {
      if (by_mma) {
        return launch_linear_mma<scalar_t>(*mma_plan, x.data_ptr<scalar_t>(), static_cast<int>(rows), k, ln_w, ln_b, seg,
                                           res, o, of, n, gelu_act);
      }
    }
    launch_linear_rows<scalar_t>(x, plan, ln_w, ln_b, seg, res, o, of, n, gelu_act);
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_linear", &decoder_linear); }

}  // namespace fastwhisper::cuda
