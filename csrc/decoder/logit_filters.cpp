// Logit filters: whisper/decoding.py's per-row Python loops rewritten as masks over [N, n_vocab].
#include "decoder/logit_filters.h"

#include <limits>

namespace fastwhisper::decoder {
namespace {
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

at::Tensor index_tensor(const std::vector<int64_t>& ids, c10::Device device) {
  return at::tensor(ids, at::TensorOptions().dtype(at::kLong)).to(device);
}
}  // namespace

SuppressBlank::SuppressBlank(const std::vector<int64_t>& blank_tokens, int64_t sample_begin, c10::Device device)
    : blank_(index_tensor(blank_tokens, device)), sample_begin_(sample_begin) {}

void SuppressBlank::apply(at::Tensor& logits, const at::Tensor& tokens) const {
  if (tokens.size(1) == sample_begin_) logits.index_fill_(1, blank_, kNegInf);
}

SuppressTokens::SuppressTokens(const std::vector<int64_t>& suppress_tokens, c10::Device device)
    : suppress_(index_tensor(suppress_tokens, device)) {}

void SuppressTokens::apply(at::Tensor& logits, const at::Tensor& /*tokens*/) const {
  logits.index_fill_(1, suppress_, kNegInf);
}

ApplyTimestampRules::ApplyTimestampRules(const DecodeOptions& o, int64_t n_vocab, c10::Device device)
    : eot_(o.eot),
      timestamp_begin_(o.timestamp_begin),
      no_timestamps_(o.no_timestamps),
      sample_begin_(o.sample_begin),
      max_initial_timestamp_index_(o.max_initial_timestamp_index),
      columns_(at::arange(n_vocab, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(0)) {}

void ApplyTimestampRules::apply(at::Tensor& logits, const at::Tensor& tokens) const {
  const int64_t n_vocab = logits.size(1), tb = timestamp_begin_;
  // suppress <|notimestamps|>, which is handled by without_timestamps
  if (no_timestamps_ >= 0) logits.select(1, no_timestamps_).fill_(kNegInf);

  // timestamps have to appear in pairs, except directly before EOT; and must not decrease
  const int64_t n_sampled = tokens.size(1) - sample_begin_;
  if (n_sampled >= 1) {
    const at::Tensor seq = tokens.narrow(1, sample_begin_, n_sampled);  // [N, n_sampled]
    const at::Tensor is_ts = seq.ge(tb);
    const at::Tensor last = is_ts.select(1, n_sampled - 1);                                          // [N]
    const at::Tensor penultimate = n_sampled < 2 ? at::ones_like(last) : is_ts.select(1, n_sampled - 2);  // [N]
    const at::Tensor pair_open = last.logical_and(penultimate.logical_not());  // last was a lone timestamp
    // last timestamp token of each row (rows without one are masked out by has_ts)
    const at::Tensor positions = at::arange(n_sampled, tokens.options()).unsqueeze(0);  // [1, n_sampled]
    const at::Tensor last_pos = at::where(is_ts, positions, -1).amax(1, /*keepdim=*/true).clamp_min(0);  // [N, 1]
    const at::Tensor ts_last = seq.gather(1, last_pos);                                              // [N, 1]
    const at::Tensor has_ts = is_ts.any(1, /*keepdim=*/true);                                         // [N, 1]
    const at::Tensor cutoff = at::where(pair_open.unsqueeze(1), ts_last, ts_last + 1);                // [N, 1]
    const at::Tensor is_ts_col = columns_.ge(tb);                                                    // [1, V]
    at::Tensor mask = last.logical_and(penultimate).unsqueeze(1).logical_and(is_ts_col);  // has to be text
    mask.logical_or_(pair_open.unsqueeze(1).logical_and(columns_.lt(eot_)));             // cannot be text
    mask.logical_or_(has_ts.logical_and(is_ts_col).logical_and(columns_.lt(cutoff)));    // no going back
    logits.masked_fill_(mask, kNegInf);
  }

  if (n_sampled == 0) {
    // suppress generating non-timestamp tokens at the beginning
    logits.narrow(1, 0, tb).fill_(kNegInf);
    // apply the max_initial_timestamp option
    if (max_initial_timestamp_index_ >= 0) {
      const int64_t first_banned = tb + max_initial_timestamp_index_ + 1;
      if (first_banned < n_vocab) logits.narrow(1, first_banned, n_vocab - first_banned).fill_(kNegInf);
    }
  }

  // if the total probability of the timestamps is above any text token's, sample a timestamp
  const at::Tensor logprobs = at::log_softmax(logits.to(at::kFloat), -1);
  const at::Tensor timestamp_logprob = logprobs.narrow(1, tb, n_vocab - tb).logsumexp(-1);  // [N]
  const at::Tensor max_text_logprob = logprobs.narrow(1, 0, tb).amax(-1);                    // [N]
  logits.masked_fill_(timestamp_logprob.gt(max_text_logprob).unsqueeze(1).logical_and(columns_.lt(tb)), kNegInf);
}

std::vector<std::unique_ptr<LogitFilter>> make_logit_filters(const DecodeOptions& o, int64_t n_vocab,
                                                             c10::Device device) {
  std::vector<std::unique_ptr<LogitFilter>> filters;
  if (o.suppress_blank) filters.push_back(std::make_unique<SuppressBlank>(o.blank_tokens, o.sample_begin, device));
  if (!o.suppress_tokens.empty()) filters.push_back(std::make_unique<SuppressTokens>(o.suppress_tokens, device));
  if (o.timestamp_rules) filters.push_back(std::make_unique<ApplyTimestampRules>(o, n_vocab, device));
  return filters;
}

}  // namespace fastwhisper::decoder
