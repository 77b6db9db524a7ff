// What passes between two decoding steps on a GPU: the next token and position into the step graph's
// inputs, and the "every row has finished" flag back to the host. A copy-engine transfer queued after a
// kernel left the GPU idle for 2-9 us per copy (benchmarks/step_timeline.py), so on CUDA both are
// kernel writes; FASTWHISPER_STEP_COPIES=copies keeps the copies (to measure one against the other).
#pragma once
#include <ATen/ATen.h>

#include "env_choice.h"

namespace fastwhisper {

// FASTWHISPER_STEP_COPIES: "kernels" (default) or "copies"; read once per process.
inline bool step_io_by_kernels() {
  static const bool kernels = env_choice("FASTWHISPER_STEP_COPIES", {"kernels", "copies"}, "kernels") == "kernels";
  return kernels;
}

namespace cuda {
// step_token[r, 0] = tokens[r, 0] for each row r and step_position[0] = position, in one kernel.
//   tokens        [N, 1] int64 on the device (any strides)
//   step_token    [N, 1] int64 contiguous, written
//   step_position [1] int64, written
void write_step_inputs(const at::Tensor& tokens, const at::Tensor& step_token, const at::Tensor& step_position,
                       int64_t position);

// The device address of pinned host memory (under unified addressing every pinned allocation has one), or
// nullptr where it has none: look it up once, outside the decoding loop.
bool* device_address_of_host(bool* host_flag);

// *flag_on_host = flag by a one-thread kernel storing through flag_on_host, a device address of pinned host
// memory (device_address_of_host). flag: one bool on the device.
void write_flag_to_host(const at::Tensor& flag, bool* flag_on_host);
}  // namespace cuda

}  // namespace fastwhisper
