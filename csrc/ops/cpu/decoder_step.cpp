// CPU reference of the decoder step ops (decoder_linear, decoder_embedding, decoder_self_attention,
// decoder_cross_attention, decoder_cross_query_attention, decoder_greedy_update): the ATen ops whisper/model.py and whisper/decoding.py
// run, in their order and dtypes. The CUDA kernels (cuda/decoder_*.cu) are checked against these.
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "ops/checks.h"
#include "ops/decoder_step_ops.h"
#include "ops/kernels.h"

namespace fastwhisper::cpu {

at::Tensor decoder_linear(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,
                          const std::optional<at::Tensor>& ln_bias, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases, const std::optional<at::Tensor>& residual,
                          bool gelu, bool float_output) {
  const DecoderLinearParts parts =
      check_decoder_linear_args(c10::DeviceType::CPU, x, ln_weight, ln_bias, weights, biases, residual);
  const auto& w = parts.weights;
  const auto& b = parts.biases;
  at::Tensor h = x;
  if (ln_weight.has_value()) {  // whisper's LayerNorm: F.layer_norm(x.float()).type(x.dtype)
    h = at::layer_norm(x.to(at::kFloat), {x.size(1)}, *ln_weight, *ln_bias, kLayerNormEps).to(x.scalar_type());
  }
  std::vector<at::Tensor> outputs;
  for (size_t i = 0; i < w.size(); ++i) outputs.push_back(at::linear(h, w[i], b[i]));
  at::Tensor y = outputs.size() == 1 ? outputs[0] : at::cat(outputs, 1);  // [M, N]
  if (gelu) y = at::gelu(y);
  if (residual.has_value()) y = *residual + y;
  return float_output ? y.to(at::kFloat) : y;
}

at::Tensor decoder_embedding(const at::Tensor& token_embedding, const at::Tensor& positional_embedding,
                             const at::Tensor& tokens, const at::Tensor& position, at::ScalarType dtype) {
  check_decoder_embedding_args(c10::DeviceType::CPU, token_embedding, positional_embedding, tokens, position, dtype);
  const int64_t n_vocab = token_embedding.size(0), n_ctx = positional_embedding.size(0);
  const int64_t p = position.item<int64_t>();
  TORCH_CHECK(p >= 0 && p < n_ctx, "fastwhisper.decoder_embedding: position must be in [0, ", n_ctx, "), got ", p);
  if (tokens.numel() > 0) {
    const auto lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < n_vocab, "fastwhisper.decoder_embedding: tokens must be in [0, ", n_vocab,
                "), got values in [", lo, ", ", hi, "]");
  }
  // whisper's TextDecoder: token_embedding(x) + positional_embedding[offset], then .to(dtype)
  return (at::embedding(token_embedding, tokens.view({-1})) + positional_embedding.select(0, p)).to(dtype);
}

at::Tensor decoder_self_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                                  const at::Tensor& position, int64_t n_head) {
  check_decoder_self_attention_args(c10::DeviceType::CPU, qkv, k_cache, v_cache, position, n_head);
  const int64_t rows = k_cache.size(0), n_ctx = k_cache.size(1), d = k_cache.size(2), dh = d / n_head;
  const int64_t p = position.item<int64_t>();
  TORCH_CHECK(p >= 0 && p < n_ctx, "fastwhisper.decoder_self_attention: position must be in [0, ", n_ctx,
              ") (the cache's positions), got ", p);
  k_cache.select(1, p).copy_(qkv.narrow(1, d, d));
  v_cache.select(1, p).copy_(qkv.narrow(1, 2 * d, d));
  auto heads = [&](const at::Tensor& t) { return t.reshape({rows, t.size(1), n_head, dh}).transpose(1, 2); };
  at::Tensor q = qkv.narrow(1, 0, d).reshape({rows, 1, d});
  at::Tensor a = at::scaled_dot_product_attention(heads(q), heads(k_cache.narrow(1, 0, p + 1)),
                                                  heads(v_cache.narrow(1, 0, p + 1)));  // [R, H, 1, Dh]
  return a.transpose(1, 2).reshape({rows, d});
}

at::Tensor decoder_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  check_decoder_cross_attention_args(c10::DeviceType::CPU, q, k, v, n_head);
  const int64_t rows = q.size(0), d = q.size(1), windows = k.size(0), dh = d / n_head;
  // [W, L, d] -> [W, H, L, Dh]; the rows of one window become its query positions
  auto heads = [&](const at::Tensor& t) { return t.reshape({windows, -1, n_head, dh}).transpose(1, 2); };
  const at::Tensor a = at::scaled_dot_product_attention(heads(q), heads(k), heads(v));  // [W, H, R / W, Dh]
  return a.transpose(1, 2).reshape({rows, d});
}

// decoder_linear's LayerNorm and query projection, then decoder_cross_attention: whisper's
// cross_attn_ln, cross_attn.query and the attention over the audio's K/V.
at::Tensor decoder_cross_query_attention(const at::Tensor& x, const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                         const at::Tensor& q_weight, const std::optional<at::Tensor>& q_bias,
                                         const at::Tensor& k, const at::Tensor& v, int64_t n_head) {
  check_decoder_cross_query_attention_args(c10::DeviceType::CPU, x, ln_weight, ln_bias, q_weight, q_bias, k, v, n_head);
  return cross_query_then_attention(decoder_linear, decoder_cross_attention, x, ln_weight, ln_bias, q_weight, q_bias, k,
                                    v, n_head);
}

// (workspace: used by the CUDA kernel only)
at::Tensor decoder_greedy_update(const at::Tensor& logits_in, at::Tensor& tokens, at::Tensor& sum_logprobs,
                                 at::Tensor& workspace, int64_t length, int64_t eot,
                                 const std::optional<at::Tensor>& suppress) {
  check_decoder_greedy_update_args(c10::DeviceType::CPU, logits_in, tokens, sum_logprobs, workspace, length, eot,
                                   suppress);
  // whisper's suppress filters fill -inf in place; here on a copy, as the op leaves its logits unchanged
  const at::Tensor logits =
      suppress.has_value() ? logits_in.masked_fill(*suppress, -std::numeric_limits<double>::infinity()) : logits_in;
  at::Tensor next = logits.argmax(-1);  // [N]
  const at::Tensor logprobs = at::log_softmax(logits, -1);
  const at::Tensor current = logprobs.gather(1, next.unsqueeze(1)).squeeze(1);  // [N]
  const at::Tensor not_finished = tokens.select(1, length - 1).ne(eot);          // [N]
  sum_logprobs.add_(current * not_finished);
  next = at::where(not_finished, next, eot);
  tokens.select(1, length).copy_(next);
  return next.eq(eot).all();
}

void decoder_timestamp_rules(at::Tensor& logits, const at::Tensor& tokens, int64_t sample_begin, int64_t timestamp_begin,
                             int64_t eot, int64_t no_timestamps, int64_t max_initial_timestamp_index) {
  check_decoder_timestamp_rules_args(c10::DeviceType::CPU, logits, tokens, sample_begin, timestamp_begin, eot,
                                     no_timestamps, max_initial_timestamp_index);
  // whisper's per-row loop, each rule a range of the row filled with -inf (a one-token step: one pass over
  // the vocabulary for the log-softmax, not a mask per rule)
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  const int64_t rows = logits.size(0), n_vocab = logits.size(1), tb = timestamp_begin;
  const int64_t length = tokens.size(1), n_sampled = length - sample_begin;
  auto fill = [&](int64_t row, int64_t begin, int64_t end) {  // logits[row, begin:end] = -inf, Python slicing
    begin = std::min(std::max<int64_t>(begin, 0), n_vocab);
    end = std::min(std::max<int64_t>(end, 0), n_vocab);
    if (end > begin) logits.select(0, row).narrow(0, begin, end - begin).fill_(kNegInf);
  };
  // suppress <|notimestamps|>, which is handled by without_timestamps
  if (no_timestamps >= 0) logits.select(1, no_timestamps).fill_(kNegInf);
  const auto seq = tokens.accessor<int64_t, 2>();  // [N, length]
  for (int64_t r = 0; r < rows && n_sampled >= 1; ++r) {
    // timestamps have to appear in pairs, except directly before EOT; and must not decrease
    const bool last = seq[r][length - 1] >= tb;
    const bool penultimate = n_sampled < 2 || seq[r][length - 2] >= tb;
    if (last) {
      if (penultimate) {
        fill(r, tb, n_vocab);  // has to be non-timestamp
      } else {
        fill(r, 0, eot);  // cannot be normal text tokens
      }
    }
    for (int64_t p = length - 1; p >= sample_begin; --p) {  // the last timestamp: no going back before it
      if (seq[r][p] >= tb) {
        fill(r, tb, last && !penultimate ? seq[r][p] : seq[r][p] + 1);
        break;
      }
    }
  }
  if (n_sampled == 0) {
    // suppress generating non-timestamp tokens at the beginning
    logits.narrow(1, 0, tb).fill_(kNegInf);
    // apply the max_initial_timestamp option
    if (max_initial_timestamp_index >= 0) {
      const int64_t first_banned = tb + max_initial_timestamp_index + 1;
      if (first_banned < n_vocab) logits.narrow(1, first_banned, n_vocab - first_banned).fill_(kNegInf);
    }
  }

  // if the total probability of the timestamps is above any text token's, sample a timestamp
  const at::Tensor logprobs = at::log_softmax(logits, -1);
  const at::Tensor timestamp_logprob = logprobs.narrow(1, tb, n_vocab - tb).logsumexp(-1);  // [N]
  const at::Tensor max_text_logprob = logprobs.narrow(1, 0, tb).amax(-1);                    // [N]
  const at::Tensor take_timestamp = timestamp_logprob.gt(max_text_logprob).contiguous();     // [N] bool
  const bool* take = take_timestamp.data_ptr<bool>();
  for (int64_t r = 0; r < rows; ++r) {
    if (take[r]) fill(r, 0, tb);
  }
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) {
  m.impl("decoder_linear", &decoder_linear);
  m.impl("decoder_embedding", &decoder_embedding);
  m.impl("decoder_self_attention", &decoder_self_attention);
  m.impl("decoder_cross_attention", &decoder_cross_attention);
  m.impl("decoder_cross_query_attention", &decoder_cross_query_attention);
  m.impl("decoder_greedy_update", &decoder_greedy_update);
  m.impl("decoder_timestamp_rules", &decoder_timestamp_rules);
}

}  // namespace fastwhisper::cpu
