"""ATen's CPU attention for one query row over tiny.en's cross-attention K/V in two layouts.

    python dev/cpu/cross_attention_layout.py --threads 2

A CPU decode step attends from one token (or `group` tokens, the rows of one audio folded into the query) to the
1500 encoder frames of each of 4 layers. The K/V are [B, 1500, 384] as the K/V Linears write them; the attention
reads them as [B, 6, 1500, 64] heads, either as a strided view of that tensor (what the session did) or from a
head-major copy made once per window (what it does: csrc/decoder/session.cpp keeps cross_k_/cross_v_ head-major on
the CPU). Each variant is first checked for the same bits as the strided one, then timed over the 4 layers, with
a 64 MB buffer read between calls so the 18 MB of K/V come from memory as in a step. The floor is their bytes over
the read bandwidth of a 256 MiB sum.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from common import time_calls  # noqa: E402

D, HEADS, FRAMES, LAYERS = 384, 6, 1500, 4


def heads(x: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, H, L, Dh] view
    return x.view(x.size(0), x.size(1), HEADS, D // HEADS).transpose(1, 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=100)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    evict = torch.randn(16 * 2**20)
    big = torch.randn(64 * 2**20)
    read_ms = statistics.median(time_calls(big.sum, "cpu", warmup=2, repeats=10))
    read_gb_s = big.numel() * 4 / read_ms / 1e6
    del big
    floor_ms = LAYERS * 2 * FRAMES * D * 4 / read_gb_s / 1e6
    print(f"# ATen CPU attention over tiny.en's cross K/V, {args.threads} threads\n")
    print(f"torch {torch.__version__}; read bandwidth {read_gb_s:.1f} GB/s; median of {args.repeats}; floor "
          f"(4 layers' K/V from memory) {floor_ms:.2f} ms.\n")
    print("| query rows | [B, 1500, 384] view, ms | head-major copy, ms | same bits |")
    print("|---|---|---|---|")
    for rows in (1, 5):
        q = torch.randn(1, rows, D)
        keys = [torch.randn(1, FRAMES, D) for _ in range(LAYERS)]
        values = [torch.randn(1, FRAMES, D) for _ in range(LAYERS)]
        keys_h = [heads(k).contiguous() for k in keys]
        values_h = [heads(v).contiguous() for v in values]

        def strided():
            evict.add_(1.0)
            return [F.scaled_dot_product_attention(heads(q), heads(k), heads(v)) for k, v in zip(keys, values)]

        def head_major():
            evict.add_(1.0)
            return [F.scaled_dot_product_attention(heads(q), k, v) for k, v in zip(keys_h, values_h)]

        same = all(torch.equal(a, b) for a, b in zip(strided(), head_major()))
        touch = statistics.median(time_calls(lambda: evict.add_(1.0), "cpu", warmup=2, repeats=args.repeats))
        t_strided = statistics.median(time_calls(strided, "cpu", warmup=5, repeats=args.repeats)) - touch
        t_head = statistics.median(time_calls(head_major, "cpu", warmup=5, repeats=args.repeats)) - touch
        print(f"| {rows} | {t_strided:.3f} | {t_head:.3f} | {'yes' if same else 'no'} |")
    print("\nTimes are over the 4 layers, less the 64 MB buffer pass that evicts the caches between calls.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
