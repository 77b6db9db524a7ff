// The decoding loop of whisper's DecodingTask._main_loop, in C++ on a DecoderSession.
#pragma once
#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "decoder/options.h"
#include "decoder/session.h"

namespace fastwhisper::decoder {

// (tokens [N, L] int64: initial + sampled tokens, sum_logprobs [N] float32, no_speech_probs [N] float32
// (NaN without a no-speech token), finished_tokens, finished_sum_logprobs, finished_audio: beam search's
// finished candidates in whisper's order (empty for greedy)).
using DecodeOutput = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<double>,
                                std::vector<int64_t>>;

// initial_tokens [N, sample_begin] int64 on the session's device, N = the session's rows (audio * group).
// Runs up to options.sample_len steps from offset 0 (the session is reset first).
DecodeOutput decode(DecoderSession& session, const at::Tensor& initial_tokens, const DecodeOptions& options);

}  // namespace fastwhisper::decoder
