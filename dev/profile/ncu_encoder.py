"""One encoder call (fp16, no CUDA graph) between cudaProfilerStart/Stop, for Nsight Compute, and a summary
of the profile: where a window's time goes, kernel by kernel, and how close each kernel runs to the
tensor-core and DRAM limits.

    ncu --profile-from-start off --clock-control none --csv --metrics METRICS \\
        python3 dev/profile/ncu_encoder.py large-v3 --batch 8 > enc.csv
    python3 dev/profile/ncu_encoder.py large-v3 --batch 8 --summarize enc.csv > enc.md   # no GPU needed

METRICS: gpu__time_duration.sum (required) and any of dram__throughput.avg.pct_of_peak_sustained_elapsed,
sm__throughput.avg.pct_of_peak_sustained_elapsed, sm__pipe_tensor_op_*_cycles_active.avg.pct_of_peak_sustained_elapsed
(tensor pipe busy) and sm__ops_path_tensor_src_fp16_dst_fp32.sum (tensor math ops). Random weights of the
model's real dims. Under ncu every kernel runs alone with the caches flushed: a kernel's duration is its
cost without overlap, and their sum leaves out the gaps between launches that the CUDA graph shortens.
"""
import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ncu_csv.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from ncu_csv import read_ncu_csv, short_kernel_name  # noqa: E402

TIME = "gpu__time_duration.sum"
TENSOR_OPS = "sm__ops_path_tensor_src_fp16_dst_fp32.sum"
PERCENT_COLUMNS = (  # (metric prefix, column title); a column appears where the profile has the metric
    ("sm__pipe_tensor_op", "tensor pipe %"),
    ("sm__throughput", "SM %"),
    ("dram__throughput", "DRAM %"),
)


def profile_encoder(name: str, batch: int) -> None:
    import torch

    import fastwhisper
    from common import encoder_dims, make_mel

    dims = encoder_dims(name)
    torch.manual_seed(0)
    encoder = fastwhisper.FastAudioEncoder(*dims).cuda().half().eval()
    encoder.cuda_graphs = False  # every kernel launched on its own
    mel = make_mel(dims, batch).to("cuda", torch.float16)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: cuBLASLt's and cuDNN's plans, the CUTLASS kernels' first launch
            encoder(mel)
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        out = encoder(mel)
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    if not torch.isfinite(out).all():
        raise SystemExit("the encoder's output is not finite")
    print(f"{name} batch {batch}: output {tuple(out.shape)}")


def summarize(path: Path, flops: int, batch: int) -> str:
    """A markdown table of an ncu --csv profile of one encoder call: kernels grouped by name and grid, the
    slowest first, each group's percentages averaged over its kernels' time (where ncu gave them; n/a is left
    out); ``flops``: the call's analytic FLOPs (multiply-add = 2), for the whole call's rate."""
    kernels = read_ncu_csv(path)
    present = {metric for m in kernels.values() for metric in m}
    columns = [(next(m for m in sorted(present) if m.startswith(prefix)), title)
               for prefix, title in PERCENT_COLUMNS if any(m.startswith(prefix) for m in present)]
    groups = collections.OrderedDict()
    for (_, kname, grid), m in kernels.items():
        g = groups.setdefault((short_kernel_name(kname), grid), collections.defaultdict(float))
        us = m.get(TIME, 0.0) / 1e3
        g["calls"] += 1
        g["us"] += us
        g["ops"] += m.get(TENSOR_OPS, 0.0)
        for metric, _ in columns:  # a percentage of elapsed cycles: weighted by the kernel's time
            if metric in m:
                g[metric] += m[metric] * us
                g[metric + "/us"] += us
    total_us = sum(g["us"] for g in groups.values())
    total_ops = sum(g["ops"] for g in groups.values())
    out = [f"{len(kernels)} kernels, {total_us:.1f} us in all for {batch} window(s), {total_us / batch:.1f} us per "
           f"window (each kernel alone, caches flushed); analytic {flops / 1e12:.3f} TFLOP: "
           f"{flops / total_us / 1e6:.0f} TFLOP/s over the kernels' sum."]
    if TENSOR_OPS in present:
        out.append(f"Tensor math ops counted by ncu: {total_ops / 1e12:.3f} T ({total_ops / flops:.2f} x the "
                   "analytic FLOPs).")
    head = ["kernel", "grid", "calls", "us", "us/call", "share %"]
    head += ["tensor TFLOP/s"] if TENSOR_OPS in present else []
    head += [title for _, title in columns]
    out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (short, grid), g in sorted(groups.items(), key=lambda item: -item[1]["us"]):
        n, us = int(g["calls"]), g["us"]
        cells = [f"`{short}`", grid, str(n), f"{us:.1f}", f"{us / n:.2f}", f"{100 * us / total_us:.1f}"]
        if TENSOR_OPS in present:
            cells.append(f"{g['ops'] / us / 1e6:.0f}" if g["ops"] else "")
        cells += [f"{g[metric] / g[metric + '/us']:.1f}" if g[metric + "/us"] else "" for metric, _ in columns]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="large-v3")
    parser.add_argument("--batch", type=int, default=1, help="windows in the one encoder call")
    parser.add_argument("--summarize", type=Path, metavar="CSV", help="print the markdown summary of an ncu --csv file")
    args = parser.parse_args()
    if args.summarize:
        from common import encoder_dims, encoder_flops

        print(summarize(args.summarize, encoder_flops(encoder_dims(args.model), args.batch), args.batch))
    else:
        profile_encoder(args.model, args.batch)


if __name__ == "__main__":
    main()
