"""The CPU decoder step's largest parts, each against its floor and its faster but bit-different alternative
(issue 33: why the float32 step stays above CTranslate2's while its tokens stay openai-whisper's).

    python dev/profile/cpu_step_parts.py --threads 2 --out dev/profile/results-cpu/step-parts

tiny.en shapes, random float32 values, one token row. For each part: the path the C++ session takes (bit-equal
to openai-whisper's) and an alternative, timed in the same process (median of --repeats calls after 20
untimed), whether the alternative gives the same bits, and the part's floor (bytes / the measured read
bandwidth of a 256 MiB sum):
  vocabulary projection   x [1, 384] @ W [51864, 384]^T: fastwhisper's gemv_rows (csrc/decoder/cpu_gemv.cpp,
                          built here with torch.utils.cpp_extension), at::linear (MKL), and MKL on the
                          transposed weight [384, 51864] (a layout whose sums run in another order)
  cross-attention         one query over 1500 keys, 6 heads of 64: SDPA's CPU flash kernel (what whisper
                          runs) and softmax(q K^T / 8) V by matmuls
  GELU                    [1, 1536]: ATen's CPU GELU (oneDNN's erf kernel, a primitive made per call) and
                          ATen's own kernel (oneDNN off)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.cpp_extension import _get_build_directory, load

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_outputs  # noqa: E402

BIND = """
#include <torch/extension.h>
#include "decoder/cpu_gemv.h"
at::Tensor gemv(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(fastwhisper::decoder::gemv_takes(x, w, std::nullopt), "gemv_rows does not take this product");
  return fastwhisper::decoder::gemv_linear(x, w, std::nullopt);
}
"""


def median_us(fn, repeats: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ext = _build(ROOT)
    gen = torch.Generator().manual_seed(0)
    big = torch.rand(64 * 2**20, generator=gen)  # 256 MiB, written, so its pages are real
    read_gb_s = big.numel() * 4 / median_us(big.sum, 10) / 1e3

    rows = []

    def part(name, floor_bytes, ours, other, other_name):
        a, b = ours(), other()
        rows.append({"part": name, "floor_us": floor_bytes / read_gb_s / 1e3,
                     "session_us": median_us(ours, args.repeats), "alternative": other_name,
                     "alternative_us": median_us(other, args.repeats), "same_bits": bool(torch.equal(a, b))})

    n_vocab, d = 51864, 384
    w = torch.randn(n_vocab, d, generator=gen)
    x = torch.randn(1, d, generator=gen)
    wt = w.t().contiguous()
    assert torch.equal(ext.gemv(x, w), F.linear(x, w)), "gemv_rows must give at::linear's bits"
    part("vocabulary projection (gemv_rows)", 4 * n_vocab * d, lambda: ext.gemv(x, w), lambda: x @ wt,
         "MKL, transposed weight")
    rows.append({"part": "vocabulary projection (at::linear)", "floor_us": rows[-1]["floor_us"],
                 "session_us": median_us(lambda: F.linear(x, w), args.repeats), "alternative": "",
                 "alternative_us": None, "same_bits": True})

    q = torch.randn(1, 6, 1, 64, generator=gen)
    k = torch.randn(1, 6, 1500, 64, generator=gen)
    v = torch.randn(1, 6, 1500, 64, generator=gen)
    part("cross-attention, one query", 2 * 4 * k.numel(), lambda: F.scaled_dot_product_attention(q, k, v),
         lambda: torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1) @ v, "softmax(q K^T / 8) V")

    h = torch.randn(1, 1, 1536, generator=gen) * 3

    def aten_gelu():
        with torch.backends.mkldnn.flags(enabled=False):
            return F.gelu(h)

    part("GELU [1, 1536]", 2 * 4 * h.numel(), lambda: F.gelu(h), aten_gelu, "ATen's kernel (oneDNN off)")

    lines = [f"# CPU decoder step parts: tiny.en shapes, {args.threads} threads", "",
             f"torch {torch.__version__}; read bandwidth {read_gb_s:.1f} GB/s (sum of 256 MiB); median of "
             f"{args.repeats} calls. The floor reads every byte from memory once; a part whose data fit in the "
             "caches (one layer's cross-attention K/V, 4.6 MB) can run under it when called again and again, "
             "unlike in a step, where four layers' 18 MB do not fit.", "",
             "| part | floor us | session's path us | alternative | alternative us | alternative same bits |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        other = f"{r['alternative_us']:.1f}" if r["alternative_us"] is not None else ""
        lines.append(f"| {r['part']} | {r['floor_us']:.1f} | {r['session_us']:.1f} | {r['alternative']} | {other} | "
                     f"{'yes' if r['same_bits'] else 'no'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_outputs(args.out, {"threads": args.threads, "read_gb_s": read_gb_s, "rows": rows}, text)
    return 0


def _build(root: Path):
    """gemv_rows built as a small extension of its own (the package does not expose it)."""
    bind = Path(_get_build_directory("fastwhisper_cpu_gemv_dev", False)) / "bind.cpp"
    bind.write_text(BIND + '\nPYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("gemv", &gemv); }\n')
    return load("fastwhisper_cpu_gemv_dev", [str(bind), str(root / "csrc" / "decoder" / "cpu_gemv.cpp")],
                extra_cflags=["-O3", "-fopenmp", f"-I{root / 'csrc'}"], extra_ldflags=["-fopenmp"], verbose=False)


if __name__ == "__main__":
    sys.exit(main())
