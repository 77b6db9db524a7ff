// What passes between two decoding steps on a GPU: the next token and position into the step graph's
// inputs, and the "every row has finished" flag back to the host. A copy-engine transfer queued after a
// kernel left the GPU idle for microseconds per copy, so on CUDA both are kernel writes.
// Greedy decoding goes further: its token-choice kernel writes both itself, and applies the suppress
// filters as it reads the logits, so nothing else runs between two steps.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace fastwhisper {

// Where a kernel that chooses the next tokens also writes what the next step and the stop test read;
// each is written only where its pointer is set (plain data: it is a kernel argument).
struct StepFeedback {
  int64_t* step_token = nullptr;     // [N] the step graph's token input (contiguous [N, 1])
  int64_t* step_position = nullptr;  // [1] the step graph's position input
  int64_t position = 0;              // the value for step_position: the next step's position
  bool* host_flag = nullptr;         // device address of pinned host memory: whether every row ends in EOT
};

namespace cuda {
// decoder_greedy_update on CUDA (the op's checks included), suppress [V] bool or none, plus the feedback.
at::Tensor greedy_update(const at::Tensor& logits, at::Tensor& tokens, at::Tensor& sum_logprobs,
                         at::Tensor& workspace, int64_t length, int64_t eot, const std::optional<at::Tensor>& suppress,
                         const StepFeedback& feedback);

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
