// The tensor-core decoder_linear kernel for several input rows (beams, batched windows): see
// decoder_linear_mma.cu. Included by CUDA sources only.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstddef>
#include <cstdint>
#include <optional>

#include "ops/cuda/decoder_linear_common.cuh"

namespace fastwhisper::cuda {

// How the kernel cuts one call (see decoder_linear_mma.cu).
struct MmaPlan {
  int64_t octets;        // ceil(N / 8); octet o belongs to block o % blocks
  unsigned int blocks;
  int max_octets;        // octets of the busiest block
  int slice_units;       // units per item: one octet's features [s * slice_units * 32, (s + 1) * slice_units * 32)
  int slices;            // items per octet
  int prefetch_octets;   // a block's first octets asked of L2 before the producer wait
  int64_t x_stride;      // elements between input rows in shared memory
  size_t ln_offset;      // shared bytes: input rows, LayerNorm weight and bias, then the items' sums
  size_t partial_offset;
  size_t smem;
};

// The kernel's cut of `rows` input rows of K features and N outputs, or nothing where the kernel does not take
// the call (2 to 16 fp16/bf16 rows, K a multiple of 32, an sm_90 GPU, within its shared memory).
std::optional<MmaPlan> plan_linear_mma(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm);

// out[m, n] = epilogue(LayerNorm(x)[m] . W[n] + b[n]) for m < rows, n < N, as decoder_linear's CUDA-core kernel
// computes it (same roundings; fp32 sums in another order). T: c10::Half or c10::BFloat16. Pointers as in
// decoder_linear_kernel: x [rows, K], ln_w / ln_b [K] fp32 or nullptr, residual [rows, N] or nullptr, out
// [rows, N] or out_float [rows, N] (exactly one non-null). plan: plan_linear_mma's for this call.
template <typename T>
void launch_linear_mma(const MmaPlan& plan, const T* x, int rows, int64_t K, const float* ln_w, const float* ln_b,
                       const Segments<T>& seg, const T* residual, T* out, float* out_float, int64_t N, bool apply_gelu);

}  // namespace fastwhisper::cuda
