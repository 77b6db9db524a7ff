// CUDA token choice of greedy decoding (CPU reference: decoder_greedy_update in cpu/decoder_step.cpp).
//
// Each row's logits are split into kGreedyChunks chunks, one block each (a single block per row was bound by
// its SM's instruction issue: about 20 us for 51866 logits). A block makes one pass over its chunk: the argmax
// (the first index among equal maxima, as torch.argmax) and the exp-sum relative to the chunk's max, and
// leaves them in the workspace. The row's last block (a per-row ticket) merges the chunks, takes the chosen
// token's log-probability (logit - max - log(sum exp(logit - max)), as log_softmax) and does whisper's
// bookkeeping: a row whose last token is EOT keeps EOT and its sum. The last row to finish writes whether
// every row now ends in EOT, so the loop's stop test reads one flag. Every ticket is reset by the block that
// reads it last, so the caller's workspace serves the next call as it is (greedy_workspace.h).
#include <torch/library.h>

#include <climits>
#include <cmath>

#include "checks.h"
#include "cuda/device_utils.cuh"
#include "greedy_workspace.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kLoadsInFlight = 8;  // logits loaded per thread before they are reduced
static_assert(kGreedyChunks == 32, "the merge gives one chunk to each lane of a warp");

// Running (argmax, max, exp-sum) of a stream of logits: the larger value wins the argmax, the
// smaller index among equal values; the exp-sum is kept relative to the running max (rescaled when
// the max grows), so one pass over the row gives both.
struct RowStats {  // plain data (it lives in shared memory too): start from empty_stats()
  float best;
  int idx;    // INT_MAX: no value seen
  float sum;  // sum of exp(value - best) over the values seen

  __device__ __forceinline__ void add(float v, int i) {
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
  s.idx = INT_MAX;
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
                         int* __restrict__ workspace,       // [greedy_workspace_numel(N)], counters zero
                         int64_t logits_stride, int n_vocab, int64_t capacity, int64_t length, int64_t eot) {
  __shared__ RowStats red[kThreads / 32];
  __shared__ bool last_of_row;
  const int n_rows = static_cast<int>(gridDim.y), r = static_cast<int>(blockIdx.y), chunk = static_cast<int>(blockIdx.x);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  auto* rows_done = reinterpret_cast<unsigned int*>(workspace);      // [1]
  auto* rows_at_eot = rows_done + 1;                                 // [1]
  auto* chunks_done = rows_done + 2;                                 // [N]
  int* partials = workspace + 2 + n_rows;                            // [N, kGreedyChunks, 3]
  allow_dependents();  // safe this early: a dependent still waits for this grid to finish
  wait_for_producers();
  const float* row = logits + r * logits_stride;

  // one pass over this block's chunk, kLoadsInFlight coalesced loads per thread at a time
  const int chunk_len = (n_vocab + static_cast<int>(kGreedyChunks) - 1) / static_cast<int>(kGreedyChunks);
  const int begin = chunk * chunk_len, end = min(n_vocab, begin + chunk_len);
  RowStats st = empty_stats();
  for (int base = begin + static_cast<int>(threadIdx.x); base < end; base += kLoadsInFlight * kThreads) {
    float v[kLoadsInFlight];
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {
      const int i = base + u * kThreads;
      v[u] = i < end ? row[i] : -INFINITY;
    }
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {
      const int i = base + u * kThreads;
      if (i < end) st.add(v[u], i);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) st.merge(shfl_stats(st, o));
  if (lane == 0) red[warp] = st;
  __syncthreads();

  if (threadIdx.x == 0) {
    RowStats total = red[0];
    for (int w = 1; w < kThreads / 32; ++w) total.merge(red[w]);
    int* p = partials + (r * kGreedyChunks + chunk) * kGreedyStatsWords;
    p[0] = __float_as_int(total.best);
    p[1] = total.idx;
    p[2] = __float_as_int(total.sum);
    __threadfence();  // the chunk's stats before its ticket
    last_of_row = atomicAdd(&chunks_done[r], 1u) == kGreedyChunks - 1;
  }
  __syncthreads();
  if (!last_of_row || warp != 0) return;

  // the row's last block: lane c merges chunk c's stats
  __threadfence();
  const int* p = partials + (r * kGreedyChunks + lane) * kGreedyStatsWords;
  RowStats total;
  total.best = __int_as_float(__ldcg(p));
  total.idx = __ldcg(p + 1);
  total.sum = __int_as_float(__ldcg(p + 2));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) total.merge(shfl_stats(total, o));
  if (lane != 0) return;
  chunks_done[r] = 0;  // every chunk of this row has counted: reset for the next call
  // no value above -inf: torch.argmax gives 0, and log_softmax is NaN there
  const int64_t idx = total.idx == INT_MAX ? 0 : total.idx;
  const float logprob = row[idx] - total.best - logf(total.sum);
  const bool not_finished = tokens[r * capacity + length - 1] != eot;
  sum_logprobs[r] += logprob * static_cast<float>(not_finished);  // whisper: current * (last != eot)
  const int64_t next = not_finished ? idx : eot;
  tokens[r * capacity + length] = next;
  if (next == eot) atomicAdd(rows_at_eot, 1u);
  __threadfence();  // this row's writes and EOT count before its ticket
  if (atomicAdd(rows_done, 1u) == static_cast<unsigned int>(n_rows) - 1) {  // the last row: every flag counted
    __threadfence();
    *completed = atomicAdd(rows_at_eot, 0u) == static_cast<unsigned int>(n_rows);
    *rows_at_eot = 0;
    *rows_done = 0;
  }
}

}  // namespace

at::Tensor decoder_greedy_update(const at::Tensor& logits, at::Tensor& tokens, at::Tensor& sum_logprobs,
                                 at::Tensor& workspace, int64_t length, int64_t eot) {
  check_decoder_greedy_update_args(c10::DeviceType::CUDA, logits, tokens, sum_logprobs, workspace, length, eot);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor l = logits.stride(1) == 1 ? logits : logits.contiguous();
  at::Tensor completed = at::empty({}, logits.options().dtype(at::kBool));
  launch_pdl(greedy_update_kernel, dim3(static_cast<unsigned int>(kGreedyChunks), static_cast<unsigned int>(l.size(0))),
             dim3(kThreads), 0, l.data_ptr<float>(), tokens.data_ptr<int64_t>(), sum_logprobs.data_ptr<float>(),
             completed.data_ptr<bool>(), workspace.data_ptr<int>(), l.stride(0), static_cast<int>(l.size(1)),
             tokens.size(1), length, eot);
  return completed;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_greedy_update", &decoder_greedy_update); }

}  // namespace fastwhisper::cuda
