// CUDA conv stem as two GEMMs on time-major activations, so nothing is ever transposed to channel-major:
//   mel [B, M, T] -> time-major [B, T, M] (one ATen copy)
//   conv1: columns [B*T, M*3] -> linear with bias (cuBLASLt epilogue)                  -> h [B*T, C]
//   conv2: columns of gelu(h) [B*T2, C*3] -> linear with bias                            -> y [B*T2, C]
//   out = gelu(y) + positional_embedding                                                 -> [B, T2, C]
// A column row holds, for each input channel c, its 3 taps (c*3 + j): the layout of a conv weight
// [C_out, C_in, 3] viewed as [C_out, C_in*3], so the weights are used as they are. cuDNN's convolutions
// on channel-major tensors spent more time transposing (NCHW <-> NHWC, weights included, on every call)
// than convolving.
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/gelu.h"
#include "ops/kernels.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vec.cuh"

namespace fastwhisper::cuda {
namespace {

// One thread per (output frame, pack of kVec channels): reads the pack at the 3 input frames
// stride*t - 1 + j (zero outside [0, t_in): the convolution's padding of 1), applies GELU if asked,
// and writes the 3*kVec column entries c*3 + j, which are contiguous.
template <typename T, int kVec>
__global__ void conv_columns_kernel(const T* __restrict__ in,  // [B, t_in, channels] time-major
                                    T* __restrict__ cols,      // [B * t_out, channels * 3]
                                    int64_t t_in, int64_t t_out, int channels, int stride, bool apply_gelu) {
  const int n_packs = channels / kVec;
  const int64_t b = blockIdx.y;  // grid: x strides over one item's (frame, pack) pairs, y over the batch
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < t_out * n_packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / n_packs;
    const int pack = static_cast<int>(i - t * n_packs);
    float taps[3][kVec];
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const int64_t src = stride * t - 1 + j;
      if (src >= 0 && src < t_in) {
        const auto p = reinterpret_cast<const Pack<T, kVec>*>(in + (b * t_in + src) * channels)[pack];
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          const float f = static_cast<float>(p.v[e]);
          taps[j][e] = apply_gelu ? gelu(f) : f;
        }
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) taps[j][e] = 0.f;
      }
    }
    Pack<T, kVec> out[3];  // element e*3 + j of the 3*kVec entries: channel pack*kVec + e, tap j
#pragma unroll
    for (int q = 0; q < 3 * kVec; ++q) out[q / kVec].v[q % kVec] = static_cast<T>(taps[q % 3][q / 3]);
    auto* row = reinterpret_cast<Pack<T, kVec>*>(cols + (b * t_out + t) * channels * 3);
#pragma unroll
    for (int s = 0; s < 3; ++s) row[3 * pack + s] = out[s];
  }
}

// y = gelu(y) + pos[t], in place, kVec elements per access; pos is shared by every batch item.
template <typename T, typename P, int kVec>
__global__ void gelu_add_positions_kernel(T* __restrict__ y,          // [B, t_out, channels], in place
                                          const P* __restrict__ pos,  // [t_out, channels]
                                          int64_t total_packs, int64_t packs_per_item) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total_packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    auto v = reinterpret_cast<Pack<T, kVec>*>(y)[i];
    const auto p = reinterpret_cast<const Pack<P, kVec>*>(pos)[i % packs_per_item];
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      v.v[e] = static_cast<T>(gelu(static_cast<float>(v.v[e])) + static_cast<float>(p.v[e]));
    }
    reinterpret_cast<Pack<T, kVec>*>(y)[i] = v;
  }
}

constexpr int kThreads = 256;

// in [B, t_in, channels] contiguous -> columns [B * t_out, channels * 3]
template <typename T>
at::Tensor conv_columns(const at::Tensor& in, int64_t t_out, int stride, bool apply_gelu) {
  const int64_t batch = in.size(0), t_in = in.size(1), channels = in.size(2);
  auto cols = at::empty({batch * t_out, channels * 3}, in.options());
  auto launch = [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    const int64_t per_item = t_out * (channels / kVec);
    const dim3 grid(elementwise_blocks(per_item, kThreads), static_cast<unsigned int>(batch));
    conv_columns_kernel<T, kVec><<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        in.data_ptr<T>(), cols.data_ptr<T>(), t_in, t_out, static_cast<int>(channels), stride, apply_gelu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  with_pack_width<T>(channels % kPack16<T> == 0 && is_aligned(in.data_ptr(), 16) && is_aligned(cols.data_ptr(), 16),
                     launch);
  return cols;
}

template <typename T, typename P>
void gelu_add_positions(const at::Tensor& y, const at::Tensor& pos) {  // y [B, t_out, C], pos [t_out, C]
  auto launch = [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    const int64_t total = y.numel() / kVec, per_item = pos.numel() / kVec;
    gelu_add_positions_kernel<T, P, kVec>
        <<<elementwise_blocks(total, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            y.data_ptr<T>(), pos.data_ptr<P>(), total, per_item);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  with_pack_width<T>(y.size(-1) % kPack16<T> == 0 && is_aligned(y.data_ptr(), 16) &&
                         is_aligned(pos.data_ptr(), sizeof(P) * kPack16<T>),
                     launch);
}

}  // namespace

at::Tensor conv_stem(const at::Tensor& mel, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,
                     const at::Tensor& conv2_weight, const at::Tensor& conv2_bias,
                     const at::Tensor& positional_embedding) {
  const auto d = check_conv_stem_args(c10::DeviceType::CUDA, mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias,
                                      positional_embedding);
  const c10::cuda::CUDAGuard guard(mel.device());
  if (d.batch == 0) return at::empty({d.batch, d.n_out, d.n_state}, mel.options());
  const auto mel_t = mel.transpose(1, 2).contiguous();  // [B, T, M]
  const auto w1 = conv1_weight.reshape({d.n_state, d.n_mels * 3});  // [C, M*3]: the weight as stored
  const auto w2 = conv2_weight.reshape({d.n_state, d.n_state * 3});  // [C, C*3]
  const auto pos = positional_embedding.contiguous();
  at::Tensor y;
  FASTWHISPER_DISPATCH_FLOATS(mel.scalar_type(), "fastwhisper_conv_stem", [&] {
    const auto h = linear(conv_columns<scalar_t>(mel_t, d.n_frames, /*stride=*/1, /*apply_gelu=*/false), w1,
                          conv1_bias, std::nullopt, false);  // [B*T, C]: conv1 + bias
    y = linear(conv_columns<scalar_t>(h.view({d.batch, d.n_frames, d.n_state}), d.n_out, /*stride=*/2,
                                      /*apply_gelu=*/true),
               w2, conv2_bias, std::nullopt, false)
            .view({d.batch, d.n_out, d.n_state});  // conv2(gelu(h)) + bias
    if (pos.scalar_type() == at::kFloat) {
      gelu_add_positions<scalar_t, float>(y, pos);
    } else {
      gelu_add_positions<scalar_t, scalar_t>(y, pos);
    }
  });
  return y;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("conv_stem", &conv_stem); }

}  // namespace fastwhisper::cuda
