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

namespace fastwhisper::decoder {

// A finished beam-search candidate: the audio it belongs to, its tokens (initial tokens to EOT), its score.
struct FinishedSequence {
  int64_t audio;
  std::vector<int64_t> tokens;
  double sum_logprob;
};

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // buffer [N, capacity] int64 holds the sequences in columns [0, length); logits [N, n_vocab] float32 (filtered);
  // sum_logprobs [N] float32, updated in place. Writes column `length` (the next token of every row),
  // possibly reordering rows first (beam search). Returns whisper's `completed` as a 0-dim bool tensor:
  // on the host for beam search, on the logits' device for the greedy decoder (no sync here).
  virtual at::Tensor update(at::Tensor& buffer, int64_t length, const at::Tensor& logits, at::Tensor& sum_logprobs) = 0;
  // Beam search's finished candidates, per audio in whisper's insertion order (empty for greedy).
  virtual std::vector<FinishedSequence> finished() const { return {}; }
};

class GreedyDecoder : public TokenDecoder {
 public:
  GreedyDecoder(double temperature, int64_t eot, std::optional<at::Generator> generator)
      : temperature_(temperature), eot_(eot), generator_(std::move(generator)) {}
  at::Tensor update(at::Tensor& buffer, int64_t length, const at::Tensor& logits, at::Tensor& sum_logprobs) override;

 private:
  double temperature_;
  int64_t eot_;
  std::optional<at::Generator> generator_;
  at::Tensor workspace_;  // decoder_greedy_update's, made by the first update
};

class BeamSearchDecoder : public TokenDecoder {
 public:
  // session: its KV cache is reordered with the beams (whisper's inference.rearrange_kv_cache).
  BeamSearchDecoder(int64_t beam_size, int64_t eot, double patience, int64_t n_audio, DecoderSession& session);
  at::Tensor update(at::Tensor& buffer, int64_t length, const at::Tensor& logits, at::Tensor& sum_logprobs) override;
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
