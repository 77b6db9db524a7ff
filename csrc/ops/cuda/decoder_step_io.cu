// The kernels of decoder_step_io.h: the step graph's inputs and the finished flag, written by kernels
// instead of copy-engine transfers.
#include "ops/decoder_step_io.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace fastwhisper::cuda {
namespace {

__global__ void write_step_inputs_kernel(const int64_t* __restrict__ tokens,  // [N, 1], row stride token_stride
                                         int64_t token_stride,                 // elements between rows of tokens
                                         int64_t* __restrict__ step_token,     // [N, 1] contiguous
                                         int64_t* __restrict__ step_position,  // [1]
                                         int64_t rows,                         // N
                                         int64_t position) {                   // the step's position
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r < rows) step_token[r] = tokens[r * token_stride];
  if (r == 0) *step_position = position;
}

__global__ void write_flag_kernel(const bool* __restrict__ flag,  // [] on the device
                                  bool* __restrict__ host_flag) {  // [] pinned host memory, device address
  *host_flag = *flag;
}

}  // namespace

void write_step_inputs(const at::Tensor& tokens, const at::Tensor& step_token, const at::Tensor& step_position,
                       int64_t position) {
  TORCH_CHECK(tokens.is_cuda() && tokens.scalar_type() == at::kLong && tokens.dim() == 2 && tokens.size(1) == 1,
              "fastwhisper: write_step_inputs wants tokens [N, 1] int64 on a CUDA device, got ", tokens.sizes(), " ",
              tokens.scalar_type(), " on ", tokens.device());
  TORCH_CHECK(step_token.is_contiguous() && step_token.sizes() == tokens.sizes() &&
                  step_token.scalar_type() == at::kLong && step_token.device() == tokens.device() &&
                  step_position.numel() == 1 && step_position.scalar_type() == at::kLong &&
                  step_position.device() == tokens.device(),
              "fastwhisper: write_step_inputs: step buffers do not match the tokens");
  const c10::cuda::CUDAGuard guard(tokens.device());
  const int64_t rows = tokens.size(0);
  constexpr int kThreads = 128;
  const auto blocks = static_cast<unsigned int>((rows + kThreads - 1) / kThreads);
  write_step_inputs_kernel<<<blocks > 0 ? blocks : 1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      tokens.data_ptr<int64_t>(), tokens.stride(0), step_token.data_ptr<int64_t>(),
      step_position.data_ptr<int64_t>(), rows, position);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool* device_address_of_host(bool* host_flag) {
  void* device_address = nullptr;
  if (cudaHostGetDevicePointer(&device_address, host_flag, 0) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error: the caller copies instead
    return nullptr;
  }
  return static_cast<bool*>(device_address);
}

void write_flag_to_host(const at::Tensor& flag, bool* flag_on_host) {
  TORCH_CHECK(flag.is_cuda() && flag.scalar_type() == at::kBool && flag.numel() == 1,
              "fastwhisper: write_flag_to_host wants one bool on a CUDA device, got ", flag.sizes(), " ",
              flag.scalar_type(), " on ", flag.device());
  const c10::cuda::CUDAGuard guard(flag.device());
  write_flag_kernel<<<1, 1, 0, at::cuda::getCurrentCUDAStream()>>>(flag.data_ptr<bool>(), flag_on_host);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastwhisper::cuda
