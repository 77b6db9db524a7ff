// ChainedGreedy: the greedy loop's per-token work (whisper's logit filters, then the argmax and its
// bookkeeping) as a StepTail, so it runs inside the one-token step's CUDA graph. decoder_greedy_advance
// writes each row's next token into the loop's buffer and into the step's input, and advances the
// position: the host only replays the graph and reads the stop flag. The tail owns every tensor the graph
// reads or writes, so a later decode with the same filters on the same session replays the same graph.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "decoder/logit_filters.h"
#include "decoder/options.h"
#include "decoder/session.h"

namespace fastwhisper::decoder {

class ChainedGreedy : public StepTail {
 public:
  // n_rows rows of at most `capacity` tokens each, on `device`.
  ChainedGreedy(const DecodeOptions& options, int64_t n_rows, int64_t capacity, c10::Device device);

  // What the captured graph depends on among the options (the filters' token ids and settings); decodes
  // with the same key share a tail.
  static std::vector<int64_t> key(const DecodeOptions& options);

  void run(const at::Tensor& logits, const at::Tensor& state, at::Tensor& token) override;

  at::Tensor& tokens() { return tokens_; }              // [N, capacity] int64: the loop's token buffer
  at::Tensor& sum_logprobs() { return sum_logprobs_; }  // [N] float32
  // 0-dim bool on the device: every row's newest token is EOT (written by each run; defined after the first)
  const at::Tensor& completed() const { return completed_; }

 private:
  std::vector<std::unique_ptr<LogitFilter>> filters_;
  at::Tensor tokens_, sum_logprobs_, workspace_, completed_;
  int64_t eot_;
};

}  // namespace fastwhisper::decoder
