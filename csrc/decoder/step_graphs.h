// CUDA graphs of the decoder's one-token step: one graph per key (the session's row count and
// self-attention key-length bucket), captured the first time that key is needed and replayed on the
// current stream afterwards. At most kMaxStepGraphs are kept; the least recently used goes first.
// The step's inputs and outputs live at fixed addresses (the session's static buffers and the
// graph's own memory pool), so a replay computes the step for whatever the buffers hold now.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <memory>

namespace fastwhisper::decoder {

constexpr int64_t kMaxStepGraphs = 64;  // a few MiB to a few tens of MiB of graph memory each

class StepGraphs {
 public:
  virtual ~StepGraphs() = default;
  // Replays the graph of `key` (capturing `step` into it first if there is none) and returns
  // the graph's output tensor, which the next replay overwrites.
  virtual at::Tensor run(int64_t key, const std::function<at::Tensor()>& step) = 0;
  // Drops every graph (after the buffers or weights they read were reallocated).
  virtual void clear() = 0;
  // How many graphs are kept now.
  virtual int64_t size() const = 0;
};

// Graphs for a session on `device`; nullptr on CPU or in a build without CUDA.
std::unique_ptr<StepGraphs> make_step_graphs(c10::Device device);

}  // namespace fastwhisper::decoder
