#include "decoder/cpu_gemv.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#ifndef _OPENMP
#error "cpu_gemv.cpp splits work over torch's OpenMP threads: compile it with -fopenmp (CMakeLists.txt)"
#endif

namespace fastwhisper::decoder {

#if defined(__SSE2__)

// Lane sums of four accumulators, (l0 + l2) + (l1 + l3) each.
static inline float reduce_lanes(__m128 a) {
  const __m128 pairs = _mm_add_ps(a, _mm_movehl_ps(a, a));  // [l0 + l2, l1 + l3, ...]
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// Rows shorter than kPrefetchRowFloats: four such rows are streams too short for the hardware prefetcher to
// ramp up on, so each group of four rows asks for the bytes kPrefetchAhead floats (8 KB) past its own. Longer
// rows are left to the hardware prefetcher, which keeps up with them and which the extra requests only slow
// (dev/cpu/gemv_prefetch.py times both).
constexpr int64_t kPrefetchRowFloats = 1024;
constexpr int64_t kPrefetchAhead = 2048;

void gemv_rows(const float* x, const float* weight, const float* bias, float* y, int64_t begin, int64_t end,
               int64_t k) {
  const bool prefetch = k < kPrefetchRowFloats;
  for (int64_t n = begin; n < end; n += 4) {  // four outputs share each load of x
    const float* w0 = weight + n * k;
    const float* w1 = w0 + k;
    const float* w2 = w1 + k;
    const float* w3 = w2 + k;
    if (prefetch) {  // a hint: never faults, also past the weight's end
      for (int64_t i = 0; i < 4 * k; i += 16) {  // one 64-byte line per 16 floats
        _mm_prefetch(reinterpret_cast<const char*>(w0 + kPrefetchAhead + i), _MM_HINT_T0);
      }
    }
    float s0 = w0[0] * x[0], s1 = w1[0] * x[0], s2 = w2[0] * x[0], s3 = w3[0] * x[0];
    for (int64_t i = 1; i < 4; ++i) {
      s0 = s0 + w0[i] * x[i];
      s1 = s1 + w1[i] * x[i];
      s2 = s2 + w2[i] * x[i];
      s3 = s3 + w3[i] * x[i];
    }
    __m128 a0 = _mm_set_ss(s0), a1 = _mm_set_ss(s1), a2 = _mm_set_ss(s2), a3 = _mm_set_ss(s3);
    for (int64_t i = 4; i < k; i += 4) {
      const __m128 xv = _mm_load_ps(x + i);
      a0 = _mm_add_ps(a0, _mm_mul_ps(_mm_load_ps(w0 + i), xv));
      a1 = _mm_add_ps(a1, _mm_mul_ps(_mm_load_ps(w1 + i), xv));
      a2 = _mm_add_ps(a2, _mm_mul_ps(_mm_load_ps(w2 + i), xv));
      a3 = _mm_add_ps(a3, _mm_mul_ps(_mm_load_ps(w3 + i), xv));
    }
    const float b0 = bias ? bias[n] : 0.0f, b1 = bias ? bias[n + 1] : 0.0f;
    const float b2 = bias ? bias[n + 2] : 0.0f, b3 = bias ? bias[n + 3] : 0.0f;
    y[n] = reduce_lanes(a0) + b0;  // MKL adds y (the bias, or zeros) after the sum
    y[n + 1] = reduce_lanes(a1) + b1;
    y[n + 2] = reduce_lanes(a2) + b2;
    y[n + 3] = reduce_lanes(a3) + b3;
  }
}

#else

void gemv_rows(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t) {
  TORCH_CHECK(false, "fastwhisper: gemv_rows is built for x86-64 (SSE2) only");
}

#endif

static bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

at::Tensor gemv_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const int64_t n = weight.size(0), k = weight.size(1);
  at::Tensor out = at::empty({1, n}, x.options());  // [1, N]
  const float* xp = x.const_data_ptr<float>();
  const float* wp = weight.const_data_ptr<float>();
  const float* bp = bias.has_value() ? bias->const_data_ptr<float>() : nullptr;
  float* yp = out.mutable_data_ptr<float>();
  const int64_t groups = n / 4;
  constexpr int64_t kGroupsPerTask = 16;  // 64 outputs at least per thread
  at::parallel_for(0, groups, kGroupsPerTask, [&](int64_t first, int64_t last) {
    gemv_rows(xp, wp, bp, yp, 4 * first, 4 * last, k);
  });
  if (const int64_t tail = n % 4; tail > 0) {
    const std::optional<at::Tensor> tail_bias =
        bias.has_value() ? std::optional<at::Tensor>(bias->narrow(0, n - tail, tail)) : std::nullopt;
    out.narrow(1, n - tail, tail).copy_(at::linear(x.view({1, k}), weight.narrow(0, n - tail, tail), tail_bias));
  }
  return out;
}

bool gemv_takes(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
#if defined(__SSE2__)
  const int64_t k = weight.dim() == 2 ? weight.size(1) : 0;
  if (k < 8 || k % 4 != 0 || weight.size(0) < 4 || x.numel() != k || x.scalar_type() != at::kFloat ||
      weight.scalar_type() != at::kFloat || !x.is_contiguous() || !weight.is_contiguous() ||
      !aligned16(x.const_data_ptr()) || !aligned16(weight.const_data_ptr())) {
    return false;
  }
  if (bias.has_value() && (bias->scalar_type() != at::kFloat || !bias->is_contiguous() || bias->dim() != 1 ||
                           bias->size(0) != weight.size(0))) {
    return false;
  }
  using Key = std::tuple<int64_t, int64_t, bool, int>;  // n, k, bias, threads
  static std::mutex mutex;
  static std::map<Key, bool> same_bits;
  const Key key{weight.size(0), k, bias.has_value(), at::get_num_threads()};
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = same_bits.find(key); it != same_bits.end()) return it->second;
  // [1, K]; a generator of its own, so the global one (temperature sampling) is left as it was
  const at::Tensor probe = at::randn({1, k}, at::detail::createCPUGenerator(20261207), x.options());
  const bool same = at::equal(gemv_linear(probe, weight, bias), at::linear(probe, weight, bias));
  same_bits.emplace(key, same);
  return same;
#else
  (void)x, (void)weight, (void)bias;
  return false;
#endif
}

}  // namespace fastwhisper::decoder
