// Declarations of every per-device op implementation, and the kernel table the encoder runs on.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace fastwhisper {

// LayerNorm epsilon of every Whisper LayerNorm (torch.nn.LayerNorm's default).
constexpr double kLayerNormEps = 1e-5;

using ConvStemFn = at::Tensor (*)(const at::Tensor& mel, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,
                                  const at::Tensor& conv2_weight, const at::Tensor& conv2_bias,
                                  const at::Tensor& positional_embedding);
using LayerNormFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);
using LinearFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& residual, bool gelu);
using AttentionFn = at::Tensor (*)(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head);

// The ops one device provides; encoder_forward runs on whichever table it is given.
struct EncoderKernels {
  c10::DeviceType device;
  ConvStemFn conv_stem;
  LayerNormFn layer_norm;
  LinearFn linear;
  AttentionFn attention;
};

at::Tensor encoder_forward_with(const EncoderKernels& kernels, const at::Tensor& mel, const at::Tensor& conv1_weight,
                                const at::Tensor& conv1_bias, const at::Tensor& conv2_weight,
                                const at::Tensor& conv2_bias, const at::Tensor& positional_embedding,
                                at::TensorList block_weights, const at::Tensor& ln_post_weight,
                                const at::Tensor& ln_post_bias, int64_t n_head, at::TensorList packed_qkv);

#define FASTWHISPER_DECLARE_DEVICE_OPS                                                                            \
  at::Tensor conv_stem(const at::Tensor& mel, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,       \
                       const at::Tensor& conv2_weight, const at::Tensor& conv2_bias,                              \
                       const at::Tensor& positional_embedding);                                                   \
  at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);        \
  at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,         \
                    const std::optional<at::Tensor>& residual, bool gelu);                                        \
  at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head);

namespace cpu {
FASTWHISPER_DECLARE_DEVICE_OPS
}
namespace cuda {
FASTWHISPER_DECLARE_DEVICE_OPS
}

}  // namespace fastwhisper
