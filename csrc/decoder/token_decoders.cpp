// GreedyDecoder and BeamSearchDecoder, following whisper/decoding.py's update() step by step.
#include "decoder/token_decoders.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <ATen/core/dispatch/Dispatcher.h>

#include "ops/greedy_workspace.h"

namespace fastwhisper::decoder {

namespace {
// [n_vocab] bool, true at ids (valid token ids: the loop's option checks ran first)
at::Tensor token_mask(const std::vector<int64_t>& ids, int64_t n_vocab, c10::Device device) {
  at::Tensor mask = at::zeros({n_vocab}, at::TensorOptions().dtype(at::kBool));
  bool* m = mask.data_ptr<bool>();
  for (int64_t id : ids) m[id] = true;
  return mask.to(device);
}
}  // namespace

GreedyDecoder::GreedyDecoder(const DecodeOptions& o, int64_t n_vocab, c10::Device device,
                             std::optional<at::Generator> generator)
    : temperature_(o.temperature), eot_(o.eot), sample_begin_(o.sample_begin), generator_(std::move(generator)) {
  fused_ = temperature_ == 0 && device.is_cuda();
  folds_suppression_ = fused_ && !o.timestamp_rules;
  if (!folds_suppression_) return;
  if (!o.suppress_tokens.empty()) suppress_later_ = token_mask(o.suppress_tokens, n_vocab, device);
  std::vector<int64_t> first = o.suppress_tokens;
  if (o.suppress_blank) first.insert(first.end(), o.blank_tokens.begin(), o.blank_tokens.end());
  if (!first.empty()) suppress_first_ = token_mask(first, n_vocab, device);
}

at::Tensor GreedyDecoder::update(at::Tensor& buffer, int64_t length, const at::Tensor& logits, at::Tensor& sum_logprobs,
                                 StepFeedbackOffer& feedback) {
  if (temperature_ == 0) {  // argmax and the bookkeeping below in one op (one kernel on CUDA)
    if (!workspace_.defined()) {  // zeroed once; the kernels reset its counters
      workspace_ = at::zeros({greedy_workspace_numel(buffer.size(0))}, buffer.options().dtype(at::kInt));
    }
#ifdef FASTWHISPER_WITH_CUDA
    if (fused_) {
      const at::Tensor& mask = length == sample_begin_ ? suppress_first_ : suppress_later_;
      feedback.written = true;
      return cuda::greedy_update(logits, buffer, sum_logprobs, workspace_, length, eot_,
                                 mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt, feedback.targets);
    }
#endif
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastwhisper::decoder_greedy_update", "")
                         .typed<at::Tensor(const at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, int64_t, int64_t,
                                           const std::optional<at::Tensor>&)>();
    return op.call(logits, buffer, sum_logprobs, workspace_, length, eot_, std::nullopt);
  }
  // Categorical(logits=logits / T).sample(): normalized logits -> softmax -> multinomial
  at::Tensor scaled = logits / temperature_;
  scaled = scaled - scaled.logsumexp(-1, /*keepdim=*/true);
  at::Tensor next = at::multinomial(at::softmax(scaled, -1), 1, /*replacement=*/true, generator_).squeeze(1);  // [N]
  const at::Tensor logprobs = at::log_softmax(logits.to(at::kFloat), -1);
  const at::Tensor current = logprobs.gather(1, next.unsqueeze(1)).squeeze(1);  // [N]
  const at::Tensor not_finished = buffer.select(1, length - 1).ne(eot_);         // [N]
  sum_logprobs.add_(current * not_finished);
  next = at::where(not_finished, next, eot_);
  buffer.select(1, length).copy_(next);
  return next.eq(eot_).all();  // every row has reached EOT: the loop's stop test reads it
}

BeamSearchDecoder::BeamSearchDecoder(int64_t beam_size, int64_t eot, double patience, int64_t n_audio,
                                     DecoderSession& session)
    : beam_size_(beam_size),
      eot_(eot),
      // Python's round(): ties to even, as nearbyint does in the default rounding mode
      max_candidates_(static_cast<int64_t>(std::nearbyint(static_cast<double>(beam_size) * patience))),
      session_(session),
      finished_(n_audio) {
  TORCH_CHECK(max_candidates_ > 0, "fastwhisper decode: invalid beam size (", beam_size, ") or patience (", patience,
              ")");
}

at::Tensor BeamSearchDecoder::update(at::Tensor& buffer, int64_t length, const at::Tensor& logits,
                                     at::Tensor& sum_logprobs, StepFeedbackOffer& /*feedback: not written*/) {
  const int64_t n_rows = buffer.size(0), n_audio = n_rows / beam_size_, k = beam_size_ + 1;
  if (rows_.empty()) {  // first update: host copies of the initial tokens and sums
    const at::Tensor host = buffer.narrow(1, 0, length).to(at::kCPU).contiguous();
    const int64_t* p = host.data_ptr<int64_t>();
    rows_.resize(n_rows);
    for (int64_t r = 0; r < n_rows; ++r) rows_[r].assign(p + r * length, p + (r + 1) * length);
    const at::Tensor sums = sum_logprobs.to(at::kCPU).contiguous();
    sum_logprobs_.assign(sums.data_ptr<float>(), sums.data_ptr<float>() + n_rows);
  }
  // Host sync, once per token: the top beam_size + 1 log-probabilities of every row come to the
  // host, where the candidates are ranked (as whisper does, with Python dicts).
  const auto top = at::log_softmax(logits.to(at::kFloat), -1).topk(k);
  const at::Tensor top_values = std::get<0>(top).to(at::kCPU).contiguous();   // [N, k]
  const at::Tensor top_indices = std::get<1>(top).to(at::kCPU).contiguous();  // [N, k]
  const float* values = top_values.data_ptr<float>();
  const int64_t* indices = top_indices.data_ptr<int64_t>();

  struct Candidate {
    int64_t source, token;
    float score;
  };
  std::vector<std::vector<int64_t>> next_rows;
  std::vector<int64_t> sources;
  std::vector<float> next_sums;
  for (int64_t i = 0; i < n_audio; ++i) {
    // STEP 1: cumulative log-probabilities of the candidates; a sequence seen twice (identical
    // beams, at the first step) keeps its first position and takes the later source and score.
    std::vector<Candidate> candidates;
    for (int64_t j = 0; j < beam_size_; ++j) {
      const int64_t idx = i * beam_size_ + j;
      for (int64_t c = 0; c < k; ++c) {
        const int64_t token = indices[idx * k + c];
        const float score = sum_logprobs_[idx] + values[idx * k + c];  // float32 sum, like whisper's tensors
        auto same = std::find_if(candidates.begin(), candidates.end(), [&](const Candidate& other) {
          return other.token == token && rows_[other.source] == rows_[idx];
        });
        if (same != candidates.end()) {
          same->source = idx;
          same->score = score;
        } else {
          candidates.push_back({idx, token, score});
        }
      }
    }
    // STEP 2: keep the top beam_size unfinished sequences; finished ones (ending in EOT) are collected
    std::vector<size_t> order(candidates.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return candidates[a].score > candidates[b].score; });
    std::vector<std::pair<std::vector<int64_t>, double>> newly_finished;  // already sorted by score
    int64_t saved = 0;
    for (size_t o : order) {
      const Candidate& c = candidates[o];
      std::vector<int64_t> sequence = rows_[c.source];
      sequence.push_back(c.token);
      if (c.token == eot_) {
        newly_finished.emplace_back(std::move(sequence), c.score);
      } else {
        next_sums.push_back(c.score);
        next_rows.push_back(std::move(sequence));
        sources.push_back(c.source);
        if (++saved == beam_size_) break;
      }
    }
    for (auto& f : newly_finished) {
      if (static_cast<int64_t>(finished_[i].size()) >= max_candidates_) break;  // the candidate list is full
      finished_[i].push_back(std::move(f));
    }
  }

  // the new sequences and sums go to the device; the KV cache follows the beams
  rows_ = std::move(next_rows);
  sum_logprobs_ = std::move(next_sums);
  std::vector<int64_t> flat;
  flat.reserve(n_rows * (length + 1));
  for (const auto& r : rows_) flat.insert(flat.end(), r.begin(), r.end());
  buffer.narrow(1, 0, length + 1).copy_(at::tensor(flat, at::kLong).view({n_rows, length + 1}));
  sum_logprobs.copy_(at::tensor(sum_logprobs_, at::kFloat));
  std::vector<int64_t> identity(n_rows);
  std::iota(identity.begin(), identity.end(), 0);
  if (sources != identity) {
    session_.reorder_unchecked(at::tensor(sources, at::kLong).to(buffer.device()));
  }
  return at::scalar_tensor(std::all_of(finished_.begin(), finished_.end(), [&](const auto& f) {
                              return static_cast<int64_t>(f.size()) >= max_candidates_;
                            }),
                            at::kBool);
}

std::vector<FinishedSequence> BeamSearchDecoder::finished() const {
  std::vector<FinishedSequence> out;
  for (size_t i = 0; i < finished_.size(); ++i) {
    for (const auto& [tokens, score] : finished_[i]) out.push_back({static_cast<int64_t>(i), tokens, score});
  }
  return out;
}

std::unique_ptr<TokenDecoder> make_token_decoder(const DecodeOptions& o, DecoderSession& session) {
  if (o.beam_size > 0) {
    return std::make_unique<BeamSearchDecoder>(o.beam_size, o.eot, o.patience, session.n_rows() / o.beam_size,
                                               session);
  }
  std::optional<at::Generator> generator;
  if (o.temperature > 0 && o.seed >= 0) {
    generator = at::globalContext().defaultGenerator(session.device()).clone();
    generator->set_current_seed(static_cast<uint64_t>(o.seed));
  }
  return std::make_unique<GreedyDecoder>(o, session.n_vocab(), session.device(), std::move(generator));
}

}  // namespace fastwhisper::decoder
