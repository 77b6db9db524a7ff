// The whole Whisper audio encoder in one C++ call, on whichever device's kernel table it is given:
//   conv stem -> n_layer x [x += attn(LN(x)); x += MLP(LN(x))] -> ln_post
#include <torch/library.h>

#include <string>

#include "encoder/layout.h"
#include "ops/checks.h"
#include "ops/kernels.h"

namespace fastwhisper {
namespace {

constexpr int64_t kTensorsPerBlock = layout_size(kEncoderBlock);
constexpr int64_t kTensorsPerPackedQkv = layout_size(kEncoderPackedQkv);

// Slots of one block's tensors in block_weights, and of one layer's in packed_qkv.
constexpr int64_t kAttnLnW = slot_of(kEncoderBlock, "attn_ln.weight");
constexpr int64_t kAttnLnB = slot_of(kEncoderBlock, "attn_ln.bias");
constexpr int64_t kQueryW = slot_of(kEncoderBlock, "attn.query.weight");
constexpr int64_t kQueryB = slot_of(kEncoderBlock, "attn.query.bias");
constexpr int64_t kKeyW = slot_of(kEncoderBlock, "attn.key.weight");
constexpr int64_t kValueW = slot_of(kEncoderBlock, "attn.value.weight");
constexpr int64_t kValueB = slot_of(kEncoderBlock, "attn.value.bias");
constexpr int64_t kOutW = slot_of(kEncoderBlock, "attn.out.weight");
constexpr int64_t kOutB = slot_of(kEncoderBlock, "attn.out.bias");
constexpr int64_t kMlpLnW = slot_of(kEncoderBlock, "mlp_ln.weight");
constexpr int64_t kMlpLnB = slot_of(kEncoderBlock, "mlp_ln.bias");
constexpr int64_t kMlp0W = slot_of(kEncoderBlock, "mlp.0.weight");
constexpr int64_t kMlp0B = slot_of(kEncoderBlock, "mlp.0.bias");
constexpr int64_t kMlp2W = slot_of(kEncoderBlock, "mlp.2.weight");
constexpr int64_t kMlp2B = slot_of(kEncoderBlock, "mlp.2.bias");
constexpr int64_t kQkvW = slot_of(kEncoderPackedQkv, "attn.qkv.weight");
constexpr int64_t kQkvB = slot_of(kEncoderPackedQkv, "attn.qkv.bias");

// Every block tensor: on mel's device, of its layout shape, in mel's dtype (LayerNorm parameters: or float32).
void check_block_weights(const at::Tensor& mel, at::TensorList w, int64_t n_state, c10::DeviceType device) {
  TORCH_CHECK(w.size() % kTensorsPerBlock == 0, "fastwhisper.encoder_forward: block_weights must hold ",
              kTensorsPerBlock, " tensors per layer, got ", w.size(), " tensors");
  for (size_t i = 0; i < w.size(); ++i) {
    const ParamSpec& spec = kEncoderBlock[i % kTensorsPerBlock];
    const std::string name = "blocks." + std::to_string(i / kTensorsPerBlock) + "." + spec.name;
    check_on_device("encoder_forward", device, mel, "mel", {{name.c_str(), &w[i]}});
    check_shape("encoder_forward", w[i], name.c_str(), param_shape(spec.shape, n_state));
    if (spec.role == ParamRole::kLayerNorm) {
      check_param_dtype("encoder_forward", w[i], name.c_str(), mel);
    } else {
      check_same_dtype("encoder_forward", w[i], name.c_str(), mel);
    }
  }
}

// packed_qkv: empty, or kEncoderPackedQkv's tensors for each of the n_layer layers.
void check_packed_qkv(const at::Tensor& mel, at::TensorList packed, size_t n_layer, int64_t n_state,
                      c10::DeviceType device) {
  if (packed.empty()) return;
  const size_t per_layer = kTensorsPerPackedQkv;
  TORCH_CHECK(packed.size() == per_layer * n_layer, "fastwhisper.encoder_forward: packed_qkv must be empty or hold ",
              per_layer, " tensors per layer (", per_layer * n_layer, " for ", n_layer, " layers), got ",
              packed.size(), " tensors");
  for (size_t i = 0; i < packed.size(); ++i) {
    const ParamSpec& spec = kEncoderPackedQkv[i % per_layer];
    const std::string name =
        "packed_qkv[" + std::to_string(i) + "] (blocks." + std::to_string(i / per_layer) + "." + spec.name + ")";
    check_on_device("encoder_forward", device, mel, "mel", {{name.c_str(), &packed[i]}});
    check_shape("encoder_forward", packed[i], name.c_str(), param_shape(spec.shape, n_state));
    check_same_dtype("encoder_forward", packed[i], name.c_str(), mel);
  }
}

}  // namespace

at::Tensor encoder_forward_with(const EncoderKernels& kernels, const at::Tensor& mel, const at::Tensor& conv1_weight,
                                const at::Tensor& conv1_bias, const at::Tensor& conv2_weight,
                                const at::Tensor& conv2_bias, const at::Tensor& positional_embedding,
                                at::TensorList block_weights, const at::Tensor& ln_post_weight,
                                const at::Tensor& ln_post_bias, int64_t n_head, at::TensorList packed_qkv) {
  // Validate everything before any work, so a bad layer-30 weight fails before layer 0 runs.
  const auto dims = check_conv_stem_args(kernels.device, mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias,
                                         positional_embedding);
  check_block_weights(mel, block_weights, dims.n_state, kernels.device);
  const size_t n_layer = block_weights.size() / kTensorsPerBlock;
  check_packed_qkv(mel, packed_qkv, n_layer, dims.n_state, kernels.device);
  TORCH_CHECK(n_head >= 1 && dims.n_state % n_head == 0, "fastwhisper.encoder_forward: n_state ", dims.n_state,
              " is not divisible by n_head ", n_head);

  at::Tensor x = kernels.conv_stem(mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias,
                                   positional_embedding);  // [B, n_ctx, n_state]
  const auto& w = block_weights;
  for (size_t layer = 0; layer < n_layer; ++layer) {
    const at::Tensor* p = &w[layer * kTensorsPerBlock];
    at::Tensor h = kernels.layer_norm(x, p[kAttnLnW], p[kAttnLnB], kLayerNormEps);
    at::Tensor q, k, v;
    if (packed_qkv.empty()) {
      q = kernels.linear(h, p[kQueryW], p[kQueryB], std::nullopt, false);
      k = kernels.linear(h, p[kKeyW], std::nullopt, std::nullopt, false);
      v = kernels.linear(h, p[kValueW], p[kValueB], std::nullopt, false);
    } else {  // one GEMM; q, k, v are column slices of its [B, T, 3d] output (attention takes strided rows)
      const at::Tensor* packed = &packed_qkv[layer * kTensorsPerPackedQkv];
      const auto qkv = kernels.linear(h, packed[kQkvW], packed[kQkvB], std::nullopt, false);
      q = qkv.narrow(-1, 0, dims.n_state);
      k = qkv.narrow(-1, dims.n_state, dims.n_state);
      v = qkv.narrow(-1, 2 * dims.n_state, dims.n_state);
    }
    at::Tensor a = kernels.attention(q, k, v, n_head);
    x = kernels.linear(a, p[kOutW], p[kOutB], x, false);  // x + out(attn)
    h = kernels.layer_norm(x, p[kMlpLnW], p[kMlpLnB], kLayerNormEps);
    h = kernels.linear(h, p[kMlp0W], p[kMlp0B], std::nullopt, true);  // gelu(fc1)
    x = kernels.linear(h, p[kMlp2W], p[kMlp2B], x, false);            // x + fc2
  }
  return kernels.layer_norm(x, ln_post_weight, ln_post_bias, kLayerNormEps);
}

namespace {

template <c10::DeviceType kDevice>
at::Tensor encoder_forward(const at::Tensor& mel, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,
                           const at::Tensor& conv2_weight, const at::Tensor& conv2_bias,
                           const at::Tensor& positional_embedding, at::TensorList block_weights,
                           const at::Tensor& ln_post_weight, const at::Tensor& ln_post_bias, int64_t n_head,
                           std::optional<at::TensorList> packed_qkv) {
  static const EncoderKernels kernels = [] {
    if constexpr (kDevice == c10::DeviceType::CPU) {
      return EncoderKernels{kDevice, &cpu::conv_stem, &cpu::layer_norm, &cpu::linear, &cpu::attention};
    } else {
#ifdef FASTWHISPER_WITH_CUDA
      return EncoderKernels{kDevice, &cuda::conv_stem, &cuda::layer_norm, &cuda::linear, &cuda::attention};
#else
      return EncoderKernels{kDevice, nullptr, nullptr, nullptr, nullptr};
#endif
    }
  }();
  return encoder_forward_with(kernels, mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias, positional_embedding,
                              block_weights, ln_post_weight, ln_post_bias, n_head,
                              packed_qkv.value_or(at::TensorList()));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("encoder_forward", &encoder_forward<c10::DeviceType::CPU>); }
#ifdef FASTWHISPER_WITH_CUDA
TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("encoder_forward", &encoder_forward<c10::DeviceType::CUDA>); }
#endif

}  // namespace fastwhisper
