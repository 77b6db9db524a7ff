// Logit filters of whisper/decoding.py (SuppressBlank, SuppressTokens, ApplyTimestampRules), as
// tensor ops on the device: no host copies of logits or tokens.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "decoder/options.h"

namespace fastwhisper::decoder {

class LogitFilter {
 public:
  virtual ~LogitFilter() = default;
  // logits [N, n_vocab] float32, masked in place; tokens [N, L] int64: the sequences so far
  // (initial tokens included), L the same for every row.
  virtual void apply(at::Tensor& logits, const at::Tensor& tokens) const = 0;
};

// blank_tokens (" " and <|endoftext|>) get -inf at the first sampled position.
class SuppressBlank : public LogitFilter {
 public:
  SuppressBlank(const std::vector<int64_t>& blank_tokens, int64_t sample_begin, c10::Device device);
  void apply(at::Tensor& logits, const at::Tensor& tokens) const override;

 private:
  at::Tensor blank_;  // [n_blank] int64
  int64_t sample_begin_;
};

// suppress_tokens get -inf at every step.
class SuppressTokens : public LogitFilter {
 public:
  SuppressTokens(const std::vector<int64_t>& suppress_tokens, c10::Device device);
  void apply(at::Tensor& logits, const at::Tensor& tokens) const override;

 private:
  at::Tensor suppress_;  // [n_suppress] int64
};

// Timestamp tokens in pairs, non-decreasing, first one at most max_initial_timestamp, and a
// timestamp forced when the timestamps' total probability beats every text token.
class ApplyTimestampRules : public LogitFilter {
 public:
  explicit ApplyTimestampRules(const DecodeOptions& options);
  void apply(at::Tensor& logits, const at::Tensor& tokens) const override;  // the decoder_timestamp_rules op

 private:
  int64_t eot_, timestamp_begin_, no_timestamps_, sample_begin_, max_initial_timestamp_index_;
};

// The filters options ask for, in whisper's order. static_suppression false leaves out SuppressBlank and
// SuppressTokens, for a token decoder that applies them itself (GreedyDecoder::folds_suppression).
std::vector<std::unique_ptr<LogitFilter>> make_logit_filters(const DecodeOptions& options, c10::Device device,
                                                             bool static_suppression = true);

}  // namespace fastwhisper::decoder
