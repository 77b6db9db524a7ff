#include "ops/checks.h"

#include <limits>
#include <sstream>

#include "ops/decoder_step_ops.h"
#include "ops/greedy_workspace.h"

namespace fastwhisper {
namespace {
std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << s;
  return o.str();
}
}  // namespace

void check_on_device(const char* op, c10::DeviceType device, const at::Tensor& anchor, const char* anchor_name,
                     std::initializer_list<std::pair<const char*, const at::Tensor*>> others) {
  TORCH_CHECK(anchor.defined(), "fastwhisper.", op, ": ", anchor_name, " is an undefined tensor");
  TORCH_CHECK(anchor.device().type() == device, "fastwhisper.", op, ": expected ", anchor_name, " on ",
              c10::DeviceTypeName(device, true), " (where the other inputs are), got ", anchor.device());
  for (const auto& [name, t] : others) {
    TORCH_CHECK(t->defined(), "fastwhisper.", op, ": ", name, " is an undefined tensor");
    TORCH_CHECK(t->device() == anchor.device(), "fastwhisper.", op, ": all inputs must be on one device; ",
                anchor_name, " is on ", anchor.device(), " but ", name, " is on ", t->device());
  }
}

void check_compute_dtype(const char* op, c10::DeviceType device, const at::Tensor& x, const char* name) {
  const auto dt = x.scalar_type();
  if (device == c10::DeviceType::CPU) {
    TORCH_CHECK(dt == at::kFloat, "fastwhisper.", op, " on CPU supports float32 only, got ", name, " of dtype ", dt,
                "; convert with .float() or run on CUDA");
  } else {
    TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, "fastwhisper.", op,
                " supports float32, float16 and bfloat16, got ", name, " of dtype ", dt);
  }
}

void check_same_dtype(const char* op, const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "fastwhisper.", op, ": ", name, " must have the input's dtype ",
              x.scalar_type(), ", got ", t.scalar_type());
}

void check_param_dtype(const char* op, const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == x.scalar_type(), "fastwhisper.", op, ": ", name,
              " must be float32 or the input's dtype ", x.scalar_type(), ", got ", t.scalar_type());
}

void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, "fastwhisper.", op, ": ", name, " must have shape ", shape_str(expected),
              ", got ", shape_str(t.sizes()));
}

ConvStemDims check_conv_stem_args(c10::DeviceType device, const at::Tensor& mel, const at::Tensor& conv1_weight,
                                  const at::Tensor& conv1_bias, const at::Tensor& conv2_weight,
                                  const at::Tensor& conv2_bias, const at::Tensor& positional_embedding) {
  const char* op = "conv_stem";
  check_on_device(op, device, mel, "mel",
                  {{"conv1_weight", &conv1_weight}, {"conv1_bias", &conv1_bias}, {"conv2_weight", &conv2_weight},
                   {"conv2_bias", &conv2_bias}, {"positional_embedding", &positional_embedding}});
  check_compute_dtype(op, device, mel, "mel");
  TORCH_CHECK(mel.dim() == 3, "fastwhisper.conv_stem: mel must be 3-D [batch, n_mels, n_frames], got shape ",
              shape_str(mel.sizes()));
  TORCH_CHECK(conv1_weight.dim() == 3, "fastwhisper.conv_stem: conv1_weight must be 3-D [n_state, n_mels, 3], got ",
              shape_str(conv1_weight.sizes()));
  ConvStemDims d{mel.size(0), mel.size(1), mel.size(2), conv1_weight.size(0), 0};
  TORCH_CHECK(d.n_frames >= 1, "fastwhisper.conv_stem: mel has no frames (shape ", shape_str(mel.sizes()), ")");
  TORCH_CHECK(conv1_weight.size(1) == d.n_mels && conv1_weight.size(2) == 3,
              "fastwhisper.conv_stem: conv1_weight must have shape [n_state, ", d.n_mels, ", 3] for a mel with ",
              d.n_mels, " mel bins, got ", shape_str(conv1_weight.sizes()));
  d.n_out = (d.n_frames - 1) / 2 + 1;
  check_shape(op, conv1_bias, "conv1_bias", {d.n_state});
  check_shape(op, conv2_weight, "conv2_weight", {d.n_state, d.n_state, 3});
  check_shape(op, conv2_bias, "conv2_bias", {d.n_state});
  TORCH_CHECK(positional_embedding.dim() == 2 && positional_embedding.size(0) == d.n_out &&
                  positional_embedding.size(1) == d.n_state,
              "fastwhisper.conv_stem: positional_embedding must have shape [", d.n_out, ", ", d.n_state, "] for ",
              d.n_frames, " mel frames (incorrect audio shape?), got ", shape_str(positional_embedding.sizes()));
  check_same_dtype(op, conv1_weight, "conv1_weight", mel);
  check_same_dtype(op, conv1_bias, "conv1_bias", mel);
  check_same_dtype(op, conv2_weight, "conv2_weight", mel);
  check_same_dtype(op, conv2_bias, "conv2_bias", mel);
  check_param_dtype(op, positional_embedding, "positional_embedding", mel);
  return d;
}

void check_layer_norm_args(c10::DeviceType device, const at::Tensor& x, const at::Tensor& weight,
                           const at::Tensor& bias, double eps) {
  const char* op = "layer_norm";
  check_on_device(op, device, x, "x", {{"weight", &weight}, {"bias", &bias}});
  check_compute_dtype(op, device, x, "x");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, "fastwhisper.layer_norm: x must have a non-empty last dimension, got ",
              shape_str(x.sizes()));
  check_shape(op, weight, "weight", {x.size(-1)});
  check_shape(op, bias, "bias", {x.size(-1)});
  check_param_dtype(op, weight, "weight", x);
  check_param_dtype(op, bias, "bias", x);
  TORCH_CHECK(weight.scalar_type() == bias.scalar_type(), "fastwhisper.layer_norm: weight and bias must share a dtype, got ",
              weight.scalar_type(), " and ", bias.scalar_type());
  TORCH_CHECK(eps > 0, "fastwhisper.layer_norm: eps must be positive, got ", eps);
}

void check_linear_args(c10::DeviceType device, const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual) {
  const char* op = "linear";
  check_on_device(op, device, x, "x", {{"weight", &weight}});
  check_compute_dtype(op, device, x, "x");
  TORCH_CHECK(x.dim() >= 1, "fastwhisper.linear: x must have at least 1 dimension");
  TORCH_CHECK(weight.dim() == 2, "fastwhisper.linear: weight must be 2-D [out_features, in_features], got ",
              shape_str(weight.sizes()));
  TORCH_CHECK(weight.size(1) == x.size(-1), "fastwhisper.linear: x has ", x.size(-1),
              " features in its last dimension but weight expects ", weight.size(1), " (weight shape ",
              shape_str(weight.sizes()), ")");
  check_same_dtype(op, weight, "weight", x);
  if (bias.has_value()) {
    check_on_device(op, device, x, "x", {{"bias", &*bias}});
    check_shape(op, *bias, "bias", {weight.size(0)});
    check_same_dtype(op, *bias, "bias", x);
  }
  if (residual.has_value()) {
    check_on_device(op, device, x, "x", {{"residual", &*residual}});
    auto out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    check_shape(op, *residual, "residual", out_shape);
    check_same_dtype(op, *residual, "residual", x);
  }
}

void check_attention_args(c10::DeviceType device, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          int64_t n_head) {
  const char* op = "attention";
  check_on_device(op, device, q, "q", {{"k", &k}, {"v", &v}});
  check_compute_dtype(op, device, q, "q");
  TORCH_CHECK(q.dim() == 3, "fastwhisper.attention: q must be 3-D [batch, n_ctx, n_state], got ", shape_str(q.sizes()));
  TORCH_CHECK(k.dim() == 3 && v.dim() == 3, "fastwhisper.attention: k and v must be 3-D [batch, n_ctx, n_state], got ",
              shape_str(k.sizes()), " and ", shape_str(v.sizes()));
  TORCH_CHECK(n_head >= 1, "fastwhisper.attention: n_head must be positive, got ", n_head);
  TORCH_CHECK(q.size(2) % n_head == 0, "fastwhisper.attention: n_state ", q.size(2), " is not divisible by n_head ",
              n_head);
  TORCH_CHECK(k.size(1) >= 1, "fastwhisper.attention: k and v need at least one position");
  check_shape(op, k, "k", {q.size(0), k.size(1), q.size(2)});
  check_shape(op, v, "v", k.sizes());
  check_same_dtype(op, k, "k", q);
  check_same_dtype(op, v, "v", q);
}

DecoderLinearParts check_decoder_linear_args(c10::DeviceType device, const at::Tensor& x,
                                             const std::optional<at::Tensor>& ln_weight,
                                             const std::optional<at::Tensor>& ln_bias, at::TensorList weight_list,
                                             const c10::List<std::optional<at::Tensor>>& bias_list,
                                             const std::optional<at::Tensor>& residual) {
  const char* op = "decoder_linear";
  DecoderLinearParts parts{weight_list.vec(), {bias_list.begin(), bias_list.end()}, 0};
  const auto& weights = parts.weights;
  const auto& biases = parts.biases;
  check_on_device(op, device, x, "x", {});
  check_compute_dtype(op, device, x, "x");
  TORCH_CHECK(x.dim() == 2 && x.size(0) >= 1 && x.size(0) <= kDecoderMaxRows && x.size(1) >= 1,
              "fastwhisper.decoder_linear: x must be 2-D [rows, features] with 1 to ", kDecoderMaxRows,
              " rows, got ", shape_str(x.sizes()));
  TORCH_CHECK(x.is_contiguous(), "fastwhisper.decoder_linear: x must be contiguous");
  const int64_t k = x.size(1);
  TORCH_CHECK(ln_weight.has_value() == ln_bias.has_value(),
              "fastwhisper.decoder_linear: give both ln_weight and ln_bias, or neither");
  if (ln_weight.has_value()) {
    check_on_device(op, device, x, "x", {{"ln_weight", &*ln_weight}, {"ln_bias", &*ln_bias}});
    for (const auto* p : {&*ln_weight, &*ln_bias}) {
      TORCH_CHECK(p->scalar_type() == at::kFloat && p->is_contiguous(),
                  "fastwhisper.decoder_linear: ln_weight and ln_bias must be contiguous float32, got ", p->scalar_type());
      check_shape(op, *p, "ln_weight/ln_bias", {k});
    }
  }
  TORCH_CHECK(!weights.empty() && weights.size() <= 3,
              "fastwhisper.decoder_linear: weights must hold 1 to 3 tensors, got ", weights.size());
  TORCH_CHECK(biases.size() == weights.size(), "fastwhisper.decoder_linear: biases must have one entry (or None) per "
              "weight: ", weights.size(), " weights, ", biases.size(), " biases");
  int64_t n = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    check_on_device(op, device, x, "x", {{"weights[i]", &w}});
    TORCH_CHECK(w.dim() == 2 && w.size(1) == k && w.size(0) >= 1 && w.is_contiguous(),
                "fastwhisper.decoder_linear: weights[", i, "] must be contiguous [out_features, ", k, "], got ",
                shape_str(w.sizes()));
    check_same_dtype(op, w, "weights[i]", x);
    if (biases[i].has_value()) {
      check_on_device(op, device, x, "x", {{"biases[i]", &*biases[i]}});
      check_shape(op, *biases[i], "biases[i]", {w.size(0)});
      check_same_dtype(op, *biases[i], "biases[i]", x);
      TORCH_CHECK(biases[i]->is_contiguous(), "fastwhisper.decoder_linear: biases must be contiguous");
    }
    n += w.size(0);
  }
  if (residual.has_value()) {
    check_on_device(op, device, x, "x", {{"residual", &*residual}});
    check_shape(op, *residual, "residual", {x.size(0), n});
    check_same_dtype(op, *residual, "residual", x);
    TORCH_CHECK(residual->is_contiguous(), "fastwhisper.decoder_linear: residual must be contiguous");
  }
  parts.out_features = n;
  return parts;
}

void check_decoder_embedding_args(c10::DeviceType device, const at::Tensor& token_embedding,
                                  const at::Tensor& positional_embedding, const at::Tensor& tokens,
                                  const at::Tensor& position, at::ScalarType dtype) {
  const char* op = "decoder_embedding";
  check_on_device(op, device, token_embedding, "token_embedding",
                  {{"positional_embedding", &positional_embedding}, {"tokens", &tokens}, {"position", &position}});
  TORCH_CHECK(token_embedding.dim() == 2 && token_embedding.size(0) >= 1,
              "fastwhisper.decoder_embedding: token_embedding must be 2-D [n_vocab, n_state], got ",
              shape_str(token_embedding.sizes()));
  TORCH_CHECK(positional_embedding.dim() == 2 && positional_embedding.size(0) >= 1 &&
                  positional_embedding.size(1) == token_embedding.size(1),
              "fastwhisper.decoder_embedding: positional_embedding must be 2-D [n_ctx, ", token_embedding.size(1),
              "], got ", shape_str(positional_embedding.sizes()));
  for (const auto* t : {&token_embedding, &positional_embedding}) {
    TORCH_CHECK(at::isFloatingType(t->scalar_type()) && t->scalar_type() != at::kDouble,
                "fastwhisper.decoder_embedding: the embeddings must be float32, float16 or bfloat16, got ",
                t->scalar_type());
  }
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "fastwhisper.decoder_embedding: dtype must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(tokens.scalar_type() == at::kLong && tokens.dim() == 2 && tokens.size(1) == 1,
              "fastwhisper.decoder_embedding: tokens must be an int64 tensor of shape [rows, 1], got ",
              tokens.scalar_type(), " of shape ", shape_str(tokens.sizes()));
  TORCH_CHECK(position.scalar_type() == at::kLong && position.numel() == 1,
              "fastwhisper.decoder_embedding: position must be a one-element int64 tensor, got ",
              position.scalar_type(), " of shape ", shape_str(position.sizes()));
}

void check_decoder_self_attention_args(c10::DeviceType device, const at::Tensor& qkv, const at::Tensor& k_cache,
                                       const at::Tensor& v_cache, const at::Tensor& position, int64_t n_head) {
  const char* op = "decoder_self_attention";
  check_on_device(op, device, qkv, "qkv", {{"k_cache", &k_cache}, {"v_cache", &v_cache}, {"position", &position}});
  check_compute_dtype(op, device, qkv, "qkv");
  TORCH_CHECK(k_cache.dim() == 3 && k_cache.size(1) >= 1,
              "fastwhisper.decoder_self_attention: k_cache must be 3-D [rows, n_ctx, n_state], got ",
              shape_str(k_cache.sizes()));
  const int64_t rows = k_cache.size(0), d = k_cache.size(2);
  check_shape(op, qkv, "qkv", {rows, 3 * d});
  check_shape(op, v_cache, "v_cache", k_cache.sizes());
  check_same_dtype(op, k_cache, "k_cache", qkv);
  check_same_dtype(op, v_cache, "v_cache", qkv);
  TORCH_CHECK(qkv.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(),
              "fastwhisper.decoder_self_attention: qkv, k_cache and v_cache must be contiguous");
  TORCH_CHECK(position.scalar_type() == at::kLong && position.numel() == 1,
              "fastwhisper.decoder_self_attention: position must be a one-element int64 tensor, got ",
              position.scalar_type(), " of shape ", shape_str(position.sizes()));
  TORCH_CHECK(n_head >= 1 && d % n_head == 0, "fastwhisper.decoder_self_attention: n_state ", d,
              " is not divisible by n_head ", n_head);
}

void check_decoder_cross_attention_args(c10::DeviceType device, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, int64_t n_head) {
  const char* op = "decoder_cross_attention";
  check_on_device(op, device, q, "q", {{"k", &k}, {"v", &v}});
  check_compute_dtype(op, device, q, "q");
  TORCH_CHECK(q.dim() == 2 && q.size(0) >= 1 && q.size(1) >= 1,
              "fastwhisper.decoder_cross_attention: q must be 2-D [rows, n_state], got ", shape_str(q.sizes()));
  const int64_t rows = q.size(0), d = q.size(1);
  TORCH_CHECK(k.dim() == 3 && k.size(0) >= 1 && k.size(1) >= 1 && k.size(2) == d,
              "fastwhisper.decoder_cross_attention: k must be 3-D [windows, n_audio_ctx, ", d, "], got ",
              shape_str(k.sizes()));
  check_shape(op, v, "v", k.sizes());
  TORCH_CHECK(rows % k.size(0) == 0, "fastwhisper.decoder_cross_attention: the ", rows,
              " rows of q must be a multiple of the ", k.size(0), " audio windows of k (rows per window)");
  check_same_dtype(op, k, "k", q);
  check_same_dtype(op, v, "v", q);
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(),
              "fastwhisper.decoder_cross_attention: q, k and v must be contiguous");
  TORCH_CHECK(n_head >= 1 && d % n_head == 0, "fastwhisper.decoder_cross_attention: n_state ", d,
              " is not divisible by n_head ", n_head);
}

void check_decoder_cross_query_attention_args(c10::DeviceType device, const at::Tensor& x, const at::Tensor& ln_weight,
                                              const at::Tensor& ln_bias, const at::Tensor& q_weight,
                                              const std::optional<at::Tensor>& q_bias, const at::Tensor& k,
                                              const at::Tensor& v, int64_t n_head) {
  // the query projection as decoder_linear takes it, then the attention with x in q's place (same shape)
  check_decoder_linear_args(device, x, ln_weight, ln_bias, {q_weight}, bias_list({q_bias}), std::nullopt);
  TORCH_CHECK(q_weight.size(0) == x.size(1), "fastwhisper.decoder_cross_query_attention: q_weight must be [",
              x.size(1), ", ", x.size(1), "] (the query keeps x's width), got ", shape_str(q_weight.sizes()));
  check_decoder_cross_attention_args(device, x, k, v, n_head);
}

void check_decoder_greedy_update_args(c10::DeviceType device, const at::Tensor& logits, const at::Tensor& tokens,
                                      const at::Tensor& sum_logprobs, const at::Tensor& workspace, int64_t length,
                                      int64_t eot, const std::optional<at::Tensor>& suppress) {
  const char* op = "decoder_greedy_update";
  check_on_device(op, device, logits, "logits",
                  {{"tokens", &tokens}, {"sum_logprobs", &sum_logprobs}, {"workspace", &workspace}});
  if (suppress.has_value()) check_on_device(op, device, logits, "logits", {{"suppress", &*suppress}});
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) >= 1 && logits.size(1) >= 1 && logits.scalar_type() == at::kFloat,
              "fastwhisper.decoder_greedy_update: logits must be a 2-D float32 tensor [rows, n_vocab], got ",
              logits.scalar_type(), " of shape ", shape_str(logits.sizes()));
  TORCH_CHECK(logits.size(1) < std::numeric_limits<int32_t>::max() && logits.size(0) <= 65535,
              "fastwhisper.decoder_greedy_update: at most 65535 rows of fewer than 2^31 - 1 logits, got shape ",
              shape_str(logits.sizes()));
  const int64_t rows = logits.size(0);
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == rows && tokens.scalar_type() == at::kLong && tokens.is_contiguous(),
              "fastwhisper.decoder_greedy_update: tokens must be a contiguous int64 tensor [", rows,
              ", capacity], got ", tokens.scalar_type(), " of shape ", shape_str(tokens.sizes()));
  TORCH_CHECK(length >= 1 && length < tokens.size(1), "fastwhisper.decoder_greedy_update: length must be in [1, ",
              tokens.size(1), ") (a token so far, and room for the next), got ", length);
  TORCH_CHECK(sum_logprobs.dim() == 1 && sum_logprobs.size(0) == rows && sum_logprobs.scalar_type() == at::kFloat &&
                  sum_logprobs.is_contiguous(),
              "fastwhisper.decoder_greedy_update: sum_logprobs must be a contiguous float32 tensor [", rows, "], got ",
              sum_logprobs.scalar_type(), " of shape ", shape_str(sum_logprobs.sizes()));
  TORCH_CHECK(eot >= 0 && eot < logits.size(1), "fastwhisper.decoder_greedy_update: eot must be a token id in [0, ",
              logits.size(1), "), got ", eot);
  const int64_t need = greedy_workspace_numel(rows);
  TORCH_CHECK(workspace.dim() == 1 && workspace.scalar_type() == at::kInt && workspace.is_contiguous() &&
                  workspace.numel() >= need,
              "fastwhisper.decoder_greedy_update: workspace must be a contiguous int32 tensor of at least ", need,
              " elements for ", rows, " rows (fastwhisper.ops.decoder_greedy_workspace makes one), got ",
              workspace.scalar_type(), " of shape ", shape_str(workspace.sizes()));
  TORCH_CHECK(!suppress.has_value() || (suppress->dim() == 1 && suppress->size(0) == logits.size(1) &&
                                        suppress->scalar_type() == at::kBool && suppress->is_contiguous()),
              "fastwhisper.decoder_greedy_update: suppress must be a contiguous bool tensor [", logits.size(1),
              "] (one flag per token), got ", suppress.has_value() ? suppress->scalar_type() : at::kBool, " of shape ",
              suppress.has_value() ? shape_str(suppress->sizes()) : std::string("[]"));
}

void check_decoder_timestamp_rules_args(c10::DeviceType device, const at::Tensor& logits, const at::Tensor& tokens,
                                        int64_t sample_begin, int64_t timestamp_begin, int64_t eot,
                                        int64_t no_timestamps, int64_t max_initial_timestamp_index) {
  const char* op = "decoder_timestamp_rules";
  check_on_device(op, device, logits, "logits", {{"tokens", &tokens}});
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) >= 1 && logits.size(1) >= 1 && logits.scalar_type() == at::kFloat &&
                  logits.stride(1) == 1,
              "fastwhisper.decoder_timestamp_rules: logits must be a 2-D float32 tensor [rows, n_vocab] with "
              "contiguous rows, got ", logits.scalar_type(), " of shape ", shape_str(logits.sizes()));
  const int64_t rows = logits.size(0), n_vocab = logits.size(1);
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == rows && tokens.scalar_type() == at::kLong &&
                  (tokens.size(1) <= 1 || tokens.stride(1) == 1),
              "fastwhisper.decoder_timestamp_rules: tokens must be an int64 tensor [", rows,
              ", length] with contiguous rows, got ", tokens.scalar_type(), " of shape ", shape_str(tokens.sizes()));
  TORCH_CHECK(sample_begin >= 0 && sample_begin <= tokens.size(1), "fastwhisper.decoder_timestamp_rules: sample_begin ",
              sample_begin, " must be in [0, ", tokens.size(1), "] (the tokens so far)");
  TORCH_CHECK(eot >= 0 && eot < timestamp_begin && timestamp_begin < n_vocab,
              "fastwhisper.decoder_timestamp_rules: need 0 <= eot < timestamp_begin < n_vocab = ", n_vocab, ", got eot ",
              eot, ", timestamp_begin ", timestamp_begin);
  TORCH_CHECK(no_timestamps >= -1 && no_timestamps < n_vocab,
              "fastwhisper.decoder_timestamp_rules: no_timestamps must be a token id or -1, got ", no_timestamps);
  TORCH_CHECK(max_initial_timestamp_index >= -1, "fastwhisper.decoder_timestamp_rules: max_initial_timestamp_index "
              "must be >= 0 or -1 (no limit), got ", max_initial_timestamp_index);
}

}  // namespace fastwhisper
