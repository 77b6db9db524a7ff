"""gemv_rows (csrc/decoder/cpu_gemv.cpp) with and without a software prefetch, on tiny.en's decoder shapes.

    python dev/cpu/gemv_prefetch.py --threads 2

The CPU decoder step of one row is a matrix-vector product per Linear, bound by reading the weight. gemv_rows
keeps MKL's generic sgemv order (openai-whisper's bits) and reads four rows at a time. The variants here differ
only in a prefetch: each group of four rows asks for the bytes P floats past its own, P in --ahead (0: none,
the old kernel). The product ships P = 2048 (8 KB) for rows shorter than 1024 floats.

Each variant is first checked bit for bit against at::linear (the reference: whisper's x @ W.T through MKL),
then timed: the median of --repeats calls, each on another copy of the weight from a pool of 200 MB, so the
weight comes from memory as in a step, where tiny.en's 130 MB of decoder weights and cross K/V do not fit the
caches. The floor is the weight's bytes over the read bandwidth of a 256 MiB sum on the same threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.cpp_extension import load_inline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from common import time_calls  # noqa: E402

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <emmintrin.h>
#include <xmmintrin.h>

static inline float reduce_lanes(__m128 a) {
  const __m128 pairs = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// gemv_rows of csrc/decoder/cpu_gemv.cpp, the prefetch distance a parameter (0: none)
static void rows4(const float* x, const float* weight, float* y, int64_t begin, int64_t end, int64_t k,
                  int64_t ahead) {
  for (int64_t n = begin; n < end; n += 4) {
    const float* w[4] = {weight + n * k, weight + (n + 1) * k, weight + (n + 2) * k, weight + (n + 3) * k};
    if (ahead > 0) {
      for (int64_t i = 0; i < 4 * k; i += 16) _mm_prefetch(reinterpret_cast<const char*>(w[0] + ahead + i), _MM_HINT_T0);
    }
    float s[4];
    for (int r = 0; r < 4; ++r) s[r] = w[r][0] * x[0];
    for (int64_t i = 1; i < 4; ++i)
      for (int r = 0; r < 4; ++r) s[r] = s[r] + w[r][i] * x[i];
    __m128 a[4];
    for (int r = 0; r < 4; ++r) a[r] = _mm_set_ss(s[r]);
    for (int64_t i = 4; i < k; i += 4) {
      const __m128 xv = _mm_load_ps(x + i);
      for (int r = 0; r < 4; ++r) a[r] = _mm_add_ps(a[r], _mm_mul_ps(_mm_load_ps(w[r] + i), xv));
    }
    for (int r = 0; r < 4; ++r) y[n + r] = reduce_lanes(a[r]);
  }
}

// x [1, K] float32, weight [N, K] float32 (N a multiple of 4, K of 4) -> [1, N]
torch::Tensor gemv(torch::Tensor x, torch::Tensor weight, int64_t ahead) {
  TORCH_CHECK(weight.size(0) % 4 == 0 && weight.size(1) % 4 == 0 && weight.is_contiguous() && x.is_contiguous());
  const int64_t n = weight.size(0), k = weight.size(1);
  auto out = torch::empty({1, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = out.data_ptr<float>();
  at::parallel_for(0, n / 4, 16, [&](int64_t first, int64_t last) { rows4(xp, wp, yp, 4 * first, 4 * last, k, ahead); });
  return out;
}
"""

SHAPES = {  # tiny.en's one-row products: (N, K), calls per step
    "vocabulary projection": ((51864, 384), 1),
    "MLP in": ((1536, 384), 4),
    "MLP out": ((384, 1536), 4),
    "attention projections": ((384, 384), 24),
}


def median_us(fn, repeats: int) -> float:
    return statistics.median(time_calls(fn, "cpu", warmup=5, repeats=repeats)) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ahead", default="0,1024,2048,4096,8192", help="prefetch distances in floats (0: none)")
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3, help="rounds over every shape; the median of the rounds")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    aheads = [int(a) for a in args.ahead.split(",")]
    ext = load_inline("gemv_prefetch", cpp_sources=SOURCE, functions=["gemv"], extra_cflags=["-O3", "-fopenmp"],
                      extra_ldflags=["-fopenmp"])

    src = torch.randn(64 * 2**20)
    read_s = median_us(src.sum, 10) / 1e6
    read_gb_s = src.numel() * 4 / read_s / 1e9
    del src
    times = {(name, a): [] for name in SHAPES for a in aheads}
    for _ in range(args.rounds):
        for name, ((n, k), _) in SHAPES.items():
            n -= n % 4
            x = torch.randn(1, k)
            weight = torch.randn(n, k)
            reference = torch.nn.functional.linear(x, weight)
            for a in aheads:  # validation before timing
                assert torch.equal(ext.gemv(x, weight, a), reference), f"{name}: prefetch {a} changed the bits"
            pool = [torch.randn(n, k) for _ in range(max(2, 200_000_000 // (n * k * 4)))]
            counter = iter(range(10**9))
            for a in aheads:
                times[(name, a)].append(median_us(lambda: ext.gemv(x, pool[next(counter) % len(pool)], a), args.repeats))
            del pool
    print(f"# gemv_rows with a prefetch: tiny.en's one-row shapes, {args.threads} threads\n")
    print(f"torch {torch.__version__}; read bandwidth {read_gb_s:.1f} GB/s (sum of 256 MiB); every variant gives "
          "at::linear's bits. Median us of a call, weight from memory.\n")
    print("| product | [N, K] | calls a step | floor us | " + " | ".join(
        "no prefetch" if a == 0 else f"{a * 4 // 1024} KB ahead" for a in aheads) + " |")
    print("|---|---|---|---|" + "---|" * len(aheads))
    for name, ((n, k), calls) in SHAPES.items():
        floor = n * k * 4 / (read_gb_s * 1e9) * 1e6
        cells = " | ".join(f"{statistics.median(times[(name, a)]):.0f}" for a in aheads)
        print(f"| {name} | [{n}, {k}] | {calls} | {floor:.0f} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
