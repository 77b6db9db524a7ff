// CUDA token choice of greedy decoding (CPU reference: decoder_greedy_update in cpu/decoder_step.cpp).
//
// One block per row: argmax over the vocabulary (the first index among equal maxima, as torch.argmax),
// the exp-sum for the chosen token's log-probability (logit - max - log(sum exp(logit - max)), as
// log_softmax), then whisper's bookkeeping: a row whose last token is EOT keeps EOT and its sum. The
// last block to finish (a ticket counter) writes whether every row now ends in EOT, so the loop's stop
// test reads one flag.
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "checks.h"
#include "cuda/device_utils.cuh"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kThreads = 1024;

// (value, index) pairs: the larger value wins, the smaller index among equal values.
__device__ __forceinline__ void argmax_merge(float& best, int64_t& idx, float other, int64_t other_idx) {
  if (other > best || (other == best && other_idx < idx)) {
    best = other;
    idx = other_idx;
  }
}

__global__ void __launch_bounds__(kThreads)
    greedy_update_kernel(const float* __restrict__ logits,  // [N, V], row stride logits_stride
                         int64_t* __restrict__ tokens,      // [N, capacity]
                         float* __restrict__ sum_logprobs,  // [N]
                         bool* __restrict__ completed,      // [1]
                         unsigned int* __restrict__ ticket, // [2] zeros: blocks done, rows ending in EOT
                         int64_t logits_stride, int64_t n_vocab, int64_t capacity, int64_t length, int64_t eot) {
  __shared__ float red_value[32];
  __shared__ int64_t red_index[32];
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  wait_for_producers();
  allow_dependents();
  const float* row = logits + r * logits_stride;

  float best = -INFINITY;
  int64_t idx = std::numeric_limits<int64_t>::max();
  for (int64_t i = threadIdx.x; i < n_vocab; i += blockDim.x) argmax_merge(best, idx, row[i], i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t other_idx = __shfl_xor_sync(0xffffffffu, idx, o);
    argmax_merge(best, idx, other, other_idx);
  }
  if (lane == 0) {
    red_value[warp] = best;
    red_index[warp] = idx;
  }
  __syncthreads();
  best = red_value[0];
  idx = red_index[0];
  for (int i = 1; i < n_warps; ++i) argmax_merge(best, idx, red_value[i], red_index[i]);
  if (idx == std::numeric_limits<int64_t>::max()) idx = 0;  // no value above -inf: torch.argmax gives 0

  float local_sum = 0.f;
  for (int64_t i = threadIdx.x; i < n_vocab; i += blockDim.x) local_sum += expf(row[i] - best);
  const float sum = block_reduce<false>(local_sum, red);

  if (threadIdx.x == 0) {
    const float logprob = row[idx] - best - logf(sum);
    const bool not_finished = tokens[r * capacity + length - 1] != eot;
    sum_logprobs[r] += logprob * static_cast<float>(not_finished);  // whisper: current * (last != eot)
    const int64_t next = not_finished ? idx : eot;
    tokens[r * capacity + length] = next;
    __threadfence();  // this row's writes before the ticket
    const unsigned int done_before = atomicAdd(&ticket[1], next == eot ? 1u : 0u);
    (void)done_before;
    __threadfence();
    const unsigned int finished_blocks = atomicAdd(&ticket[0], 1u) + 1;
    if (finished_blocks == gridDim.x) {  // the last block: every row's flag is counted
      *completed = atomicAdd(&ticket[1], 0u) == gridDim.x;
    }
  }
}

}  // namespace

at::Tensor decoder_greedy_update(const at::Tensor& logits, at::Tensor& tokens, at::Tensor& sum_logprobs,
                                 int64_t length, int64_t eot) {
  check_decoder_greedy_update_args(c10::DeviceType::CUDA, logits, tokens, sum_logprobs, length, eot);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor l = logits.stride(1) == 1 ? logits : logits.contiguous();
  at::Tensor completed = at::empty({}, logits.options().dtype(at::kBool));
  at::Tensor ticket = at::zeros({2}, logits.options().dtype(at::kInt));
  launch_pdl(greedy_update_kernel, dim3(static_cast<unsigned int>(l.size(0))), dim3(kThreads), 0, l.data_ptr<float>(),
             tokens.data_ptr<int64_t>(), sum_logprobs.data_ptr<float>(), completed.data_ptr<bool>(),
             reinterpret_cast<unsigned int*>(ticket.data_ptr<int>()), l.stride(0), l.size(1), tokens.size(1), length,
             eot);
  return completed;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_greedy_update", &decoder_greedy_update); }

}  // namespace fastwhisper::cuda
