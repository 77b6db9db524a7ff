// The whole Whisper audio encoder in one C++ call, on whichever device's kernel table it is given:
//   conv stem -> n_layer x [x += attn(LN(x)); x += MLP(LN(x))] -> ln_post
#include <torch/library.h>

#include <string>

#include "checks.h"
#include "kernels.h"

namespace fastwhisper {
namespace {

// Names of the 15 tensors of one residual block, in block_weights order (for error messages).
const char* const kBlockParamNames[kTensorsPerBlock] = {
    "attn_ln.weight", "attn_ln.bias",    "attn.query.weight", "attn.query.bias", "attn.key.weight",
    "attn.value.weight", "attn.value.bias", "attn.out.weight",   "attn.out.bias",   "mlp_ln.weight",
    "mlp_ln.bias",    "mlp.0.weight",    "mlp.0.bias",        "mlp.2.weight",    "mlp.2.bias"};

// Expected shape of each block tensor, as a multiple of (n_state, n_mlp).
void check_block_weights(const at::Tensor& mel, at::TensorList w, int64_t n_state, c10::DeviceType device) {
  TORCH_CHECK(w.size() % kTensorsPerBlock == 0, "fastwhisper.encoder_forward: block_weights must hold ",
              kTensorsPerBlock, " tensors per layer, got ", w.size(), " tensors");
  const int64_t n_mlp = 4 * n_state;
  const std::vector<std::vector<int64_t>> shapes = {
      {n_state}, {n_state}, {n_state, n_state}, {n_state}, {n_state, n_state}, {n_state, n_state}, {n_state},
      {n_state, n_state}, {n_state}, {n_state}, {n_state}, {n_mlp, n_state}, {n_mlp}, {n_state, n_mlp}, {n_state}};
  for (size_t i = 0; i < w.size(); ++i) {
    const auto slot = i % kTensorsPerBlock;
    const std::string name = "blocks." + std::to_string(i / kTensorsPerBlock) + "." + kBlockParamNames[slot];
    check_on_device("encoder_forward", device, mel, "mel", {{name.c_str(), &w[i]}});
    check_shape("encoder_forward", w[i], name.c_str(), shapes[slot]);
    const bool is_layer_norm = slot == 0 || slot == 1 || slot == 9 || slot == 10;
    if (is_layer_norm) {
      check_param_dtype("encoder_forward", w[i], name.c_str(), mel);
    } else {
      check_same_dtype("encoder_forward", w[i], name.c_str(), mel);
    }
  }
}

// packed_qkv: empty, or [3d, d] weights and [3d] biases of each of the n_layer layers.
void check_packed_qkv(const at::Tensor& mel, at::TensorList packed, size_t n_layer, int64_t n_state,
                      c10::DeviceType device) {
  if (packed.empty()) return;
  TORCH_CHECK(packed.size() == 2 * n_layer, "fastwhisper.encoder_forward: packed_qkv must be empty or hold 2 tensors ",
              "per layer (", 2 * n_layer, " for ", n_layer, " layers), got ", packed.size(), " tensors");
  for (size_t i = 0; i < packed.size(); ++i) {
    const std::string name = "packed_qkv[" + std::to_string(i) + "] (blocks." + std::to_string(i / 2) +
                             (i % 2 == 0 ? " query|key|value weight)" : " query|key|value bias)");
    check_on_device("encoder_forward", device, mel, "mel", {{name.c_str(), &packed[i]}});
    check_shape("encoder_forward", packed[i], name.c_str(),
                i % 2 == 0 ? std::vector<int64_t>{3 * n_state, n_state} : std::vector<int64_t>{3 * n_state});
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
    at::Tensor h = kernels.layer_norm(x, p[0], p[1], kLayerNormEps);
    at::Tensor q, k, v;
    if (packed_qkv.empty()) {
      q = kernels.linear(h, p[2], p[3], std::nullopt, false);
      k = kernels.linear(h, p[4], std::nullopt, std::nullopt, false);
      v = kernels.linear(h, p[5], p[6], std::nullopt, false);
    } else {  // one GEMM; q, k, v are column slices of its [B, T, 3d] output (attention takes strided rows)
      const auto qkv = kernels.linear(h, packed_qkv[2 * layer], packed_qkv[2 * layer + 1], std::nullopt, false);
      q = qkv.narrow(-1, 0, dims.n_state);
      k = qkv.narrow(-1, dims.n_state, dims.n_state);
      v = qkv.narrow(-1, 2 * dims.n_state, dims.n_state);
    }
    at::Tensor a = kernels.attention(q, k, v, n_head);
    x = kernels.linear(a, p[7], p[8], x, false);  // x + out(attn)
    h = kernels.layer_norm(x, p[9], p[10], kLayerNormEps);
    h = kernels.linear(h, p[11], p[12], std::nullopt, true);  // gelu(fc1)
    x = kernels.linear(h, p[13], p[14], x, false);            // x + fc2
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
