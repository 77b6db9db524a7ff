// DecoderSession: construction and input checks, audio set-up, the decoder forward step, cache reorder.
#include "decoder/session.h"

#include "decoder/cpu_linear.h"

#include <string>

#include <ATen/core/dispatch/Dispatcher.h>

#include "ops/checks.h"
#include "ops/decoder_step_io.h"
#include "ops/decoder_step_ops.h"
#include "ops/kernels.h"

namespace fastwhisper::decoder {
namespace {

// Slots of one block's tensors, and of the final LayerNorm's.
constexpr int64_t kAttnLnW = slot_of(kDecoderBlock, "attn_ln.weight");
constexpr int64_t kAttnLnB = slot_of(kDecoderBlock, "attn_ln.bias");
constexpr int64_t kAttnQW = slot_of(kDecoderBlock, "attn.query.weight");
constexpr int64_t kAttnQB = slot_of(kDecoderBlock, "attn.query.bias");
constexpr int64_t kAttnKW = slot_of(kDecoderBlock, "attn.key.weight");
constexpr int64_t kAttnVW = slot_of(kDecoderBlock, "attn.value.weight");
constexpr int64_t kAttnVB = slot_of(kDecoderBlock, "attn.value.bias");
constexpr int64_t kAttnOutW = slot_of(kDecoderBlock, "attn.out.weight");
constexpr int64_t kAttnOutB = slot_of(kDecoderBlock, "attn.out.bias");
constexpr int64_t kCrossLnW = slot_of(kDecoderBlock, "cross_attn_ln.weight");
constexpr int64_t kCrossLnB = slot_of(kDecoderBlock, "cross_attn_ln.bias");
constexpr int64_t kCrossQW = slot_of(kDecoderBlock, "cross_attn.query.weight");
constexpr int64_t kCrossQB = slot_of(kDecoderBlock, "cross_attn.query.bias");
constexpr int64_t kCrossKW = slot_of(kDecoderBlock, "cross_attn.key.weight");
constexpr int64_t kCrossVW = slot_of(kDecoderBlock, "cross_attn.value.weight");
constexpr int64_t kCrossVB = slot_of(kDecoderBlock, "cross_attn.value.bias");
constexpr int64_t kCrossOutW = slot_of(kDecoderBlock, "cross_attn.out.weight");
constexpr int64_t kCrossOutB = slot_of(kDecoderBlock, "cross_attn.out.bias");
constexpr int64_t kMlpLnW = slot_of(kDecoderBlock, "mlp_ln.weight");
constexpr int64_t kMlpLnB = slot_of(kDecoderBlock, "mlp_ln.bias");
constexpr int64_t kMlp0W = slot_of(kDecoderBlock, "mlp.0.weight");
constexpr int64_t kMlp0B = slot_of(kDecoderBlock, "mlp.0.bias");
constexpr int64_t kMlp2W = slot_of(kDecoderBlock, "mlp.2.weight");
constexpr int64_t kMlp2B = slot_of(kDecoderBlock, "mlp.2.bias");
constexpr int64_t kLnW = slot_of(kDecoderAfterBlocks, "ln.weight");
constexpr int64_t kLnB = slot_of(kDecoderAfterBlocks, "ln.bias");
// A LayerNorm's bias follows its weight in every layout above.
static_assert(kAttnLnB == kAttnLnW + 1 && kCrossLnB == kCrossLnW + 1 && kMlpLnB == kMlpLnW + 1 && kLnB == kLnW + 1,
              "DecoderSession::layer_norm reads a LayerNorm's bias right after its weight");
constexpr int64_t kNoBias = -1;

constexpr const char* kOp = "DecoderSession";

// Every weight: defined, floating point, on the token embedding's device, of the right shape.
void check_weights(const std::vector<at::Tensor>& w, int64_t n_head, int64_t n_text_ctx) {
  constexpr int64_t outside = kTensorsBeforeBlocks + kTensorsAfterBlocks;
  TORCH_CHECK(static_cast<int64_t>(w.size()) >= outside && (w.size() - outside) % kTensorsPerBlock == 0,
              "fastwhisper.DecoderSession: weights must hold token_embedding.weight, positional_embedding, ",
              kTensorsPerBlock, " tensors per block (in fastwhisper.decoder.weights.decoder_weight_names order), "
              "ln.weight and ln.bias; got ", w.size(), " tensors");
  const at::Tensor& emb = w[kTokenEmbedding];
  TORCH_CHECK(emb.defined() && emb.dim() == 2 && emb.size(0) >= 1 && emb.size(1) >= 1,
              "fastwhisper.DecoderSession: token_embedding.weight must be 2-D [n_vocab, n_state], got ",
              emb.defined() ? emb.sizes() : at::IntArrayRef{});
  const int64_t d = emb.size(1);
  const auto device = emb.device().type();
  auto check_one = [&](const at::Tensor& t, const std::string& name, at::IntArrayRef shape) {
    check_on_device(kOp, device, emb, "token_embedding.weight", {{name.c_str(), &t}});
    TORCH_CHECK(at::isFloatingType(t.scalar_type()), "fastwhisper.DecoderSession: ", name,
                " must be a floating-point tensor, got ", t.scalar_type());
    check_shape(kOp, t, name.c_str(), shape);
  };
  check_one(emb, "token_embedding.weight", emb.sizes());
  check_one(w[kPositionalEmbedding], "positional_embedding", {n_text_ctx, d});
  const int64_t n_blocks = static_cast<int64_t>(w.size()) - outside;
  for (int64_t i = 0; i < n_blocks; ++i) {
    const ParamSpec& spec = kDecoderBlock[i % kTensorsPerBlock];
    check_one(w[kTensorsBeforeBlocks + i], "blocks." + std::to_string(i / kTensorsPerBlock) + "." + spec.name,
              param_shape(spec.shape, d));
  }
  for (int64_t i = 0; i < kTensorsAfterBlocks; ++i) {
    check_one(w[kTensorsBeforeBlocks + n_blocks + i], kDecoderAfterBlocks[i].name,
              param_shape(kDecoderAfterBlocks[i].shape, d));
  }
  TORCH_CHECK(n_head >= 1 && d % n_head == 0, "fastwhisper.DecoderSession: n_state ", d,
              " is not divisible by n_head ", n_head);
}

}  // namespace

DecoderSession::DecoderSession(std::vector<at::Tensor> weights, int64_t n_head, int64_t n_text_ctx)
    : weights_(std::move(weights)), n_head_(n_head), n_text_ctx_(n_text_ctx) {
  TORCH_CHECK(n_text_ctx >= 1, "fastwhisper.DecoderSession: n_text_ctx must be positive, got ", n_text_ctx);
  check_weights(weights_, n_head, n_text_ctx);
  n_layer_ = (static_cast<int64_t>(weights_.size()) - kTensorsBeforeBlocks - kTensorsAfterBlocks) / kTensorsPerBlock;
  n_state_ = token_embedding().size(1);
  graphs_ = make_step_graphs(token_embedding().device());
}

const ParamSpec& DecoderSession::spec_of(int64_t i) const {
  if (i < kTensorsBeforeBlocks) return kDecoderBeforeBlocks[i];
  const int64_t after = i - (static_cast<int64_t>(weights_.size()) - kTensorsAfterBlocks);
  if (after >= 0) return kDecoderAfterBlocks[after];
  return kDecoderBlock[(i - kTensorsBeforeBlocks) % kTensorsPerBlock];
}

int64_t DecoderSession::weights_version() const {
  int64_t sum = 0;
  for (const auto& w : weights_) sum += static_cast<int64_t>(w.unsafeGetTensorImpl()->version_counter().current_version());
  return sum;
}

void DecoderSession::invalidate_graphs() {
  if (graphs_) graphs_->clear();
}

void DecoderSession::prepare_compute_weights() {
  const int64_t version = weights_version();
  if (compute_dtype_ == dtype_ && compute_version_ == version) return;
  const auto n = static_cast<int64_t>(weights_.size());
  compute_.assign(n, at::Tensor());
  for (int64_t i = 0; i < n; ++i) {
    const ParamRole role = spec_of(i).role;
    const at::ScalarType want = role == ParamRole::kPositional  ? weights_[i].scalar_type()
                                : role == ParamRole::kLayerNorm ? at::kFloat
                                                                : dtype_;
    compute_[i] = weights_[i].scalar_type() == want ? weights_[i] : weights_[i].to(want);
  }
  compute_dtype_ = dtype_;
  compute_version_ = version;
  invalidate_graphs();
}

void DecoderSession::set_cuda_graphs(bool enabled) {
  use_graphs_ = enabled;
  if (!enabled) invalidate_graphs();
}

at::Tensor DecoderSession::layer_norm(const at::Tensor& x, int64_t layer, int64_t weight_slot) const {
  const at::Tensor& w = layer < 0 ? compute_after_blocks(weight_slot) : compute_block(layer, weight_slot);
  const at::Tensor& b = layer < 0 ? compute_after_blocks(weight_slot + 1) : compute_block(layer, weight_slot + 1);
  // whisper's LayerNorm: F.layer_norm(x.float(), ...).type(x.dtype)
  return at::layer_norm(x.to(at::kFloat), {n_state_}, w, b, kLayerNormEps).to(x.scalar_type());
}

at::Tensor DecoderSession::linear(const at::Tensor& x, int64_t layer, int64_t weight_slot, int64_t bias_slot) const {
  const std::optional<at::Tensor> bias =
      bias_slot == kNoBias ? std::nullopt : std::optional<at::Tensor>(compute_block(layer, bias_slot));
  return x.is_cpu() ? cpu_linear(x, compute_block(layer, weight_slot), bias)
                    : at::linear(x, compute_block(layer, weight_slot), bias);
}

// [N, L, d] -> [N, H, L, Dh] view
static at::Tensor heads(const at::Tensor& x, int64_t n_head) {
  return x.view({x.size(0), x.size(1), n_head, x.size(2) / n_head}).transpose(1, 2);
}
// [N, H, L, Dh] -> [N, L, d]
static at::Tensor merge_heads(const at::Tensor& x) {
  return x.transpose(1, 2).flatten(2);
}
// A layer's cross-attention K or V (cross_k_, cross_v_: [B, T_a, d] or, on the CPU, [B, H, T_a, Dh]) as
// [B, H, T_a, Dh] for ATen's attention, and as [B, T_a, d] for the step ops.
static at::Tensor cross_heads(const at::Tensor& kv, int64_t n_head) {
  return kv.dim() == 4 ? kv : heads(kv, n_head);
}
static at::Tensor cross_rows(const at::Tensor& kv) {
  return kv.dim() == 3 ? kv : merge_heads(kv).contiguous();
}

at::Tensor DecoderSession::self_attention(const at::Tensor& h, int64_t layer, int64_t t) {
  at::Tensor q = linear(h, layer, kAttnQW, kAttnQB);  // [N, t, d]
  at::Tensor k = linear(h, layer, kAttnKW, kNoBias);
  at::Tensor v = linear(h, layer, kAttnVW, kAttnVB);
  self_k_[layer].narrow(1, offset_, t).copy_(k);
  self_v_[layer].narrow(1, offset_, t).copy_(v);
  const int64_t n_kv = offset_ + t;
  at::Tensor keys = self_k_[layer].narrow(1, 0, n_kv);  // [N, n_kv, d], row stride n_text_ctx * d
  at::Tensor values = self_v_[layer].narrow(1, 0, n_kv);
  std::optional<at::Tensor> mask;
  bool is_causal = false;
  if (t > 1 && offset_ == 0) {
    is_causal = true;  // whisper: is_causal=True for a multi-token first call (top-left = bottom-right here)
  } else if (t > 1) {
    // several new tokens after cached ones: query i (position offset+i) sees keys 0 .. offset+i
    auto rows = at::arange(t, h.options().dtype(at::kLong)).unsqueeze(1) + offset_;  // [t, 1]
    auto cols = at::arange(n_kv, h.options().dtype(at::kLong)).unsqueeze(0);          // [1, n_kv]
    mask = cols <= rows;                                                               // [t, n_kv] bool
  }
  at::Tensor a = at::scaled_dot_product_attention(heads(q, n_head_), heads(keys, n_head_), heads(values, n_head_),
                                                  mask, 0.0, is_causal);  // [N, H, t, Dh]
  return linear(merge_heads(a), layer, kAttnOutW, kAttnOutB);
}

at::Tensor DecoderSession::self_attention_static(const at::Tensor& h, int64_t layer, const at::Tensor& visible) {
  at::Tensor q = linear(h, layer, kAttnQW, kAttnQB);  // [N, 1, d]
  at::Tensor k = linear(h, layer, kAttnKW, kNoBias);
  at::Tensor v = linear(h, layer, kAttnVW, kAttnVB);
  self_k_[layer].index_copy_(1, step_position_, k);  // cache position <- this token's K/V
  self_v_[layer].index_copy_(1, step_position_, v);
  const int64_t n_kv = visible.size(0);
  at::Tensor keys = self_k_[layer].narrow(1, 0, n_kv);  // [N, n_kv, d]; positions past the token are masked
  at::Tensor values = self_v_[layer].narrow(1, 0, n_kv);
  at::Tensor a = at::scaled_dot_product_attention(heads(q, n_head_), heads(keys, n_head_), heads(values, n_head_),
                                                  visible.view({1, 1, 1, n_kv}), 0.0, false);  // [N, H, 1, Dh]
  return linear(merge_heads(a), layer, kAttnOutW, kAttnOutB);
}

at::Tensor DecoderSession::cross_attention(const at::Tensor& h, int64_t layer, int64_t t) const {
  at::Tensor q = linear(h, layer, kCrossQW, kCrossQB);  // [N, t, d], N = n_audio * group
  // The group rows of one audio share its K/V: fold them into the query length,
  // [N, t, d] -> [n_audio, group * t, d] (no mask, so each query row is computed as before).
  at::Tensor qa = q.reshape({n_audio_, group_ * t, n_state_});
  at::Tensor a = at::scaled_dot_product_attention(heads(qa, n_head_), cross_heads(cross_k_[layer], n_head_),
                                                  cross_heads(cross_v_[layer], n_head_), std::nullopt, 0.0, false);
  at::Tensor o = merge_heads(a).reshape({n_rows_, t, n_state_});
  return linear(o, layer, kCrossOutW, kCrossOutB);
}

void DecoderSession::set_audio(const at::Tensor& audio_features, int64_t group) {
  const auto device = token_embedding().device().type();
  check_on_device(kOp, device, token_embedding(), "token_embedding.weight", {{"audio_features", &audio_features}});
  check_compute_dtype("DecoderSession.set_audio", device, audio_features, "audio_features");
  TORCH_CHECK(audio_features.dim() == 3 && audio_features.size(2) == n_state_ && audio_features.size(0) >= 1 &&
                  audio_features.size(1) >= 1,
              "fastwhisper.DecoderSession.set_audio: audio_features must have shape [batch, n_audio_ctx, ", n_state_,
              "] (the encoder's output), got ", audio_features.sizes());
  TORCH_CHECK(group >= 1, "fastwhisper.DecoderSession.set_audio: group (beams or samples per audio) must be >= 1, got ",
              group);
  at::NoGradGuard no_grad;
  has_audio_ = false;  // until this window's buffers are all set (an allocation may run out of memory)
  dtype_ = audio_features.scalar_type();
  prepare_compute_weights();
  const int64_t n_audio = audio_features.size(0), n_ctx = audio_features.size(1);
  const int64_t rows = n_audio * group;
  // Cross-attention K/V of every layer. On CUDA they are written into buffers kept for the most audios seen so
  // far (the first n_audio of them are used): the CUDA graphs read them there, so a window with fewer or as many
  // audios reuses every graph captured for its row count. New buffers only for more audios, another audio length
  // or another dtype.
  const bool head_major = audio_features.is_cpu();  // cross_k_'s layout, see session.h
  if (!head_major) {
    const bool fits = !cross_k_store_.empty() && cross_k_store_[0].size(0) >= n_audio &&
                      cross_k_store_[0].size(1) == n_ctx && cross_k_store_[0].scalar_type() == dtype_;
    if (!fits) {  // every layer's buffers or none (an allocation may run out of memory)
      invalidate_graphs();
      cross_k_store_.clear();
      cross_v_store_.clear();
      std::vector<at::Tensor> k_store(n_layer_), v_store(n_layer_);
      for (int64_t l = 0; l < n_layer_; ++l) {
        k_store[l] = at::empty({n_audio, n_ctx, n_state_}, audio_features.options());
        v_store[l] = at::empty({n_audio, n_ctx, n_state_}, audio_features.options());
      }
      cross_k_store_ = std::move(k_store);
      cross_v_store_ = std::move(v_store);
    }
  }
  cross_k_.assign(n_layer_, at::Tensor());
  cross_v_.assign(n_layer_, at::Tensor());
  for (int64_t l = 0; l < n_layer_; ++l) {
    at::Tensor k = linear(audio_features, l, kCrossKW, kNoBias);  // [B, T_a, d]
    at::Tensor v = linear(audio_features, l, kCrossVW, kCrossVB);
    if (head_major) {
      cross_k_[l] = heads(k, n_head_).contiguous();  // [B, H, T_a, Dh]
      cross_v_[l] = heads(v, n_head_).contiguous();
    } else {
      cross_k_[l] = cross_k_store_[l].narrow(0, 0, n_audio);  // [B, T_a, d], contiguous
      cross_v_[l] = cross_v_store_[l].narrow(0, 0, n_audio);
      cross_k_[l].copy_(k);
      cross_v_[l].copy_(v);
    }
  }
  n_audio_ = n_audio;
  if (group != group_) invalidate_graphs();  // the cross-attention fold depends on it
  group_ = group;
  // The self-attention cache is kept for the most rows seen so far, like the cross K/V; a window uses its
  // first `rows` rows.
  const bool fits = kv_cache_.defined() && kv_cache_.size(2) >= rows && kv_cache_.scalar_type() == dtype_ &&
                    kv_cache_.device() == audio_features.device();
  if (!fits) {
    // One tensor for every layer's K and V, so a beam reorder is one gather. Zeros, not empty: the
    // one-token graphs read masked positions past the token, and masking (score - inf) only hides
    // finite values; uninitialized memory may hold NaN.
    kv_cache_ = at::zeros({n_layer_, 2, rows, n_text_ctx_, n_state_}, audio_features.options());
    step_token_store_ = at::zeros({rows, 1}, audio_features.options().dtype(at::kLong));
    step_position_ = at::zeros({1}, audio_features.options().dtype(at::kLong));
    invalidate_graphs();
  }
  self_k_.assign(n_layer_, at::Tensor());
  self_v_.assign(n_layer_, at::Tensor());
  for (int64_t l = 0; l < n_layer_; ++l) {
    self_k_[l] = kv_cache_.select(0, l).select(0, 0).narrow(0, 0, rows);  // [rows, n_text_ctx, d], contiguous
    self_v_[l] = kv_cache_.select(0, l).select(0, 1).narrow(0, 0, rows);
  }
  step_token_ = step_token_store_.narrow(0, 0, rows);  // [rows, 1]
  n_rows_ = rows;
  offset_ = 0;
  has_audio_ = true;
}

void DecoderSession::check_ready(const char* method) const {
  TORCH_CHECK(has_audio_, "fastwhisper.DecoderSession.", method, ": call set_audio(audio_features, group) first");
}

template <typename SelfAttention>
at::Tensor DecoderSession::blocks_and_logits(at::Tensor x, SelfAttention attend) {
  const int64_t t = x.size(1);
  for (int64_t l = 0; l < n_layer_; ++l) {
    x = x + attend(layer_norm(x, l, kAttnLnW), l);
    x = x + cross_attention(layer_norm(x, l, kCrossLnW), l, t);
    x = x + linear(at::gelu(linear(layer_norm(x, l, kMlpLnW), l, kMlp0W, kMlp0B)), l, kMlp2W, kMlp2B);
  }
  x = layer_norm(x, -1, kLnW);
  const at::Tensor& embedding = compute_[kTokenEmbedding];  // [n_vocab, d]
  if (x.is_cpu()) return cpu_linear(x, embedding, std::nullopt).to(at::kFloat);  // whisper's x @ embedding.T
  return at::matmul(x, embedding.transpose(0, 1)).to(at::kFloat);  // [N, t, n_vocab]
}

namespace {

// [R, d] in dtype: token_embedding[tokens[r]] + positional_embedding[position] (the decoder_embedding op)
at::Tensor call_decoder_embedding(const at::Tensor& token_embedding, const at::Tensor& positional_embedding,
                                  const at::Tensor& tokens, const at::Tensor& position, at::ScalarType dtype) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastwhisper::decoder_embedding", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         at::ScalarType)>();
  return op.call(token_embedding, positional_embedding, tokens, position, dtype);
}

}  // namespace

at::Tensor DecoderSession::forward_eager(const at::Tensor& tokens) {
  const int64_t t = tokens.size(1);
  // token_embedding(x) + positional_embedding[offset : offset + t], in the weights' dtype, then .to(audio dtype)
  at::Tensor x = (at::embedding(token_embedding(), tokens) + positional_embedding().narrow(0, offset_, t))
                     .to(dtype_);  // [N, t, d]
  return blocks_and_logits(x, [&](const at::Tensor& h, int64_t l) { return self_attention(h, l, t); });
}

at::Tensor DecoderSession::forward_static(int64_t n_kv) {
  // whisper's embedding sum (the same bits as its ATen ops) in one kernel
  const at::Tensor x = call_decoder_embedding(token_embedding(), positional_embedding(), step_token_, step_position_, dtype_)
                           .unsqueeze(1);  // [N, 1, d]
  const at::Tensor visible = at::arange(n_kv, step_position_.options()).le(step_position_);  // [n_kv] bool
  return blocks_and_logits(x, [&](const at::Tensor& h, int64_t l) { return self_attention_static(h, l, visible); });
}

namespace {

at::Tensor call_decoder_linear(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,
                               const std::optional<at::Tensor>& ln_bias, at::TensorList weights,
                               const c10::List<std::optional<at::Tensor>>& biases,
                               const std::optional<at::Tensor>& residual, bool gelu, bool float_output) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastwhisper::decoder_linear", "")
                       .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&,
                                         const std::optional<at::Tensor>&, at::TensorList,
                                         const c10::List<std::optional<at::Tensor>>&,
                                         const std::optional<at::Tensor>&, bool, bool)>();
  return op.call(x, ln_weight, ln_bias, weights, biases, residual, gelu, float_output);
}

at::Tensor call_decoder_self_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                                       const at::Tensor& position, int64_t n_head) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastwhisper::decoder_self_attention", "")
                       .typed<at::Tensor(const at::Tensor&, at::Tensor&, at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(qkv, k_cache, v_cache, position, n_head);
}

at::Tensor call_decoder_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastwhisper::decoder_cross_attention", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(q, k, v, n_head);
}

at::Tensor call_decoder_cross_query_attention(const at::Tensor& x, const at::Tensor& ln_weight,
                                              const at::Tensor& ln_bias, const at::Tensor& q_weight,
                                              const std::optional<at::Tensor>& q_bias, const at::Tensor& k,
                                              const at::Tensor& v, int64_t n_head) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastwhisper::decoder_cross_query_attention", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                                         int64_t)>();
  return op.call(x, ln_weight, ln_bias, q_weight, q_bias, k, v, n_head);
}

// Whether a layer's cross-attention query and attention run as one op (decoder_cross_query_attention) or as
// decoder_linear then decoder_cross_attention: one op for several rows per audio (beams), where the fused
// kernel saves a launch and a pass over the query; two ops for one row, where they measured faster in whole
// steps although the fused chain alone is faster.
bool cross_query_fused(int64_t group) { return group > 1; }

}  // namespace

void DecoderSession::set_step_kernels(int64_t mode) {
  TORCH_CHECK(mode >= 0 && mode <= 2, "fastwhisper.DecoderSession.set_step_kernels: mode must be 0 (auto), "
              "1 (step ops) or 2 (ATen ops), got ", mode);
  step_kernels_ = static_cast<StepKernels>(mode);
  invalidate_graphs();
}

bool DecoderSession::uses_step_ops() const {
  if (step_kernels_ == StepKernels::kAten || n_rows_ > kDecoderMaxRows || n_rows_ < 1) return false;
  const int64_t head_dim = n_state_ / n_head_;
  // the kernels' 16-byte slices of a head (8 fp16/bf16 or 4 fp32 values) must tile their blocks
  if (n_state_ % 8 != 0 || head_dim % 8 != 0 || 256 % head_dim != 0 || 128 % (head_dim / 4) != 0) return false;
  if (step_kernels_ == StepKernels::kStepOps) return true;
  return token_embedding().is_cuda() && (dtype_ == at::kHalf || dtype_ == at::kBFloat16);
}

// Up to kPrefillStepsMax new tokens go as one-token steps of the step graph: a decode call's first step of
// a few tokens then costs a few graph replays instead of one forward of ATen ops launched one by one from the
// host (about 30 per layer), which is host-bound.
bool DecoderSession::prefills_by_steps(int64_t t) const {
  if (!graphs_ || !use_graphs_ || !uses_step_ops()) return false;
  return t <= kPrefillStepsMax;
}

// One token per row at step_position_ through the step ops: per layer a LayerNorm+QKV kernel, the
// self-attention kernel (which appends K/V), the out projection with the residual, the LayerNorm, query
// and cross-attention over the cached K/V (one op for beams, two for one row: cross_query_fused), its out
// projection, and the two MLP kernels.
at::Tensor DecoderSession::forward_step_ops() {
  const int64_t rows = n_rows_, d = n_state_;
  at::Tensor x = call_decoder_embedding(token_embedding(), positional_embedding(), step_token_, step_position_, dtype_);  // [R, d]
  auto w = [&](int64_t l, int64_t slot) { return compute_block(l, slot); };
  for (int64_t l = 0; l < n_layer_; ++l) {
    const at::Tensor qkv = call_decoder_linear(x, w(l, kAttnLnW), w(l, kAttnLnB), {w(l, kAttnQW), w(l, kAttnKW), w(l, kAttnVW)},
                                               bias_list({w(l, kAttnQB), std::nullopt, w(l, kAttnVB)}), std::nullopt,
                                               false, false);  // [R, 3d]
    const at::Tensor a = call_decoder_self_attention(qkv, self_k_[l], self_v_[l], step_position_, n_head_);  // [R, d]
    x = call_decoder_linear(a, std::nullopt, std::nullopt, {w(l, kAttnOutW)}, bias_list({w(l, kAttnOutB)}), x, false,
                            false);
    // the group rows of one audio share its K/V
    at::Tensor c;  // [R, d]
    if (cross_query_fused(group_)) {
      c = call_decoder_cross_query_attention(x, w(l, kCrossLnW), w(l, kCrossLnB), w(l, kCrossQW), w(l, kCrossQB),
                                             cross_rows(cross_k_[l]), cross_rows(cross_v_[l]), n_head_);
    } else {
      const at::Tensor q = call_decoder_linear(x, w(l, kCrossLnW), w(l, kCrossLnB), {w(l, kCrossQW)},
                                               bias_list({w(l, kCrossQB)}), std::nullopt, false, false);
      c = call_decoder_cross_attention(q, cross_rows(cross_k_[l]), cross_rows(cross_v_[l]), n_head_);
    }
    x = call_decoder_linear(c, std::nullopt, std::nullopt, {w(l, kCrossOutW)}, bias_list({w(l, kCrossOutB)}), x, false,
                            false);
    const at::Tensor hidden = call_decoder_linear(x, w(l, kMlpLnW), w(l, kMlpLnB), {w(l, kMlp0W)},
                                                  bias_list({w(l, kMlp0B)}), std::nullopt, true, false);  // [R, 4d]
    x = call_decoder_linear(hidden, std::nullopt, std::nullopt, {w(l, kMlp2W)}, bias_list({w(l, kMlp2B)}), x, false,
                            false);
  }
  return call_decoder_linear(x, compute_after_blocks(kLnW), compute_after_blocks(kLnB), {compute_[kTokenEmbedding]},
                             bias_list({std::nullopt}),
                             std::nullopt, false, true)
      .view({rows, 1, n_vocab()});  // [R, 1, n_vocab] float32
}

at::Tensor DecoderSession::forward(const at::Tensor& tokens) {
  at::NoGradGuard no_grad;
  const int64_t t = tokens.size(1);
  at::Tensor logits;
  const bool step_ops = t == 1 && uses_step_ops();
  if (t == 1 && (step_ops || graphs_)) {
    bool written = step_inputs_written_;
#ifdef FASTWHISPER_WITH_CUDA
    if (!written && step_token_.is_cuda() && tokens.device() == step_token_.device() &&
        tokens.scalar_type() == at::kLong) {
      cuda::write_step_inputs(tokens, step_token_, step_position_, offset_);  // one kernel, no copy engine
      written = true;
    }
#endif
    if (!written) {
      step_token_.copy_(tokens);
      step_position_.fill_(offset_);
    }
  }
  if (t == 1 && graphs_ && use_graphs_) {
    if (step_ops) {  // no key-length buckets: the attention kernel reads the position itself
      logits = graphs_->run(graph_key(-1), [this] { return forward_step_ops(); });
    } else {
      const int64_t n_kv = std::min(n_text_ctx_, (offset_ / kKvBucket + 1) * kKvBucket);
      logits = graphs_->run(graph_key(n_kv), [this, n_kv] { return forward_static(n_kv); });
    }
  } else if (step_ops) {
    logits = forward_step_ops();
  } else {
    logits = forward_eager(tokens);
  }
  offset_ += t;
  step_inputs_written_ = false;
  return logits;
}

void DecoderSession::offer_step_inputs(StepFeedback& targets) const {
  if (!step_token_.defined() || !step_token_.is_cuda()) return;
  targets.step_token = step_token_.data_ptr<int64_t>();
  targets.step_position = step_position_.data_ptr<int64_t>();
  targets.position = offset_;
}

std::tuple<at::Tensor, at::Tensor> DecoderSession::detect_language(int64_t sot, const at::Tensor& language_tokens) {
  check_ready("detect_language");
  TORCH_CHECK(sot >= 0 && sot < n_vocab(), "fastwhisper.DecoderSession.detect_language: sot must be a token id in [0, ",
              n_vocab(), "), got ", sot);
  TORCH_CHECK(language_tokens.dim() == 1 && language_tokens.size(0) >= 1 &&
                  language_tokens.scalar_type() == at::kLong,
              "fastwhisper.DecoderSession.detect_language: language_tokens must be a non-empty 1-D int64 tensor, got ",
              language_tokens.scalar_type(), " of shape ", language_tokens.sizes());
  const at::Tensor ids = language_tokens.to(device());
  const auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < n_vocab(), "fastwhisper.DecoderSession.detect_language: language token ids must be in [0, ",
              n_vocab(), "), got values in [", lo, ", ", hi, "]");
  at::NoGradGuard no_grad;
  reset();
  const at::Tensor sot_tokens = at::full({n_rows_, 1}, sot, ids.options());
  // every row of an audio gives the same logits: keep the first row of each group
  const at::Tensor all = prefills_by_steps(1) ? forward(sot_tokens) : forward_eager(sot_tokens);  // [N, 1, V]
  const at::Tensor logits = all.select(1, 0).slice(0, 0, n_rows_, group_);  // [n_audio, V]
  reset();
  // whisper masks every other token with -inf, then argmax and softmax over the vocabulary: the same
  // as both over the language tokens alone (their ids increase, so ties still go to the first)
  const at::Tensor language_logits = logits.index_select(1, ids);  // [n_audio, n_lang]
  return {ids.index_select(0, language_logits.argmax(-1)), language_logits.softmax(-1)};
}

at::Tensor DecoderSession::step(const at::Tensor& tokens) {
  check_ready("step");
  check_on_device("DecoderSession.step", device().type(), token_embedding(), "the session's weights",
                  {{"tokens", &tokens}});
  TORCH_CHECK(tokens.scalar_type() == at::kLong, "fastwhisper.DecoderSession.step: tokens must be int64, got ",
              tokens.scalar_type());
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == n_rows_ && tokens.size(1) >= 1,
              "fastwhisper.DecoderSession.step: tokens must have shape [", n_rows_,
              ", t] (batch * group rows, t >= 1 new tokens), got ", tokens.sizes());
  TORCH_CHECK(offset_ + tokens.size(1) <= n_text_ctx_, "fastwhisper.DecoderSession.step: ", tokens.size(1),
              " tokens at offset ", offset_, " go beyond n_text_ctx = ", n_text_ctx_,
              " positions; reset() or decode fewer tokens");
  // range check (one host sync; the C++ decoding loop uses forward(), which skips it)
  const auto lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < n_vocab(), "fastwhisper.DecoderSession.step: token ids must be in [0, ", n_vocab(),
              "), got values in [", lo, ", ", hi, "]");
  // a copy: the CUDA graph's output buffer is overwritten by the next step
  return forward(tokens).clone();
}

at::Tensor DecoderSession::step_last(const at::Tensor& tokens) {
  return step(tokens).narrow(1, tokens.size(1) - 1, 1);
}

void DecoderSession::reorder_unchecked(const at::Tensor& source_indices) {
  at::NoGradGuard no_grad;
  if (offset_ == 0) return;
  at::Tensor used = kv_cache_.narrow(2, 0, n_rows_).narrow(3, 0, offset_);  // [n_layer, 2, N, offset, d]
  used.copy_(used.index_select(2, source_indices));
}

void DecoderSession::reorder(const at::Tensor& source_indices) {
  check_ready("reorder");
  TORCH_CHECK(source_indices.dim() == 1 && source_indices.size(0) == n_rows_ &&
                  source_indices.scalar_type() == at::kLong,
              "fastwhisper.DecoderSession.reorder: source_indices must be an int64 tensor of shape [", n_rows_,
              "], got ", source_indices.scalar_type(), " of shape ", source_indices.sizes());
  const auto lo = source_indices.min().item<int64_t>(), hi = source_indices.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < n_rows_, "fastwhisper.DecoderSession.reorder: source_indices must be in [0, ", n_rows_,
              "), got values in [", lo, ", ", hi, "]");
  reorder_unchecked(source_indices.to(device()));
}

}  // namespace fastwhisper::decoder
