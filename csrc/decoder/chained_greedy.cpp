// ChainedGreedy: the logit filters and decoder_greedy_advance, captured with the step.
#include "decoder/chained_greedy.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include "greedy_workspace.h"

namespace fastwhisper::decoder {

ChainedGreedy::ChainedGreedy(const DecodeOptions& options, int64_t n_rows, int64_t capacity, c10::Device device)
    : filters_(make_logit_filters(options, device)), eot_(options.eot) {
  const auto on_device = at::TensorOptions().device(device);
  tokens_ = at::zeros({n_rows, capacity}, on_device.dtype(at::kLong));
  sum_logprobs_ = at::zeros({n_rows}, on_device.dtype(at::kFloat));
  workspace_ = at::zeros({greedy_workspace_numel(n_rows)}, on_device.dtype(at::kInt));  // the op resets it
}

std::vector<int64_t> ChainedGreedy::key(const DecodeOptions& o) {
  // SuppressBlank is left out: it acts at the first sampled position only, which is never a chained step
  std::vector<int64_t> k = {o.eot, o.timestamp_rules, o.timestamp_begin, o.no_timestamps,
                            o.max_initial_timestamp_index, static_cast<int64_t>(o.suppress_tokens.size())};
  k.insert(k.end(), o.suppress_tokens.begin(), o.suppress_tokens.end());
  return k;
}

void ChainedGreedy::run(const at::Tensor& logits, const at::Tensor& state, at::Tensor& token) {
  static auto advance = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("fastwhisper::decoder_greedy_advance", "")
                            .typed<at::Tensor(const at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&,
                                              at::Tensor&, int64_t)>();
  at::Tensor filtered = logits;
  for (const auto& filter : filters_) filter->apply_chained(filtered, tokens_, state);
  at::Tensor position = state.narrow(0, 1, 1);
  completed_ = advance.call(filtered, tokens_, sum_logprobs_, workspace_, position, token, eot_);
}

}  // namespace fastwhisper::decoder
