// Argument validation shared by the CPU and CUDA implementations: every user-facing error
// message of the ops comes from here, so both devices reject bad input the same way.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace fastwhisper {

// All tensors on `device` (the device the op was dispatched to), and on the same GPU as `anchor`.
void check_on_device(const char* op, c10::DeviceType device, const at::Tensor& anchor, const char* anchor_name,
                     std::initializer_list<std::pair<const char*, const at::Tensor*>> others);
// x's dtype is one this device computes in: float32 on CPU; float32, float16, bfloat16 on CUDA.
void check_compute_dtype(const char* op, c10::DeviceType device, const at::Tensor& x, const char* name);
// t has exactly x's dtype.
void check_same_dtype(const char* op, const at::Tensor& t, const char* name, const at::Tensor& x);
// t (a LayerNorm weight or a positional embedding) is float32 or x's dtype.
void check_param_dtype(const char* op, const at::Tensor& t, const char* name, const at::Tensor& x);
// t has exactly the given shape.
void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef expected);

struct ConvStemDims {
  int64_t batch, n_mels, n_frames, n_state, n_out;  // n_out = frames after the stride-2 conv
};
ConvStemDims check_conv_stem_args(c10::DeviceType device, const at::Tensor& mel, const at::Tensor& conv1_weight,
                                  const at::Tensor& conv1_bias, const at::Tensor& conv2_weight,
                                  const at::Tensor& conv2_bias, const at::Tensor& positional_embedding);
void check_layer_norm_args(c10::DeviceType device, const at::Tensor& x, const at::Tensor& weight,
                           const at::Tensor& bias, double eps);
void check_linear_args(c10::DeviceType device, const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual);
void check_attention_args(c10::DeviceType device, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          int64_t n_head);

// Rows a decoder_linear call takes at most (one position per decoded sequence): the rows of the step ops,
// as many as one tensor-core mma has (decoder_linear_mma.cu).
constexpr int64_t kDecoderMaxRows = 16;
// decoder_linear's weights and biases as vectors, and the output features (the weights' rows in all).
struct DecoderLinearParts {
  std::vector<at::Tensor> weights;
  std::vector<std::optional<at::Tensor>> biases;
  int64_t out_features;
};
// Checks every argument of decoder_linear (as the op receives them) and returns its parts.
DecoderLinearParts check_decoder_linear_args(c10::DeviceType device, const at::Tensor& x,
                                             const std::optional<at::Tensor>& ln_weight,
                                             const std::optional<at::Tensor>& ln_bias, at::TensorList weights,
                                             const c10::List<std::optional<at::Tensor>>& biases,
                                             const std::optional<at::Tensor>& residual);
void check_decoder_embedding_args(c10::DeviceType device, const at::Tensor& token_embedding,
                                  const at::Tensor& positional_embedding, const at::Tensor& tokens,
                                  const at::Tensor& position, at::ScalarType dtype);
void check_decoder_self_attention_args(c10::DeviceType device, const at::Tensor& qkv, const at::Tensor& k_cache,
                                       const at::Tensor& v_cache, const at::Tensor& position, int64_t n_head);
void check_decoder_cross_attention_args(c10::DeviceType device, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, int64_t n_head);
void check_decoder_cross_query_attention_args(c10::DeviceType device, const at::Tensor& x, const at::Tensor& ln_weight,
                                              const at::Tensor& ln_bias, const at::Tensor& q_weight,
                                              const std::optional<at::Tensor>& q_bias, const at::Tensor& k,
                                              const at::Tensor& v, int64_t n_head);
void check_decoder_timestamp_rules_args(c10::DeviceType device, const at::Tensor& logits, const at::Tensor& tokens,
                                        int64_t sample_begin, int64_t timestamp_begin, int64_t eot,
                                        int64_t no_timestamps, int64_t max_initial_timestamp_index);
void check_decoder_greedy_update_args(c10::DeviceType device, const at::Tensor& logits, const at::Tensor& tokens,
                                      const at::Tensor& sum_logprobs, const at::Tensor& workspace, int64_t length,
                                      int64_t eot, const std::optional<at::Tensor>& suppress);

}  // namespace fastwhisper
