// CUDA token choice of greedy decoding (CPU reference: decoder_greedy_update in cpu/decoder_step.cpp).
//
// Each row's logits are split into chunks, one block each (a single block per row was bound by its SM's
// instruction issue: about 20 us for 51866 logits). A block makes one pass over its chunk, with the optional
// suppress mask applied as it reads (whisper's SuppressTokens / SuppressBlank index_fill with -inf): the
// argmax (the first index among equal maxima, as torch.argmax) and the exp-sum relative to the chunk's max.
// The chunks' statistics then meet in one block, which takes the chosen token's log-probability and does
// whisper's bookkeeping: a row whose last token is EOT keeps EOT and its sum. The chosen token is the row's
// maximum, so its log-probability, (logit - max) - log(sum exp(logit - max)) as log_softmax forms it, needs no
// second read of the logits.
//
// How the chunks meet:
//   - tickets (the default): kGreedyChunks blocks leave their statistics in the workspace, and the row's last
//     block (a per-row ticket) merges them;
//   - clusters (sm_90, FASTWHISPER_GREEDY_TAIL=cluster): the row's kClusterChunks blocks form a thread-block
//     cluster; after a cluster barrier block 0 reads the others' statistics from their shared memory. No
//     global round trips, but in the step it started only after the vocabulary projection had finished,
//     where the ticket kernel starts beside it under PDL (h100-2026-11-24-step-timeline-70bb8b1.md).
// With several rows, the last row to finish (one more ticket, which also counts the rows at EOT) writes
// whether every row now ends in EOT, so the loop's stop test reads one flag. Every ticket is reset by the
// block that reads it last, so the caller's workspace serves the next call as it is (greedy_workspace.h).
//
// The step's feedback (decoder_step_io.h), each where its pointer is set: the chosen tokens and the next
// position into the step graph's inputs, and the flag into pinned host memory, so that no further kernel or
// copy runs between two steps.
#include <torch/library.h>

#include <cooperative_groups.h>

#include <climits>
#include <cmath>

#include "checks.h"
#include "cuda/device_utils.cuh"
#include "decoder_step_io.h"
#include "greedy_workspace.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

namespace cg = cooperative_groups;

// Blocks of 256 threads, small enough in registers to be resident beside the vocabulary projection's blocks
// (1024-thread blocks were not, a880ddb; neither started under PDL before it finished).
constexpr int kClusterChunks = 8;   // blocks per row in the cluster path: the portable cluster size
constexpr int kClusterThreads = 256;
constexpr int kClusterLoads = 32;   // logits per thread in flight: one pass covers 8 x 256 x 32 = 65536
constexpr int kTicketThreads = 256;
constexpr int kTicketLoads = 8;
static_assert(kGreedyChunks == 32 && kClusterChunks <= 32, "the merge gives one chunk to each lane of a warp");

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
template <int kThreads, int kLoadsInFlight>
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
template <int kThreads>
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

// grid (kClusterChunks, N) in clusters of kClusterChunks blocks along x: block c takes chunk c of row y.
__global__ void __launch_bounds__(kClusterThreads)
    greedy_update_cluster_kernel(const GreedyArgs a) {
  __shared__ RowStats red[kClusterThreads / 32];
  __shared__ RowStats block_total;
  const cg::cluster_group cluster = cg::this_cluster();
  const int c = static_cast<int>(cluster.block_rank()), r = static_cast<int>(blockIdx.y);
  const int n_rows = static_cast<int>(gridDim.y);
  allow_dependents();  // safe this early: a dependent still waits for this grid to finish
  wait_for_producers();
  int64_t prev = 0;
  if (c == 0 && threadIdx.x == 0) prev = a.tokens[r * a.capacity + a.length - 1];  // in flight with the logits
  const int chunk_len = (a.n_vocab + kClusterChunks - 1) / kClusterChunks;
  const int begin = c * chunk_len, end = min(a.n_vocab, begin + chunk_len);
  const float* row = a.logits + r * a.logits_stride;
  const RowStats total =
      block_stats<kClusterThreads>(thread_stats<kClusterThreads, kClusterLoads>(row, a.suppress, begin, end), red);
  if (threadIdx.x == 0) block_total = total;
  cluster.sync();  // every block's statistics are written and visible to the cluster
  if (c == 0 && threadIdx.x < 32) {
    const int lane = static_cast<int>(threadIdx.x);
    RowStats merged = lane < kClusterChunks ? *cluster.map_shared_rank(&block_total, lane) : empty_stats();
    merged = warp_merge(merged);
    if (lane == 0) finish_row(a, r, n_rows, merged, prev);
  }
  cluster.sync();  // no block leaves while block 0 still reads its shared memory
}

// grid (kGreedyChunks, N): block c takes chunk c of row y; the row's last block merges.
__global__ void __launch_bounds__(kTicketThreads)
    greedy_update_ticket_kernel(const GreedyArgs a) {
  __shared__ RowStats red[kTicketThreads / 32];
  __shared__ bool last_of_row;
  const int n_rows = static_cast<int>(gridDim.y), r = static_cast<int>(blockIdx.y), chunk = static_cast<int>(blockIdx.x);
  auto* chunks_done = reinterpret_cast<unsigned int*>(a.workspace) + 2;  // [N]
  int* partials = a.workspace + 2 + n_rows;                             // [N, kGreedyChunks, 3]
  allow_dependents();
  wait_for_producers();
  const int chunk_len = (a.n_vocab + static_cast<int>(kGreedyChunks) - 1) / static_cast<int>(kGreedyChunks);
  const int begin = chunk * chunk_len, end = min(a.n_vocab, begin + chunk_len);
  const float* row = a.logits + r * a.logits_stride;
  const RowStats total =
      block_stats<kTicketThreads>(thread_stats<kTicketThreads, kTicketLoads>(row, a.suppress, begin, end), red);
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
                         const StepFeedback& feedback, bool clusters) {
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
  const auto rows = static_cast<unsigned int>(l.size(0));
  if (clusters) {
    launch_pdl_clusters(kClusterChunks, greedy_update_cluster_kernel, dim3(kClusterChunks, rows), dim3(kClusterThreads),
                        0, a);
  } else {
    launch_pdl(greedy_update_ticket_kernel, dim3(static_cast<unsigned int>(kGreedyChunks), rows), dim3(kTicketThreads),
               0, a);
  }
  return completed;
}

bool greedy_update_clusters(c10::Device device) {
  return greedy_tail() == GreedyTail::kCluster && at::cuda::getDeviceProperties(device.index())->major >= 9;
}

namespace {
at::Tensor decoder_greedy_update(const at::Tensor& logits, at::Tensor& tokens, at::Tensor& sum_logprobs,
                                 at::Tensor& workspace, int64_t length, int64_t eot,
                                 const std::optional<at::Tensor>& suppress) {
  return greedy_update(logits, tokens, sum_logprobs, workspace, length, eot, suppress, StepFeedback{},
                       greedy_update_clusters(logits.device()));
}
}  // namespace

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_greedy_update", &decoder_greedy_update); }

}  // namespace fastwhisper::cuda
