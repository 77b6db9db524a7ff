// CUDA conv stem: cuDNN convolutions through ATen, and two fused epilogues:
//   conv1: bias + GELU in place on [B, C, T];
//   conv2: bias + GELU + transpose to [B, T, C] + positional embedding, through a shared-memory tile.
#include <torch/library.h>

#include "checks.h"
#include "gelu.h"
#include "kernels.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kTile = 32;

template <typename T>
__global__ void bias_gelu_channels_kernel(T* __restrict__ y,           // [B, C, T], in place
                                          const T* __restrict__ bias,  // [C]
                                          int64_t total, int64_t channels, int64_t frames) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (i / frames) % channels;
    y[i] = static_cast<T>(gelu(static_cast<float>(y[i]) + static_cast<float>(bias[c])));
  }
}

// grid (ceil(T/32), ceil(C/32), B), block (32, 8)
template <typename T, typename P>
__global__ void stem_epilogue_kernel(const T* __restrict__ y,     // [B, C, T]
                                     const T* __restrict__ bias,  // [C]
                                     const P* __restrict__ pos,   // [T, C]
                                     T* __restrict__ out,         // [B, T, C]
                                     int channels, int frames) {
  __shared__ float tile[kTile][kTile + 1];
  const int b = blockIdx.z;
  const int t0 = blockIdx.x * kTile, c0 = blockIdx.y * kTile;
  const T* yb = y + static_cast<int64_t>(b) * channels * frames;
  // read rows of y (coalesced along T)
  for (int r = threadIdx.y; r < kTile; r += blockDim.y) {
    const int c = c0 + r, t = t0 + threadIdx.x;
    if (c < channels && t < frames) {
      tile[r][threadIdx.x] = gelu(static_cast<float>(yb[static_cast<int64_t>(c) * frames + t]) +
                                  static_cast<float>(bias[c]));
    }
  }
  __syncthreads();
  // write rows of out (coalesced along C)
  T* ob = out + static_cast<int64_t>(b) * frames * channels;
  for (int r = threadIdx.y; r < kTile; r += blockDim.y) {
    const int t = t0 + r, c = c0 + threadIdx.x;
    if (c < channels && t < frames) {
      const int64_t idx = static_cast<int64_t>(t) * channels + c;
      ob[idx] = static_cast<T>(tile[threadIdx.x][r] + static_cast<float>(pos[idx]));
    }
  }
}

}  // namespace

at::Tensor conv_stem(const at::Tensor& mel, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,
                     const at::Tensor& conv2_weight, const at::Tensor& conv2_bias,
                     const at::Tensor& positional_embedding) {
  const auto d = check_conv_stem_args(c10::DeviceType::CUDA, mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias,
                                      positional_embedding);
  const c10::cuda::CUDAGuard guard(mel.device());
  auto out = at::empty({d.batch, d.n_out, d.n_state}, mel.options());
  if (d.batch == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  auto b1 = conv1_bias.contiguous(), b2 = conv2_bias.contiguous();
  auto pos = positional_embedding.contiguous();

  auto h = at::conv1d(mel, conv1_weight, {}, /*stride=*/1, /*padding=*/1).contiguous();  // [B, C, T]
  constexpr int kThreads = 256;
  FASTWHISPER_DISPATCH_FLOATS(mel.scalar_type(), "fastwhisper_conv1_epilogue", [&] {
    bias_gelu_channels_kernel<scalar_t><<<elementwise_blocks(h.numel(), kThreads), kThreads, 0, stream>>>(
        h.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(), h.numel(), d.n_state, d.n_frames);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  auto y = at::conv1d(h, conv2_weight, {}, /*stride=*/2, /*padding=*/1).contiguous();  // [B, C, T_out]
  const dim3 grid(static_cast<unsigned int>(ceil_div(d.n_out, kTile)),
                  static_cast<unsigned int>(ceil_div(d.n_state, kTile)), static_cast<unsigned int>(d.batch));
  const dim3 block(kTile, 8);
  FASTWHISPER_DISPATCH_FLOATS(mel.scalar_type(), "fastwhisper_conv2_epilogue", [&] {
    if (pos.scalar_type() == at::kFloat) {
      stem_epilogue_kernel<scalar_t, float><<<grid, block, 0, stream>>>(
          y.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), pos.data_ptr<float>(), out.data_ptr<scalar_t>(),
          static_cast<int>(d.n_state), static_cast<int>(d.n_out));
    } else {
      stem_epilogue_kernel<scalar_t, scalar_t><<<grid, block, 0, stream>>>(
          y.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), pos.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
          static_cast<int>(d.n_state), static_cast<int>(d.n_out));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("conv_stem", &conv_stem); }

}  // namespace fastwhisper::cuda
