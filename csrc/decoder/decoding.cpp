// The decoding loop: DecodingTask._main_loop of whisper/decoding.py on a DecoderSession.
//   for i < sample_len: logits = step(tokens) -> (i == 0) no-speech prob at SOT -> logit filters
//                       -> token decoder appends a token -> stop when completed or past n_text_ctx
// Host syncs per token: none for greedy decoding on a GPU (its stop test reads the flag of the step
// before, see StopTest); beam search ranks its candidates on the host.
#include "decoder/decoding.h"

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <array>
#include <limits>
#include <optional>

#include "ops/checks.h"
#include "decoder/logit_filters.h"
#include "decoder/token_decoders.h"
#include "ops/decoder_step_io.h"

namespace fastwhisper::decoder {
namespace {

void check_token_id(int64_t id, int64_t n_vocab, const char* name, bool optional) {
  if (optional && id == -1) return;
  TORCH_CHECK(id >= 0 && id < n_vocab, "fastwhisper decode: ", name, " must be a token id in [0, ", n_vocab, ")",
              optional ? " or -1" : "", ", got ", id);
}

void check_token_ids(const std::vector<int64_t>& ids, int64_t n_vocab, const char* name) {
  for (int64_t id : ids) check_token_id(id, n_vocab, name, false);
}

void check_options(const DecoderSession& s, const at::Tensor& initial_tokens, const DecodeOptions& o) {
  TORCH_CHECK(s.has_audio(), "fastwhisper decode: call the session's set_audio(audio_features, group) first");
  check_on_device("decode", s.device().type(), initial_tokens, "initial_tokens", {});
  TORCH_CHECK(initial_tokens.device() == s.device(), "fastwhisper decode: initial_tokens must be on ", s.device(),
              " (the session's device), got ", initial_tokens.device());
  TORCH_CHECK(initial_tokens.scalar_type() == at::kLong, "fastwhisper decode: initial_tokens must be int64, got ",
              initial_tokens.scalar_type());
  TORCH_CHECK(initial_tokens.dim() == 2 && initial_tokens.size(0) == s.n_rows() &&
                  initial_tokens.size(1) == o.sample_begin && o.sample_begin >= 1,
              "fastwhisper decode: initial_tokens must have shape [", s.n_rows(), ", sample_begin = ", o.sample_begin,
              "] (audio * group rows), got ", initial_tokens.sizes());
  TORCH_CHECK(o.sample_begin <= s.n_text_ctx(), "fastwhisper decode: ", o.sample_begin,
              " initial tokens do not fit in n_text_ctx = ", s.n_text_ctx());
  TORCH_CHECK(o.sot_index >= 0 && o.sot_index < o.sample_begin, "fastwhisper decode: sot_index ", o.sot_index,
              " is not a position of the ", o.sample_begin, " initial tokens");
  TORCH_CHECK(o.sample_len >= 1, "fastwhisper decode: sample_len must be positive, got ", o.sample_len);
  const int64_t v = s.n_vocab();
  check_token_id(o.eot, v, "eot", false);
  check_token_id(o.no_speech, v, "no_speech", true);
  if (o.suppress_blank) check_token_ids(o.blank_tokens, v, "blank_tokens");
  check_token_ids(o.suppress_tokens, v, "suppress_tokens");
  if (o.timestamp_rules) {
    check_token_id(o.timestamp_begin, v, "timestamp_begin", false);
    check_token_id(o.no_timestamps, v, "no_timestamps", true);
    TORCH_CHECK(o.eot < o.timestamp_begin, "fastwhisper decode: eot must come before timestamp_begin");
    TORCH_CHECK(o.max_initial_timestamp_index >= -1, "fastwhisper decode: max_initial_timestamp_index must be >= 0 "
                "or -1 (None), got ", o.max_initial_timestamp_index);
  }
  TORCH_CHECK(o.temperature >= 0, "fastwhisper decode: temperature must be >= 0, got ", o.temperature);
  TORCH_CHECK(o.beam_size >= 0, "fastwhisper decode: beam_size must be >= 0 (0: greedy), got ", o.beam_size);
  if (o.beam_size > 0) {
    TORCH_CHECK(o.temperature == 0, "fastwhisper decode: beam search needs temperature 0, got ", o.temperature);
    TORCH_CHECK(s.group() == o.beam_size, "fastwhisper decode: beam_size ", o.beam_size,
                " must equal the group given to set_audio (", s.group(), ")");
  }
  const auto lo = initial_tokens.min().item<int64_t>(), hi = initial_tokens.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < v, "fastwhisper decode: initial token ids must be in [0, ", v, "), got values in [",
              lo, ", ", hi, "]");
}

// whisper's `if completed: break`, without making the GPU wait for the host. A flag on the host (beam
// search, or any decoder on the CPU) is read at once. A flag on the device is copied to pinned host
// memory behind its step and read after the next step has been queued, so the device always has a
// step of work while the host waits. That next step, run after completion, only appends EOT (rows
// that reached EOT keep it and their sums), and the loop drops its column.
class StopTest {
 public:
  explicit StopTest(c10::Device device) : device_(device) {}

  // Where a kernel may store the flag that the next check() reads: the device address of its pinned slot,
  // or nullptr (on the CPU).
  bool* flag_slot_on_device() {
    if (device_.is_cpu()) return nullptr;
    prepare();
    return host_on_device_ == nullptr ? nullptr : host_on_device_ + steps_ % 2;
  }

  // The completed flag of the step that produced `length` tokens; flag_stored: a kernel already stored it at
  // flag_slot_on_device(). Returns the length to stop at, if any.
  std::optional<int64_t> check(const at::Tensor& completed, int64_t length, bool flag_stored) {
    if (completed.is_cpu()) {
      if (completed.item<bool>()) return length;
      return std::nullopt;
    }
    prepare();
    const c10::Stream stream = c10::impl::VirtualGuardImpl(device_.type()).getStream(device_);
    const int slot = static_cast<int>(steps_ % 2);
    if (flag_stored) {
      // the kernel that chose the tokens wrote it
    } else if (host_on_device_ != nullptr) {
#ifdef FASTWHISPER_WITH_CUDA
      cuda::write_flag_to_host(completed, host_on_device_ + slot);  // a kernel store, no copy engine
#endif
    } else {
      host_.select(0, slot).copy_(completed, /*non_blocking=*/true);
    }
    events_[slot]->record(stream);
    ++steps_;
    if (steps_ < 2) return std::nullopt;
    events_[1 - slot]->synchronize();  // the previous step's flag has arrived
    if (host_.data_ptr<bool>()[1 - slot]) return length - 1;
    return std::nullopt;
  }

 private:
  void prepare() {  // the pinned slots, their events and their device address, once
    if (host_.defined()) return;
    host_ = at::empty({2}, at::TensorOptions().dtype(at::kBool).pinned_memory(true));
    for (auto& e : events_) e.emplace(device_.type());
#ifdef FASTWHISPER_WITH_CUDA
    if (device_.is_cuda()) host_on_device_ = cuda::device_address_of_host(host_.data_ptr<bool>());
#endif
  }

  c10::Device device_;
  at::Tensor host_;  // [2] bool, pinned
  bool* host_on_device_ = nullptr;  // host_'s device address where the flag is written by a kernel
  std::array<std::optional<c10::Event>, 2> events_;
  int64_t steps_ = 0;
};

// The loop's first step: every initial token [N, t] -> the last position's logits [N, n_vocab]; sets
// no_speech_probs from the logits at sot_index when the model has a no-speech token. One forward of t tokens,
// or t one-token steps where the session says that is quicker (DecoderSession::prefills_by_steps).
at::Tensor first_step(DecoderSession& session, const at::Tensor& tokens, const DecodeOptions& o,
                      at::Tensor& no_speech_probs) {
  auto no_speech = [&](const at::Tensor& at_sot) {  // at_sot [N, n_vocab]
    if (o.no_speech >= 0) no_speech_probs = at_sot.to(at::kFloat).softmax(-1).select(1, o.no_speech).clone();
  };
  const int64_t t = tokens.size(1);
  if (!session.prefills_by_steps(t)) {
    const at::Tensor logits = session.forward(tokens);  // [N, t, n_vocab]
    no_speech(logits.select(1, o.sot_index));
    return logits.select(1, t - 1);
  }
  at::Tensor logits;  // [N, n_vocab]: the step graph's output, overwritten by its next replay
  for (int64_t j = 0; j < t; ++j) {
    logits = session.forward(tokens.narrow(1, j, 1)).select(1, 0);
    if (j == o.sot_index) no_speech(logits);  // queued before the next replay overwrites it
  }
  return logits;
}

}  // namespace

DecodeOutput decode(DecoderSession& session, const at::Tensor& initial_tokens, const DecodeOptions& o) {
  check_options(session, initial_tokens, o);
  at::NoGradGuard no_grad;
  session.reset();
  const int64_t n_rows = session.n_rows(), n_ctx = session.n_text_ctx();
  const auto device = session.device();
  auto token_decoder = make_token_decoder(o, session);
  const auto filters = make_logit_filters(o, device, !token_decoder->folds_suppression());

  // whisper stops once the sequence is longer than n_text_ctx, so it never holds more than n_ctx + 1 tokens
  const int64_t capacity = std::min(o.sample_begin + o.sample_len, n_ctx + 1);
  at::Tensor buffer = at::empty({n_rows, capacity}, initial_tokens.options());  // [N, capacity]
  buffer.narrow(1, 0, o.sample_begin).copy_(initial_tokens);
  int64_t length = o.sample_begin;
  at::Tensor sum_logprobs = at::zeros({n_rows}, initial_tokens.options().dtype(at::kFloat));
  at::Tensor no_speech_probs = at::full({n_rows}, std::numeric_limits<double>::quiet_NaN(), sum_logprobs.options());

  StopTest stop_test(device);
  std::optional<int64_t> stop;
  for (int64_t i = 0; i < o.sample_len && !stop; ++i) {
    TORCH_CHECK(!session.interrupt_requested(),
                "fastwhisper: decoding was interrupted (DecoderSession.interrupt(): the call was cancelled)");
    const at::Tensor tokens = buffer.narrow(1, 0, length);  // [N, length]
    // the first step feeds every initial token; later ones only the newest (the rest is cached)
    const at::Tensor fed = i == 0 ? tokens : tokens.narrow(1, length - 1, 1);
    at::Tensor logits = i == 0 ? first_step(session, fed, o, no_speech_probs)
                               : session.forward(fed).select(1, 0);  // [N, n_vocab] float32
    for (const auto& filter : filters) filter->apply(logits, tokens);
    StepFeedbackOffer feedback;  // the next step's inputs and this step's stop flag, for a kernel to write
    session.offer_step_inputs(feedback.targets);
    feedback.targets.host_flag = stop_test.flag_slot_on_device();
    const at::Tensor completed = token_decoder->update(buffer, length, logits, sum_logprobs, feedback);
    if (feedback.written && feedback.targets.step_token != nullptr) session.step_inputs_written();
    ++length;
    stop = stop_test.check(completed, length, feedback.written && feedback.targets.host_flag != nullptr);
    if (!stop && length > n_ctx) stop = length;
  }
  if (stop) length = *stop;

  std::vector<at::Tensor> finished_tokens;
  std::vector<double> finished_sums;
  std::vector<int64_t> finished_audio;
  for (auto& f : token_decoder->finished()) {
    finished_tokens.push_back(at::tensor(f.tokens, at::kLong));
    finished_sums.push_back(f.sum_logprob);
    finished_audio.push_back(f.audio);
  }
  return {buffer.narrow(1, 0, length).clone(), sum_logprobs, no_speech_probs, std::move(finished_tokens),
          std::move(finished_sums), std::move(finished_audio)};
}

}  // namespace fastwhisper::decoder
