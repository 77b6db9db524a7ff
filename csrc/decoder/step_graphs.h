// CUDA graphs of the decoder's one-token step: one graph per self-attention key-length bucket,
// captured the first time that bucket is needed and replayed on the current stream afterwards.
// The step's inputs and outputs live at fixed addresses (the session's static buffers and the
// graph's own memory pool), so a replay computes the step for whatever the buffers hold now.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <memory>

namespace fastwhisper::decoder {

class StepGraphs {
 public:
  virtual ~StepGraphs() = default;
  // Replays the graph of `bucket` (capturing `step` into it first if there is none) and returns
  // the graph's output tensor, which the next replay overwrites.
  virtual at::Tensor run(int64_t bucket, const std::function<at::Tensor()>& step) = 0;
  // Drops every graph (after the buffers or weights they read were reallocated).
  virtual void clear() = 0;
};

// Graphs for a session on `device`; nullptr on CPU or in a build without CUDA.
std::unique_ptr<StepGraphs> make_step_graphs(c10::Device device);

}  // namespace fastwhisper::decoder
