// CUDA ApplyTimestampRules (CPU reference: decoder_timestamp_rules in cpu/decoder_step.cpp, whisper's
// rules as tensor ops). One block per row: thread 0 reads the row's sampled tokens and turns the rules
// into at most four banned column ranges; the block bans them; then the log-softmax statistics decide
// whether the timestamps' total probability beats every text token, which bans all text.
// The log-probabilities are formed as log_softmax forms them, (logit - max) - log(sum exp(logit - max)),
// so the comparison sees the same values up to the order of the sums.
#include <torch/library.h>

#include <cmath>

#include "ops/checks.h"
#include "ops/cuda/device_utils.cuh"
#include "ops/cuda/launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kMaxRanges = 4;

__global__ void __launch_bounds__(kThreads)
    timestamp_rules_kernel(float* __restrict__ logits,          // [N, V], row stride logits_stride
                           const int64_t* __restrict__ tokens,  // [N, L], row stride tokens_stride
                           int64_t logits_stride, int64_t tokens_stride, int64_t length, int64_t n_vocab,
                           int64_t sample_begin, int64_t tb, int64_t eot, int64_t no_timestamps,
                           int64_t max_initial_timestamp_index) {
  __shared__ int64_t lo[kMaxRanges], hi[kMaxRanges];
  __shared__ int n_ranges;
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  allow_dependents();  // safe this early: a dependent still waits for this grid to finish
  wait_for_producers();
  float* row = logits + r * logits_stride;

  if (threadIdx.x == 0) {
    int n = 0;
    auto ban = [&](int64_t a, int64_t b) {
      if (a < b) {
        lo[n] = a;
        hi[n] = b;
        ++n;
      }
    };
    if (no_timestamps >= 0) ban(no_timestamps, no_timestamps + 1);  // handled by without_timestamps
    const int64_t n_sampled = length - sample_begin;
    const int64_t* seq = tokens + r * tokens_stride + sample_begin;
    if (n_sampled >= 1) {
      const bool last = seq[n_sampled - 1] >= tb;
      const bool penultimate = n_sampled < 2 || seq[n_sampled - 2] >= tb;
      if (last) {
        if (penultimate) {
          ban(tb, n_vocab);  // a pair just closed: has to be text (or EOT)
        } else {
          ban(0, eot);  // a lone timestamp: cannot be text
        }
      }
      int64_t i = n_sampled - 1;
      while (i >= 0 && seq[i] < tb) --i;
      if (i >= 0) {  // timestamps must not decrease, and segments must not be empty
        const int64_t cutoff = (last && !penultimate) ? seq[i] : seq[i] + 1;
        ban(tb, cutoff < n_vocab ? cutoff : n_vocab);
      }
    } else {
      ban(0, tb);  // the first sampled token is a timestamp
      if (max_initial_timestamp_index >= 0) ban(tb + max_initial_timestamp_index + 1, n_vocab);
    }
    n_ranges = n;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n_vocab; i += blockDim.x) {
    for (int j = 0; j < n_ranges; ++j) {
      if (i >= lo[j] && i < hi[j]) row[i] = -INFINITY;
    }
  }
  __syncthreads();  // the bans are visible to the whole block

  // log_softmax statistics: max over everything, over the text columns and over the timestamps
  float m_all = -INFINITY, m_text = -INFINITY, m_ts = -INFINITY;
  for (int64_t i = threadIdx.x; i < n_vocab; i += blockDim.x) {
    const float v = row[i];
    m_all = fmaxf(m_all, v);
    if (i < tb) {
      m_text = fmaxf(m_text, v);
    } else {
      m_ts = fmaxf(m_ts, v);
    }
  }
  m_all = block_reduce<true>(m_all, red);
  m_text = block_reduce<true>(m_text, red);
  m_ts = block_reduce<true>(m_ts, red);
  float local = 0.f;
  for (int64_t i = threadIdx.x; i < n_vocab; i += blockDim.x) local += expf(row[i] - m_all);
  const float log_sum = logf(block_reduce<false>(local, red));
  // log-probabilities; a monotone rounding keeps the maxima at the maximal logits
  const float lp_ts_max = (m_ts - m_all) - log_sum, lp_text_max = (m_text - m_all) - log_sum;
  float timestamp_logprob = -INFINITY;
  if (m_ts != -INFINITY) {
    float s = 0.f;
    for (int64_t i = tb + threadIdx.x; i < n_vocab; i += blockDim.x) s += expf(((row[i] - m_all) - log_sum) - lp_ts_max);
    timestamp_logprob = logf(block_reduce<false>(s, red)) + lp_ts_max;
  }
  if (timestamp_logprob > lp_text_max) {
    for (int64_t i = threadIdx.x; i < tb; i += blockDim.x) row[i] = -INFINITY;
  }
}

}  // namespace

void decoder_timestamp_rules(at::Tensor& logits, const at::Tensor& tokens, int64_t sample_begin,
                             int64_t timestamp_begin, int64_t eot, int64_t no_timestamps,
                             int64_t max_initial_timestamp_index) {
  check_decoder_timestamp_rules_args(c10::DeviceType::CUDA, logits, tokens, sample_begin, timestamp_begin, eot,
                                     no_timestamps, max_initial_timestamp_index);
  const c10::cuda::CUDAGuard guard(logits.device());
  launch_pdl(timestamp_rules_kernel, dim3(static_cast<unsigned int>(logits.size(0))), dim3(kThreads), 0,
             logits.data_ptr<float>(), tokens.data_ptr<int64_t>(), logits.stride(0), tokens.stride(0), tokens.size(1),
             logits.size(1), sample_begin, timestamp_begin, eot, no_timestamps, max_initial_timestamp_index);
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_timestamp_rules", &decoder_timestamp_rules); }

}  // namespace fastwhisper::cuda
