"""The encoder MLP's first layer, gelu(x @ w^T + b), on the GPU: cuBLASLt + the exact-erf GELU pass against
the CUTLASS GEMM with the GELU in its epilogue, plus cuBLASLt's GEMM + bias alone (what the GELU costs).
Same process, same inputs; every path is checked against the float64 reference before it is timed, and
the profiler confirms that the op took the path named (below four waves of tiles the op declines the
CUTLASS GEMM: that row reads "other path taken"). The tile configurations and GELU forms compared at
34f3112 are in benchmarks/results/h100-2026-11-24-gelu-gemm-34f3112.md.

Each figure: ``--calls`` calls captured in one CUDA graph, the replay between two CUDA events, after a
warm-up, median of ``--repeats``; per call (the encoder runs as a CUDA graph too). Floor: the larger of
FLOPs at the measured fp16 GEMM rate and bytes (x, w, out once) at the measured copy bandwidth.

Usage: python benchmarks/gelu_gemm_bench.py [--out results.json] [--commit HASH]
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ceilings_text, device_name, git_commit, json_safe, measure_ceilings, per_call_us  # noqa: E402

import fastwhisper  # noqa: E402
from fastwhisper import ops  # noqa: E402

# name: (rows, K, N): fc1 of the encoder at 1500 frames per window
SHAPES = {"large-v3 b1": (1500, 1280, 5120), "large-v3 b2": (3000, 1280, 5120), "large-v3 b4": (6000, 1280, 5120),
          "large-v3 b8": (12000, 1280, 5120), "medium b8": (12000, 1024, 4096), "small b8": (12000, 768, 3072),
          "tiny b8": (12000, 384, 1536)}


def cuda_kernels(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def with_switches(switches: dict, fn):
    saved = {k: os.environ.get(k) for k in switches}
    os.environ.update(switches)
    try:
        return fn()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--commit", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    ceilings = measure_ceilings("cuda")
    # path: (switches, gelu flag of the op, reference applies GELU)
    paths = {"cublaslt bias only (no GELU)": ({"FASTWHISPER_GELU_GEMM": "cublaslt"}, False, False),
             "cublaslt + GELU pass": ({"FASTWHISPER_GELU_GEMM": "cublaslt"}, True, True)}
    paths["cutlass GELU epilogue"] = ({"FASTWHISPER_GELU_GEMM": "cutlass"}, True, True)
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape_name, (m, k, n) in SHAPES.items():
        x = torch.randn(m, k, device="cuda", dtype=dtype, generator=gen)
        w = torch.randn(n, k, device="cuda", dtype=dtype, generator=gen) / k**0.5
        b = torch.randn(n, device="cuda", dtype=dtype, generator=gen)
        pre = x.double() @ w.double().t() + b.double()
        exact = {True: torch.nn.functional.gelu(pre), False: pre}
        flops, nbytes = 2 * m * n * k, (m * k + n * k + m * n) * x.element_size()
        floor_us = max(flops / (ceilings["gemm_tflops"] * 1e12), nbytes / (ceilings["copy_gb_per_s"] * 1e9)) * 1e6
        for path, (switches, gelu, ref_gelu) in paths.items():
            call = lambda: ops.linear(x, w, b, None, gelu)  # noqa: E731
            out = with_switches(switches, call)
            ref = exact[ref_gelu]
            err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
            bad = not err <= 1e-2
            names = with_switches(switches, lambda: cuda_kernels(call))
            took_cutlass = any("cutlass" in name for name in names)
            if took_cutlass != path.startswith("cutlass"):  # the op took another path than the one named
                bad = True
            timed = lambda: per_call_us([call] * args.calls, args.warmup, args.repeats)  # noqa: E731
            us = None if bad else with_switches(switches, timed)
            rows.append({"shape": shape_name, "m": m, "k": k, "n": n, "path": path, "us": us, "rel_err": err,
                         "tflops": flops / (us * 1e-6) / 1e12 if us else None, "floor_us": floor_us,
                         "kernels": names,
                         "status": ("wrong output" if not err <= 1e-2 else "other path taken")
                         if bad else "ok"})
            print(f"{shape_name:12s} {path:30s} {us if us else float('nan'):8.1f} us  floor {floor_us:6.1f}  "
                  f"err {err:.1e}", flush=True)
    meta = {"commit": args.commit or git_commit(), "gpu": device_name("cuda"), "dtype": args.dtype,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "fastwhisper_version": fastwhisper.__version__,
            "calls": args.calls, "warmup": args.warmup, "repeats": args.repeats, "ceilings": ceilings}
    lines = [f"# gelu(x @ w^T + b): {meta['gpu']}, {args.dtype}", "",
             f"commit `{meta['commit']}`, {meta['date']}; {args.calls} calls per CUDA-graph replay between two "
             f"CUDA events, "
             f"warm-up {args.warmup}, median of {args.repeats}. Ceilings: {ceilings_text(ceilings)}.", "",
             "| shape | M | K | N | path | us per call | TFLOP/s | floor us | x over floor | rel err | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        us = f"{r['us']:.1f}" if r["us"] else "-"
        tf = f"{r['tflops']:.0f}" if r["tflops"] else "-"
        over = f"{r['us'] / r['floor_us']:.2f}" if r["us"] else "-"
        err = f"{r['rel_err']:.1e}"
        lines.append(f"| {r['shape']} | {r['m']} | {r['k']} | {r['n']} | {r['path']} | {us} | {tf} | "
                     f"{r['floor_us']:.1f} | {over} | {err} | {r['status']} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe({**meta, "records": rows}), indent=2) + "\n")
        args.out.with_suffix(".md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
