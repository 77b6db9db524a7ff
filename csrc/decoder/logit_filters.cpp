// Logit filters: whisper/decoding.py's per-row Python loops rewritten as masks over [N, n_vocab].
#include "decoder/logit_filters.h"

#include <ATen/core/dispatch/Dispatcher.h>

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

ApplyTimestampRules::ApplyTimestampRules(const DecodeOptions& o)
    : eot_(o.eot),
      timestamp_begin_(o.timestamp_begin),
      no_timestamps_(o.no_timestamps),
      sample_begin_(o.sample_begin),
      max_initial_timestamp_index_(o.max_initial_timestamp_index) {}

void ApplyTimestampRules::apply(at::Tensor& logits, const at::Tensor& tokens) const {
  // the op: ATen ops on the CPU (the reference), one kernel per row on CUDA
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastwhisper::decoder_timestamp_rules", "")
                       .typed<void(at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t)>();
  op.call(logits, tokens, sample_begin_, timestamp_begin_, eot_, no_timestamps_, max_initial_timestamp_index_);
}

std::vector<std::unique_ptr<LogitFilter>> make_logit_filters(const DecodeOptions& o, c10::Device device,
                                                             bool static_suppression) {
  std::vector<std::unique_ptr<LogitFilter>> filters;
  if (static_suppression && o.suppress_blank) {
    filters.push_back(std::make_unique<SuppressBlank>(o.blank_tokens, o.sample_begin, device));
  }
  if (static_suppression && !o.suppress_tokens.empty()) {
    filters.push_back(std::make_unique<SuppressTokens>(o.suppress_tokens, device));
  }
  if (o.timestamp_rules) filters.push_back(std::make_unique<ApplyTimestampRules>(o));
  return filters;
}

}  // namespace fastwhisper::decoder
