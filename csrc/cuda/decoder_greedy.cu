// CUDA token choice of greedy decoding (CPU reference: decoder_greedy_update in cpu/decoder_step.cpp).
//
// One block per row, one pass over its logits (16-byte loads, several in flight per thread): the argmax
// (the first index among equal maxima, as torch.argmax) and the exp-sum for the chosen token's
// log-probability (logit - max - log(sum exp(logit - max)), as log_softmax), then whisper's bookkeeping: a row whose last token is EOT keeps EOT and its sum. The
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

// Running (argmax, max, exp-sum) of a stream of logits: the larger value wins the argmax, the
// smaller index among equal values; the exp-sum is kept relative to the running max (rescaled when
// the max grows), so one pass over the row gives both.
struct RowStats {  // plain data (it lives in shared memory too): start from empty_stats()
  float best;
  int64_t idx;
  float sum;  // sum of exp(value - best) over the values seen

  __device__ __forceinline__ void add(float v, int64_t i) {
    if (v > best) {
      sum = (best == -INFINITY ? 0.f : sum * expf(best - v)) + 1.f;
      best = v;
      idx = i;
    } else {
      if (v == best && i < idx) idx = i;
      if (v != -INFINITY) sum += expf(v - best);
    }
  }

  __device__ __forceinline__ void merge(const RowStats& o) {
    if (o.best > best || (o.best == best && o.idx < idx)) idx = o.idx;
    const float m = fmaxf(best, o.best);
    if (m == -INFINITY) return;
    sum = (best == -INFINITY ? 0.f : sum * expf(best - m)) + (o.best == -INFINITY ? 0.f : o.sum * expf(o.best - m));
    best = m;
  }
};

__device__ __forceinline__ RowStats empty_stats() {
  RowStats s;
  s.best = -INFINITY;
  s.idx = std::numeric_limits<int64_t>::max();
  s.sum = 0.f;
  return s;
}

__device__ __forceinline__ RowStats shfl_stats(const RowStats& s, int offset) {
  RowStats o;
  o.best = __shfl_xor_sync(0xffffffffu, s.best, offset);
  o.idx = __shfl_xor_sync(0xffffffffu, s.idx, offset);
  o.sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
  return o;
}

__global__ void __launch_bounds__(kThreads)
    greedy_update_kernel(const float* __restrict__ logits,  // [N, V], row stride logits_stride
                         int64_t* __restrict__ tokens,      // [N, capacity]
                         float* __restrict__ sum_logprobs,  // [N]
                         bool* __restrict__ completed,      // [1]
                         unsigned int* __restrict__ ticket, // [2] zeros: blocks done, rows ending in EOT
                         int64_t logits_stride, int64_t n_vocab, int64_t capacity, int64_t length, int64_t eot) {
  __shared__ RowStats red[32];
  const int64_t r = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  allow_dependents();  // safe this early: a dependent still waits for this grid to finish
  wait_for_producers();
  const float* row = logits + r * logits_stride;

  // one pass over the row: a scalar head up to a 16-byte boundary, then float4 loads, 4 in flight
  RowStats st = empty_stats();
  const int64_t head = min(n_vocab, static_cast<int64_t>(((16 - reinterpret_cast<uintptr_t>(row) % 16) % 16) / 4));
  if (threadIdx.x < head) st.add(row[threadIdx.x], threadIdx.x);
  const int64_t n4 = (n_vocab - head) / 4;
  const auto* row4 = reinterpret_cast<const float4*>(row + head);
  for (int64_t base = threadIdx.x; base < n4; base += 4 * static_cast<int64_t>(blockDim.x)) {
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t j = base + static_cast<int64_t>(u) * blockDim.x;
      if (j < n4) v[u] = row4[j];
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t j = base + static_cast<int64_t>(u) * blockDim.x;
      if (j < n4) {
        const int64_t i = head + 4 * j;
        st.add(v[u].x, i);
        st.add(v[u].y, i + 1);
        st.add(v[u].z, i + 2);
        st.add(v[u].w, i + 3);
      }
    }
  }
  for (int64_t i = head + 4 * n4 + threadIdx.x; i < n_vocab; i += blockDim.x) st.add(row[i], i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) st.merge(shfl_stats(st, o));
  if (lane == 0) red[warp] = st;
  __syncthreads();

  if (threadIdx.x == 0) {
    RowStats total = red[0];
    for (int w = 1; w < n_warps; ++w) total.merge(red[w]);
    // no value above -inf: torch.argmax gives 0, and log_softmax is NaN there
    const int64_t idx = total.idx == std::numeric_limits<int64_t>::max() ? 0 : total.idx;
    const float logprob = row[idx] - total.best - logf(total.sum);
    const bool not_finished = tokens[r * capacity + length - 1] != eot;
    sum_logprobs[r] += logprob * static_cast<float>(not_finished);  // whisper: current * (last != eot)
    const int64_t next = not_finished ? idx : eot;
    tokens[r * capacity + length] = next;
    __threadfence();  // this row's writes before the ticket
    atomicAdd(&ticket[1], next == eot ? 1u : 0u);
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
