// CUDA decoder_linear for 2 to 16 fp16/bf16 input rows on tensor cores (beam search, batched windows; CPU
// reference: decoder_linear in cpu/decoder_step.cpp). The one-row kernel (decoder_linear.cu) multiplies each
// weight vector with every input row on the CUDA cores, which with 5-8 rows turns compute bound; cuBLASLt
// instead needs a LayerNorm kernel, one GEMM per weight, a concatenation and a GELU pass per call, each a
// launch without PDL, and together most of a large-v3 layer's step time with 8 rows.
//
// The weights' rows (the call's output columns) go in octets of 8: one mma.m16n8k16 multiplies 16 features of an
// octet (its n = 8 columns) with the same features of input rows 0-15 (its m = 16). Octet o belongs to block
// o % blocks (one block per SM). A block cuts its octets along K into items of slice_units units of 32
// features, and its 16 warps take the items in turn, so that every warp multiplies and no warp walks a whole
// octet alone. Each warp streams its items' weights from global memory straight into registers, kAhead units
// ahead of the mma. Before the kernel waits for its producer (PDL), the block asks L2 for its first octets'
// weights (a bulk L2 prefetch) and each warp loads its first kAhead units. The input rows, with the optional
// LayerNorm, are staged in shared memory by the whole block (a warp per input row). Each item's sums wait in
// shared memory; at the end one warp per octet adds its slices in slice order (so a result does not depend on
// timing) and applies the epilogue.
//
// An earlier kernel gave each octet to one warp, which walked its K features through a ring of shared-memory
// slots filled by the bulk copy engine: with 16 rows of large-v3's qkv, 4 warps of a block's 16 did all the
// multiplying, and Nsight Compute found most warp time in that loop; streaming every warp's share of the
// features, as below, keeps all warps multiplying.
//
// Fragments: lane (g, q) holds features 8q .. 8q+7 of each unit of weight row 8o + g and of input rows g and
// g + 8 (one 16-byte vector each), and gives them to two mma k-steps in the same order for both operands (a dot
// product does not care in which order its features are summed). Input rows sit 64 bytes (mod 128) apart in
// shared memory, so the 8 lanes of a quarter warp (rows g, g + 1) read distinct banks. Fragment rows past the
// call's rows read the last row again (their outputs are never stored), and weight rows past N read row N - 1.
//
// Epilogue: lane (g, q) finishes output rows g and g + 8, columns 8o + 2q + {0, 1}, with bias, GELU and the
// residual rounded as the one-row kernel rounds them; its fp32 sums come in another order, so results may
// differ from it in the last bit of the activation dtype.
#include "ops/cuda/decoder_linear_mma.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "ops/cuda/bulk_copy.cuh"
#include "ops/cuda/device_utils.cuh"
#include "ops/cuda/layer_norm_rows.cuh"
#include "ops/gelu.h"
#include "ops/cuda/launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kOctet = 8;          // weight rows per mma (its n)
constexpr int kMaxRows = 16;       // input rows: the mma's m
constexpr int kUnit = 32;          // features per unit: one 16-byte vector per lane and operand row, two k-steps
constexpr int kWarps = 16;         // per block: one per input row for the LayerNorm, all of them multiply
constexpr int kAhead = 4;          // weight units in flight per warp, in registers (80 registers, no spills)
constexpr int kMaxItems = 64;      // items per block: their sums wait in shared memory for the epilogue
constexpr int64_t kPrefetchBytes = 128 * 1024;  // weights per block asked of L2 before the producer wait
static_assert(kWarps >= kMaxRows, "load_input_rows gives each input row its own warp");

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }


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

// The slice that gives the busiest warp the fewest units (ties: fewer, longer items), within kMaxItems partials.
MmaPlan plan_stream(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm) {
  MmaPlan p{};
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
    const int64_t chain = ceil_div(items, kWarps) * s;
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

template <typename T, bool kHigh>
__global__ void __launch_bounds__(kWarps * 32, 1)
    decoder_linear_stream_kernel(const T* __restrict__ x,           // [rows, K]
                                 const float* __restrict__ ln_w,    // [K] or nullptr (no LayerNorm)
                                 const float* __restrict__ ln_b,    // [K]
                                 const Segments<T> seg,             // weights [N_i, K], biases [N_i]
                                 const T* __restrict__ residual,    // [rows, N] or nullptr
                                 T* __restrict__ out,               // [rows, N] (out_float == nullptr)
                                 float* __restrict__ out_float,     // [rows, N] or nullptr
                                 int rows, int64_t K, int64_t N, const MmaPlan plan, bool apply_gelu) {
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

}  // namespace

std::optional<MmaPlan> plan_linear_mma(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm) {
  if (rows < 2 || rows > kMaxRows || K % kUnit != 0 || elem != 2 || N < 1) return std::nullopt;
  if (at::cuda::getCurrentDeviceProperties()->major < 9) return std::nullopt;  // the bulk L2 prefetch
  const MmaPlan p = plan_stream(rows, K, N, elem, layer_norm);
  if (p.slice_units == 0 || p.smem > at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin) return std::nullopt;
  return p;
}

template <typename T>
void launch_linear_mma(const MmaPlan& plan, const T* x, int rows, int64_t K, const float* ln_w, const float* ln_b,
                       const Segments<T>& seg, const T* residual, T* out, float* out_float, int64_t N, bool apply_gelu) {
  auto low = decoder_linear_stream_kernel<T, false>, high = decoder_linear_stream_kernel<T, true>;
  static const size_t dynamic_max = std::min(allow_all_dynamic_smem(low), allow_all_dynamic_smem(high));
  TORCH_CHECK(plan.smem <= dynamic_max, "fastwhisper.decoder_linear (CUDA): ", rows, " rows of ", K,
              " features do not fit the tensor-core kernel's shared memory");
  launch_pdl(rows > 8 ? high : low, dim3(plan.blocks), dim3(kWarps * 32), plan.smem, x, ln_w, ln_b, seg, residual,
             out, out_float, rows, K, N, plan, apply_gelu);
}

template void launch_linear_mma<c10::Half>(const MmaPlan&, const c10::Half*, int, int64_t, const float*, const float*,
                                           const Segments<c10::Half>&, const c10::Half*, c10::Half*, float*, int64_t,
                                           bool);
template void launch_linear_mma<c10::BFloat16>(const MmaPlan&, const c10::BFloat16*, int, int64_t, const float*,
                                               const float*, const Segments<c10::BFloat16>&, const c10::BFloat16*,
                                               c10::BFloat16*, float*, int64_t, bool);

}  // namespace fastwhisper::cuda
