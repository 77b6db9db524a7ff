// Token decoders of whisper/decoding.py: GreedyDecoder (argmax or temperature sampling) and
// BeamSearchDecoder (with patience). Each appends one token per row to the loop's token buffer.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "decoder/options.h"
#include "decoder/session.h"
#include "ops/decoder_step_io.h"

namespace fastwhisper::decoder {

// A finished beam-search candidate: the audio it belongs to, its tokens (initial tokens to EOT), its score.
struct FinishedSequence {
  int64_t audio;
  std::vector<int64_t> tokens;
  double sum_logprob;
};

// What the loop offers a token decoder to write beside the next tokens (the next step's inputs, the stop
// flag; null targets are not offered), and whether it wrote every offered one.
struct StepFeedbackOffer {
  StepFeedback targets;
  bool written = false;
};

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // buffer [N, capacity] int64 holds the sequences in columns [0, length); logits [N, n_vocab] float32 (filtered);
  // sum_logprobs [N] float32, updated in place. Writes column `length` (the next token of every row),
  // possibly reordering rows first (beam search), and the offered feedback where it can. Returns whisper's
  // `completed` as a 0-dim bool tensor: on the host for beam search, on the logits' device for the greedy
  // decoder (no sync here).
  virtual at::Tensor update(at::Tensor& buffer, int64_t length, const at::Tensor& logits, at::Tensor& sum_logprobs,
                            StepFeedbackOffer& feedback) = 0;
  // Whether update() applies SuppressBlank and SuppressTokens itself (the loop then leaves them out).
  virtual bool folds_suppression() const { return false; }
  // Beam search's finished candidates, per audio in whisper's insertion order (empty for greedy).
  virtual std::vector<FinishedSequence> finished() const { return {}; }
};

// Argmax at temperature 0, else sampling. On CUDA at temperature 0 one kernel
// per token also applies the static suppression (without timestamp rules, which must see it first) and
// writes the feedback.
class GreedyDecoder : public TokenDecoder {
 public:
  GreedyDecoder(const DecodeOptions& options, int64_t n_vocab, c10::Device device,
                std::optional<at::Generator> generator);
  at::Tensor update(at::Tensor& buffer, int64_t length, const at::Tensor& logits, at::Tensor& sum_logprobs,
                    StepFeedbackOffer& feedback) override;
  bool folds_suppression() const override { return folds_suppression_; }

 private:
  double temperature_;
  int64_t eot_, sample_begin_;
  std::optional<at::Generator> generator_;
  bool fused_ = false;              // the CUDA kernel with suppression and feedback
  bool folds_suppression_ = false;  // fused_ and no timestamp rules
  at::Tensor suppress_first_;       // [n_vocab] bool: suppress_tokens and blank tokens (first sampled token)
  at::Tensor suppress_later_;       // [n_vocab] bool: suppress_tokens; undefined when there are none
  at::Tensor workspace_;            // decoder_greedy_update's, made by the first update
};

class BeamSearchDecoder : public TokenDecoder {
 public:
  // session: its KV cache is reordered with the beams (whisper's inference.rearrange_kv_cache).
  BeamSearchDecoder(int64_t beam_size, int64_t eot, double patience, int64_t n_audio, DecoderSession& session);
  at::Tensor update(at::Tensor& buffer, int64_t length, const at::Tensor& logits, at::Tensor& sum_logprobs,
                    StepFeedbackOffer& feedback) override;
  std::vector<FinishedSequence> finished() const override;

 private:
  int64_t beam_size_, eot_, max_candidates_;
  DecoderSession& session_;
  // per audio: finished sequences and their scores, in insertion order (a Python dict in whisper)
  std::vector<std::vector<std::pair<std::vector<int64_t>, double>>> finished_;
  std::vector<std::vector<int64_t>> rows_;  // host copy of the buffer's [N, length] tokens
  std::vector<float> sum_logprobs_;         // host copy of sum_logprobs
};

std::unique_ptr<TokenDecoder> make_token_decoder(const DecodeOptions& options, DecoderSession& session);

}  // namespace fastwhisper::decoder
