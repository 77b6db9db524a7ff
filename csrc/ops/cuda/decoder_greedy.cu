// CUDA token choice of greedy decoding (CPU reference: decoder_greedy_update in cpu/decoder_step.cpp).
//
// Each row's logits are split into chunks, one block each (a single block per row is bound by its SM's
// instruction issue). A block makes one pass over its chunk, with the optional
// suppress mask applied as it reads (whisper's SuppressTokens / SuppressBlank index_fill with -inf): the
// argmax (the first index among equal maxima, as torch.argmax) and the exp-sum relative to the chunk's max.
// The chunks' statistics then meet in one block, which takes the chosen token's log-probability and does
// whisper's bookkeeping: a row whose last token is EOT keeps EOT and its sum. The chosen token is the row's
// maximum, so its log-probability, (logit - max) - log(sum exp(logit - max)) as log_softmax forms it, needs no
// second read of the logits.
//
// Each block leaves its chunk's statistics in the workspace, and the row's last block (a per-row ticket)
// merges them. (A thread-block cluster per row, merging through distributed shared memory, was slower in
// the step: the cluster's launch and barrier cost more than the ticket.)
// With several rows, the last row to finish (one more ticket, which also counts the rows at EOT) writes
// whether every row now ends in EOT, so the loop's stop test reads one flag. Every ticket is reset by the
// block that reads it last, so the caller's workspace serves the next call as it is (greedy_workspace.h).
//
// The step's feedback (decoder_step_io.h), each where its pointer is set: the chosen tokens and the next
// position into the step graph's inputs, and the flag into pinned host memory, so that no further kernel or
// copy runs between two steps.
#include <torch/library.h>

#include <climits>
#include <cmath>

#include "ops/checks.h"
#include "ops/cuda/device_utils.cuh"
#include "ops/decoder_step_io.h"
#include "ops/greedy_workspace.h"
#include "ops/cuda/launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kLoadsInFlight = 8;  // logits loaded per thread before they are reduced
static_assert(kGreedyChunks == 32, "the merge gives one chunk to each lane of a warp");

// Running (argmax, max, exp-sum) of a stream of logits: the larger value wins the argmax, the smaller index
// among equal values; the exp-sum is kept relative to the max (rescaled when two are merged).
struct RowStats {  // plain data (it lives in shared memory too): start from empty_stats()
  float best;
  int idx;    // INT_MAX: no value seen
  float sum;  // sum of exp(value - best) over the values seen

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

__device__ __forceinline__ RowStats warp_merge(RowStats s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s.merge(shfl_stats(s, o));
  return s;
}

// This thread's statistics over [begin, end), strided by the block: kLoadsInFlight loads at a time, then the
// max and argmax of the batch, then its exp-sum (independent exps), merged into the running statistics.
__device__ RowStats thread_stats(const float* __restrict__ row, const bool* __restrict__ suppress, int begin, int end) {
  RowStats st = empty_stats();
  for (int base = begin + static_cast<int>(threadIdx.x); base < end; base += kLoadsInFlight * kThreads) {
    float v[kLoadsInFlight];
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {
      const int i = base + u * kThreads;
      v[u] = i < end ? row[i] : -INFINITY;
      if (suppress != nullptr && i < end && suppress[i]) v[u] = -INFINITY;
    }
    RowStats batch = empty_stats();
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {  // ascending indices: a tie keeps the first
      if (v[u] > batch.best) {
        batch.best = v[u];
        batch.idx = base + u * kThreads;
      }
    }
    if (batch.best != -INFINITY) {
#pragma unroll
      for (int u = 0; u < kLoadsInFlight; ++u) batch.sum += v[u] == -INFINITY ? 0.f : expf(v[u] - batch.best);
    }
    st.merge(batch);
  }
  return st;
}

// The block's statistics, in thread 0 (red: one slot per warp).
__device__ RowStats block_stats(RowStats st, RowStats* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  st = warp_merge(st);
  if (lane == 0) red[warp] = st;
  __syncthreads();
  RowStats total = empty_stats();
  if (warp == 0) {
    total = lane < kThreads / 32 ? red[lane] : empty_stats();
    total = warp_merge(total);
  }
  return total;
}

struct GreedyArgs {
  const float* logits;    // [N, V], row stride logits_stride
  const bool* suppress;   // [V] or nullptr: true where the token gets -inf
  int64_t* tokens;        // [N, capacity]
  float* sum_logprobs;    // [N]
  bool* completed;        // [1]
  int* workspace;         // [greedy_workspace_numel(N)], counters zero
  int64_t logits_stride;  // elements between rows of logits
  int n_vocab;            // V
  int64_t capacity;       // columns of tokens
  int64_t length;         // tokens so far: the new one goes to column `length`
  int64_t eot;
  StepFeedback feedback;  // where the chosen tokens, the next position and the flag also go (nullptr: nowhere)
};

// Row r's merged statistics -> its token, sum and the feedback; the last row also writes the completed flag.
// One thread; prev: tokens[r, length - 1].
__device__ void finish_row(const GreedyArgs& a, int r, int n_rows, const RowStats& total, int64_t prev) {
  const int64_t idx = total.idx == INT_MAX ? 0 : total.idx;  // nothing above -inf: torch.argmax gives 0
  // log_softmax at the maximum: (max - max) - log(sum); NaN where the max is not finite, as log_softmax gives
  const float logprob = (total.best - total.best) - logf(total.sum);
  const bool not_finished = prev != a.eot;
  a.sum_logprobs[r] += logprob * static_cast<float>(not_finished);  // whisper: current * (last != eot)
  const int64_t next = not_finished ? idx : a.eot;
  a.tokens[r * a.capacity + a.length] = next;
  if (a.feedback.step_token != nullptr) a.feedback.step_token[r] = next;
  if (r == 0 && a.feedback.step_position != nullptr) *a.feedback.step_position = a.feedback.position;
  bool all_at_eot = next == a.eot;
  if (n_rows > 1) {  // one ticket counts the rows done (low 16 bits) and those at EOT (high bits)
    auto* rows_ticket = reinterpret_cast<unsigned int*>(a.workspace);
    const unsigned int old = atomicAdd(rows_ticket, 1u + (all_at_eot ? 0x10000u : 0u));
    if ((old & 0xffffu) != static_cast<unsigned int>(n_rows) - 1) return;
    all_at_eot = (old >> 16) + (all_at_eot ? 1u : 0u) == static_cast<unsigned int>(n_rows);
    *rows_ticket = 0;  // every row has counted: reset for the next call
  }
  *a.completed = all_at_eot;
  if (a.feedback.host_flag != nullptr) *a.feedback.host_flag = all_at_eot;
}

// grid (kGreedyChunks, N): block c takes chunk c of row y; the row's last block merges.
__global__ void __launch_bounds__(kThreads)
    greedy_update_kernel(const GreedyArgs a) {
  __shared__ RowStats red[kThreads / 32];
  __shared__ bool last_of_row;
  const int n_rows = static_cast<int>(gridDim.y), r = static_cast<int>(blockIdx.y), chunk = static_cast<int>(blockIdx.x);
  auto* chunks_done = reinterpret_cast<unsigned int*>(a.workspace) + 2;  // [N]
  int* partials = a.workspace + 2 + n_rows;                             // [N, kGreedyChunks, 3]
  allow_dependents();
  wait_for_producers();
  const int chunk_len = (a.n_vocab + static_cast<int>(kGreedyChunks) - 1) / static_cast<int>(kGreedyChunks);
  const int begin = chunk * chunk_len, end = min(a.n_vocab, begin + chunk_len);
  const float* row = a.logits + r * a.logits_stride;
  const RowStats total = block_stats(thread_stats(row, a.suppress, begin, end), red);
  if (threadIdx.x == 0) {
    int* p = partials + (r * kGreedyChunks + chunk) * kGreedyStatsWords;
    p[0] = __float_as_int(total.best);
    p[1] = total.idx;
    p[2] = __float_as_int(total.sum);
    __threadfence();  // the chunk's stats before its ticket
    last_of_row = atomicAdd(&chunks_done[r], 1u) == kGreedyChunks - 1;
  }
  __syncthreads();
  if (!last_of_row || threadIdx.x >= 32) return;

  // the row's last block: lane c merges chunk c's stats
  __threadfence();
  const int lane = static_cast<int>(threadIdx.x);
  const int* p = partials + (r * kGreedyChunks + lane) * kGreedyStatsWords;
  RowStats merged;
  merged.best = __int_as_float(__ldcg(p));
  merged.idx = __ldcg(p + 1);
  merged.sum = __int_as_float(__ldcg(p + 2));
  const int64_t prev = lane == 0 ? a.tokens[r * a.capacity + a.length - 1] : 0;
  merged = warp_merge(merged);
  if (lane != 0) return;
  chunks_done[r] = 0;  // every chunk of this row has counted: reset for the next call
  finish_row(a, r, n_rows, merged, prev);
}

}  // namespace

at::Tensor greedy_update(const at::Tensor& logits, at::Tensor& tokens, at::Tensor& sum_logprobs,
                         at::Tensor& workspace, int64_t length, int64_t eot, const std::optional<at::Tensor>& suppress,
                         const StepFeedback& feedback) {
  check_decoder_greedy_update_args(c10::DeviceType::CUDA, logits, tokens, sum_logprobs, workspace, length, eot,
                                   suppress);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor l = logits.stride(1) == 1 ? logits : logits.contiguous();
  at::Tensor completed = at::empty({}, logits.options().dtype(at::kBool));
  const GreedyArgs a{l.data_ptr<float>(),
                     suppress.has_value() ? suppress->data_ptr<bool>() : nullptr,
                     tokens.data_ptr<int64_t>(),
                     sum_logprobs.data_ptr<float>(),
                     completed.data_ptr<bool>(),
                     workspace.data_ptr<int>(),
                     l.stride(0),
                     static_cast<int>(l.size(1)),
                     tokens.size(1),
                     length,
                     eot,
                     feedback};
  launch_pdl(greedy_update_kernel, dim3(static_cast<unsigned int>(kGreedyChunks), static_cast<unsigned int>(l.size(0))),
             dim3(kThreads), 0, a);
  return completed;
}

namespace {
at::Tensor decoder_greedy_update(const at::Tensor& logits, at::Tensor& tokens, at::Tensor& sum_logprobs,
                                 at::Tensor& workspace, int64_t length, int64_t eot,
                                 const std::optional<at::Tensor>& suppress) {
  return greedy_update(logits, tokens, sum_logprobs, workspace, length, eot, suppress, StepFeedback{});
}
}  // namespace

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_greedy_update", &decoder_greedy_update); }

}  // namespace fastwhisper::cuda
