// DecodeOptions: everything the C++ decoding loop needs, resolved from whisper's DecodingOptions and
// DecodingTask by python/fastwhisper/decoder/cpp.py (token ids, sample_begin, suppress list, ...).
// Exposed to Python as torch.classes.fastwhisper.DecodeOptions with one read/write property per field.
#pragma once
#include <torch/custom_class.h>

#include <cstdint>
#include <vector>

namespace fastwhisper::decoder {

struct DecodeOptions : torch::CustomClassHolder {
  // -- sequence layout (DecodingTask) --
  int64_t sample_begin = 0;  // len(initial_tokens): index of the first sampled token
  int64_t sot_index = 0;     // position of <|startoftranscript|> in the initial tokens
  int64_t sample_len = 224;  // at most this many decoding steps
  int64_t eot = -1;          // <|endoftext|>
  int64_t no_speech = -1;    // <|nospeech|>, or -1: no no-speech probability

  // -- logit filters, applied in whisper's order --
  bool suppress_blank = false;             // SuppressBlank: blank_tokens at the first sampled position
  std::vector<int64_t> blank_tokens;       // tokenizer.encode(" ") + [eot]
  std::vector<int64_t> suppress_tokens;    // SuppressTokens (empty: filter off)
  bool timestamp_rules = false;            // ApplyTimestampRules (not without_timestamps)
  int64_t timestamp_begin = -1;            // <|0.00|>
  int64_t no_timestamps = -1;              // <|notimestamps|>, or -1
  int64_t max_initial_timestamp_index = -1;  // -1: None

  // -- token decoder --
  double temperature = 0.0;  // GreedyDecoder: 0 -> argmax, > 0 -> sampling
  int64_t seed = -1;         // sampling generator seed; -1: the device's default generator (torch.manual_seed)
  int64_t beam_size = 0;     // > 0: BeamSearchDecoder with this many beams per audio
  double patience = 1.0;     // BeamSearchDecoder patience (whisper: options.patience or 1.0)
};

}  // namespace fastwhisper::decoder
