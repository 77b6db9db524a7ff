// The tensor-core decoder_linear kernel for several input rows (beams, batched windows): see
// decoder_linear_mma.cu. Included by CUDA sources only.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cuda/decoder_linear_common.cuh"

namespace fastwhisper::cuda {

// Whether the kernel takes `rows` input rows of K features (2 to 16 rows, K a multiple of 32) and fits its
// shared memory on this GPU.
bool linear_mma_fits(int64_t rows, int64_t K, int64_t N, int64_t elem, bool layer_norm);

// out[m, n] = epilogue(LayerNorm(x)[m] . W[n] + b[n]) for m < rows, n < N, as decoder_linear's CUDA-core kernel
// computes it (same roundings; fp32 sums in another order). T: c10::Half or c10::BFloat16. Pointers as in
// decoder_linear_kernel: x [rows, K], ln_w / ln_b [K] fp32 or nullptr, residual [rows, N] or nullptr, out
// [rows, N] or out_float [rows, N] (exactly one non-null).
template <typename T>
void launch_linear_mma(const T* x, int rows, int64_t K, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                       const T* residual, T* out, float* out_float, int64_t N, bool apply_gelu);

}  // namespace fastwhisper::cuda
