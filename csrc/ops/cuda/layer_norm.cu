// CUDA LayerNorm over the last dimension: one warp per row, fp32 statistics (two passes), output in the
// input's dtype. Main kernel: the row is read with 16-byte loads into registers, once. Fallback (d not a
// multiple of the 16-byte pack, unaligned pointers, rows too long for registers): scalar loads, the row
// re-read from L1 in each pass.
#include <torch/library.h>

#include <type_traits>

#include "ops/checks.h"
#include "ops/cuda/device_utils.cuh"
#include "ops/kernels.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vec.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kRowsPerBlock = 4;  // one warp per row

// Packs of kVec = 16 bytes / sizeof(T) elements; lane l holds packs l, l + 32, ... (at most kPerLane).
template <typename T, typename W, int kPerLane>
__global__ void layer_norm_vec_kernel(const T* __restrict__ x,       // [rows, d], 16-byte aligned
                                      const W* __restrict__ weight,  // [d], aligned to sizeof(W) * kVec
                                      const W* __restrict__ bias,    // [d], aligned to sizeof(W) * kVec
                                      T* __restrict__ out,           // [rows, d], 16-byte aligned
                                      int64_t rows, int n_packs,     // n_packs = d / kVec <= 32 * kPerLane
                                      float eps) {
  constexpr int kVec = kPack16<T>;
  using P = Pack<T, kVec>;
  using PW = Pack<W, kVec>;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const float d = static_cast<float>(n_packs * kVec);
  const P* xr = reinterpret_cast<const P*>(x) + row * n_packs;
  P v[kPerLane];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int j = lane + 32 * i;
    if (j < n_packs) {
      v[i] = xr[j];
#pragma unroll
      for (int e = 0; e < kVec; ++e) sum += static_cast<float>(v[i].v[e]);
    }
  }
  const float mean = warp_sum(sum) / d;
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    if (lane + 32 * i < n_packs) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const float c = static_cast<float>(v[i].v[e]) - mean;
        sq += c * c;
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / d + eps);
  const PW* wp = reinterpret_cast<const PW*>(weight);
  const PW* bp = reinterpret_cast<const PW*>(bias);
  P* orow = reinterpret_cast<P*>(out) + row * n_packs;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int j = lane + 32 * i;
    if (j < n_packs) {
      const PW w = wp[j], b = bp[j];
      P o;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const float c = static_cast<float>(v[i].v[e]) - mean;
        o.v[e] = static_cast<T>(c * rstd * static_cast<float>(w.v[e]) + static_cast<float>(b.v[e]));
      }
      orow[j] = o;
    }
  }
}

template <typename T, typename W>
__global__ void layer_norm_kernel(const T* __restrict__ x,     // [rows, d]
                                  const W* __restrict__ weight,  // [d]
                                  const W* __restrict__ bias,    // [d]
                                  T* __restrict__ out,           // [rows, d]
                                  int64_t rows, int d, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const T* xr = x + row * d;
  float sum = 0.f;
  for (int i = lane; i < d; i += 32) sum += static_cast<float>(xr[i]);
  const float mean = warp_sum(sum) / d;
  float sq = 0.f;
  for (int i = lane; i < d; i += 32) {
    const float c = static_cast<float>(xr[i]) - mean;
    sq += c * c;
  }
  const float rstd = rsqrtf(warp_sum(sq) / d + eps);
  T* o = out + row * d;
  for (int i = lane; i < d; i += 32) {
    const float c = static_cast<float>(xr[i]) - mean;
    o[i] = static_cast<T>(c * rstd * static_cast<float>(weight[i]) + static_cast<float>(bias[i]));
  }
}

// Most packs per lane the register kernel is instantiated for (d up to 4096 in fp16/bf16, 2048 in fp32).
constexpr int kMaxPacksPerLane = 16;

template <typename T, typename W>
void launch_layer_norm(const T* x, const W* weight, const W* bias, T* out, int64_t rows, int64_t d, float eps) {
  const unsigned int blocks = static_cast<unsigned int>(ceil_div(rows, kRowsPerBlock));
  const auto stream = at::cuda::getCurrentCUDAStream();
  constexpr int kVec = kPack16<T>;
  const int64_t n_packs = d / kVec, per_lane = ceil_div(n_packs, 32);
  const bool vectorized = d % kVec == 0 && per_lane <= kMaxPacksPerLane && is_aligned(x, 16) &&
                          is_aligned(out, 16) && is_aligned(weight, sizeof(W) * kVec) &&
                          is_aligned(bias, sizeof(W) * kVec);
  if (!vectorized) {
    layer_norm_kernel<T, W><<<blocks, 32 * kRowsPerBlock, 0, stream>>>(x, weight, bias, out, rows,
                                                                      static_cast<int>(d), eps);
  } else {
    const int packs = static_cast<int>(n_packs);
    auto launch = [&](auto per_lane_constant) {
      constexpr int kPerLane = decltype(per_lane_constant)::value;
      layer_norm_vec_kernel<T, W, kPerLane><<<blocks, 32 * kRowsPerBlock, 0, stream>>>(x, weight, bias, out, rows,
                                                                                       packs, eps);
    };
    if (per_lane <= 2) {
      launch(std::integral_constant<int, 2>{});
    } else if (per_lane <= 4) {
      launch(std::integral_constant<int, 4>{});
    } else if (per_lane <= 8) {
      launch(std::integral_constant<int, 8>{});
    } else {
      launch(std::integral_constant<int, kMaxPacksPerLane>{});
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  check_layer_norm_args(c10::DeviceType::CUDA, x, weight, bias, eps);
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous();
  auto wc = weight.contiguous(), bc = bias.contiguous();
  auto out = at::empty_like(xc);
  const int64_t d = x.size(-1), rows = x.numel() / d;
  if (rows == 0) return out;
  FASTWHISPER_DISPATCH_FLOATS(x.scalar_type(), "fastwhisper_layer_norm", [&] {
    if (weight.scalar_type() == at::kFloat) {
      launch_layer_norm<scalar_t, float>(xc.data_ptr<scalar_t>(), wc.data_ptr<float>(), bc.data_ptr<float>(),
                                         out.data_ptr<scalar_t>(), rows, d, static_cast<float>(eps));
    } else {
      launch_layer_norm<scalar_t, scalar_t>(xc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(),
                                            bc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), rows, d,
                                            static_cast<float>(eps));
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("layer_norm", &layer_norm); }

}  // namespace fastwhisper::cuda
