"""Decoder step kernels one at a time: us per call and achieved bandwidth, against ATen/cuBLAS doing the same.

Each kernel runs back to back over `--copies` distinct weight sets (more bytes than the 50 MB L2, so
every call reads its weights from HBM, as in a decoder step), captured in one CUDA graph (as the
decoder step runs, so host launch cost is not what is measured), timed with CUDA events after a
warm-up; median of repeats. The floor of a call is its bytes / measured copy bandwidth. Shapes are large-v3's
(d = 1280, 20 heads, 1500 audio positions) unless --d / --heads say otherwise. fp16.

    python dev/profile/step_kernels_bench.py            # on the H100
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from common import measure_ceilings, per_call_us  # noqa: E402

from fastwhisper import ops  # noqa: E402


def row(name, us, nbytes, bandwidth, ref_us=None):
    floor = nbytes / bandwidth * 1e6
    ref = "" if ref_us is None else f"{ref_us:8.2f}"
    print(f"| {name:44s} | {us:8.2f} | {ref:>8s} | {floor:6.2f} | {nbytes / us / 1e3:7.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=1280)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--copies", type=int, default=24)
    parser.add_argument("--rows", default="1,5")
    parser.add_argument("--chain", action="store_true",
                        help="only the cross-attention block as the step runs it: LN+cross-q, cross-attention, "
                             "cross-out+residual, its first two or last two kernels alone, and the fused "
                             "decoder_cross_query_attention in their place, us per block")
    args = parser.parse_args()
    if args.chain:
        return cross_block_chain(args)
    dev, dt, d = "cuda", torch.float16, args.d
    bandwidth = measure_ceilings(dev)["copy_gb_per_s"] * 1e9
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s, d={d}, heads={args.heads}")
    print("| kernel | us/call | ATen us/call | floor us | GB/s |\n|---|---|---|---|---|")
    g = torch.Generator(device=dev).manual_seed(0)
    ln_w, ln_b = torch.ones(d, device=dev), torch.zeros(d, device=dev)
    with torch.inference_mode():
        for rows in map(int, args.rows.split(",")):
            for label, n, k, ln, gelu in (("qkv+LN", 3 * d, d, True, False), ("out+residual", d, d, False, False),
                                          ("mlp0+LN+GELU", 4 * d, d, True, True), ("mlp2+residual", d, 4 * d, False, False),
                                          ("vocab+LN", 51866, d, True, False)):
                copies = max(1, min(args.copies, int(150e6 // (n * k * 2))))
                ws = [torch.randn(n, k, device=dev, dtype=dt, generator=g) * 0.02 for _ in range(copies)]
                x = torch.randn(rows, k, device=dev, dtype=dt, generator=g)
                res = torch.randn(rows, n, device=dev, dtype=dt, generator=g) if "residual" in label else None
                lw, lb = (ln_w[:k], ln_b[:k]) if ln else (None, None)
                float_out = label.startswith("vocab")
                ours = [lambda w=w: ops.decoder_linear(x, [w], [None], lw, lb, residual=res, gelu=gelu,
                                                       float_output=float_out) for w in ws]
                aten = [lambda w=w: F.linear(x, w) for w in ws]  # cuBLAS GEMV alone (no LN/epilogue)
                row(f"decoder_linear {label} rows={rows} [{n}x{k}]", per_call_us(ours), n * k * 2, bandwidth,
                    per_call_us(aten))
                if label.startswith("vocab") and rows == 1:  # what reading these bytes alone takes: ATen's sum
                    sums = [lambda w=w: w.sum(dtype=torch.float32) for w in ws]
                    row(f"read-only reference: ATen sum [{n}x{k}]", per_call_us(sums), n * k * 2, bandwidth)
                del ws
            n_keys, heads = 1500, args.heads
            kvs = [(torch.randn(1, n_keys, d, device=dev, dtype=dt, generator=g),
                    torch.randn(1, n_keys, d, device=dev, dtype=dt, generator=g)) for _ in range(args.copies)]
            q = torch.randn(rows, d, device=dev, dtype=dt, generator=g)
            ours = [lambda k=k, v=v: ops.decoder_cross_attention(q, k, v, heads) for k, v in kvs]

            def sdpa(k, v):
                h = lambda t: t.view(1, -1, heads, d // heads).transpose(1, 2)  # noqa: E731
                return F.scaled_dot_product_attention(h(q.view(1, rows, d)), h(k), h(v))

            aten = [lambda k=k, v=v: sdpa(k, v) for k, v in kvs]
            row(f"decoder_cross_attention rows={rows} T={n_keys}", per_call_us(ours), 2 * n_keys * d * 2, bandwidth,
                per_call_us(aten))
            caches = [(torch.randn(rows, 448, d, device=dev, dtype=dt, generator=g),
                       torch.randn(rows, 448, d, device=dev, dtype=dt, generator=g)) for _ in range(8)]
            qkv = torch.randn(rows, 3 * d, device=dev, dtype=dt, generator=g)
            for p in (50, 200):
                pos = torch.tensor([p], device=dev)
                ours = [lambda c=c: ops.decoder_self_attention(qkv, c[0], c[1], pos, heads) for c in caches]
                row(f"decoder_self_attention rows={rows} p={p}", per_call_us(ours), 2 * rows * (p + 1) * d * 2,
                    bandwidth)
            logits = torch.randn(rows, 51866, device=dev, generator=g)
            tokens = torch.zeros(rows, 64, dtype=torch.long, device=dev)
            sums = torch.zeros(rows, device=dev)
            workspace = ops.decoder_greedy_workspace(rows, dev)
            ours = [lambda: ops.decoder_greedy_update(logits, tokens, sums, 10, 50257, workspace=workspace)]
            aten = [lambda: (logits.argmax(-1), F.log_softmax(logits, -1))]
            row(f"decoder_greedy_update rows={rows}", per_call_us(ours * 20), rows * 51866 * 4, bandwidth,
                per_call_us(aten * 20))


def cross_block_chain(args):
    """The decoder layer's cross-attention block as consecutive kernels in one CUDA graph (with PDL, as the
    step runs them), over --copies weight and K/V sets so that every block reads HBM: us per block for the
    whole block and for its sub-chains. The cross-attention is the op's own choice (SDPA for one row per window)."""
    dev, dt, d, heads, n_keys = "cuda", torch.float16, args.d, args.heads, 1500
    g = torch.Generator(device=dev).manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, device=dev, dtype=dt, generator=g)  # noqa: E731
    ln_w, ln_b = torch.ones(d, device=dev), torch.zeros(d, device=dev)
    sets = [dict(wq=rand(d, d) * 0.02, bq=rand(d), wo=rand(d, d) * 0.02, bo=rand(d), k=rand(1, n_keys, d),
                 v=rand(1, n_keys, d)) for _ in range(args.copies)]
    print(f"cross-attention block chain, d={d}, heads={heads}, T={n_keys}, fp16")
    print("| chain | rows | us per chain |\n|---|---|---|")
    with torch.inference_mode():
        for rows in map(int, args.rows.split(",")):
            x = rand(rows, d)
            q, a = rand(rows, d), rand(rows, d)
            crossq = lambda s: ops.decoder_linear(x, [s["wq"]], [s["bq"]], ln_w, ln_b)  # noqa: E731
            attend = lambda s, q: ops.decoder_cross_attention(q, s["k"], s["v"], heads)  # noqa: E731
            crossout = lambda s, a: ops.decoder_linear(a, [s["wo"]], [s["bo"]], residual=x)  # noqa: E731
            fused = lambda s: ops.decoder_cross_query_attention(x, ln_w, ln_b, s["wq"], s["bq"], s["k"], s["v"],  # noqa: E731
                                                                heads)
            chains = {
                "cross-q": lambda s: crossq(s),
                "attention": lambda s: attend(s, q),
                "cross-out": lambda s: crossout(s, a),
                "cross-q -> attention": lambda s: attend(s, crossq(s)),
                "attention -> cross-out": lambda s: crossout(s, attend(s, q)),
                "cross-q -> attention -> cross-out": lambda s: crossout(s, attend(s, crossq(s))),
                "fused cross-q+attention": lambda s: fused(s),
                "fused cross-q+attention -> cross-out": lambda s: crossout(s, fused(s)),
            }
            for name, chain in chains.items():
                us = per_call_us([lambda s=s: chain(s) for s in sets])
                print(f"| {name} | {rows} | {us:.2f} |", flush=True)


if __name__ == "__main__":
    main()
