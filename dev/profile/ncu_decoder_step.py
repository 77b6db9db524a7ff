"""One one-token decoder step (step ops, no CUDA graph) between cudaProfilerStart/Stop, for Nsight Compute,
and a summary of the profile.

    ncu --profile-from-start off --clock-control none --csv \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \\
        python3 dev/profile/ncu_decoder_step.py large-v3 > step.csv
    python3 dev/profile/ncu_decoder_step.py --summarize step.csv > step.md   # no GPU needed

Random weights of the model's real dims, fp16 activations, one row at position 4. Under ncu every
kernel runs alone with the caches flushed, so its duration is its cost without overlap with its
neighbours (no PDL, no L2 reuse): the fixed cost of a kernel shows beside the bytes it moves. The
step's own range check (two small reductions) is profiled too.
"""
import argparse
import collections
import sys
from pathlib import Path

from ncu_csv import read_ncu_csv, short_kernel_name

METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__throughput.avg.pct_of_peak_sustained_elapsed")


def profile_step(name: str) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
    from common import random_whisper

    from fastwhisper.decoder.cpp import decoder_session

    model = random_whisper(name, device="cuda")
    dims = model.dims
    session = decoder_session(model.decoder)
    session.set_cuda_graphs(False)
    features = (torch.randn(1, dims.n_audio_ctx, dims.n_audio_state, device="cuda") * 0.5).half()
    with torch.inference_mode():
        session.set_audio(features, 1)
        session.step(torch.tensor([[50258, 50259, 50359]], device="cuda"))
        session.step(torch.tensor([[440]], device="cuda"))  # warm-up of the one-token path
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        session.step(torch.tensor([[1012]], device="cuda"))
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    print("step ops:", session.uses_step_ops(), "offset", session.offset())


def summarize(path: Path) -> str:
    """A markdown table of an ncu --csv profile: kernels grouped by name, grid and DRAM bytes (to 0.5 MB, which
    tells the decoder's linear layers apart), in first-seen order."""
    kernels = read_ncu_csv(path)
    groups = collections.OrderedDict()
    for (_, name, grid), m in kernels.items():
        short = short_kernel_name(name)
        size = round(m[METRICS[1]] / 5e5) / 2
        g = groups.setdefault((short, grid, size), {"calls": 0, "us": 0.0, "bytes": 0.0, "pct": 0.0})
        g["calls"] += 1
        g["us"] += m[METRICS[0]] / 1e3
        g["bytes"] += m[METRICS[1]]
        g["pct"] += m[METRICS[2]]
    total = sum(g["us"] for g in groups.values())
    out = [f"{len(kernels)} kernels, {total:.1f} us in all (each alone, caches flushed).", "",
           "| kernel | grid | calls | us | us/call | DRAM MB/call | GB/s | DRAM % of peak |", "|---|---|---|---|---|---|---|---|"]
    for (short, grid, _), g in groups.items():
        n = g["calls"]
        out.append(f"| `{short}` | {grid} | {n} | {g['us']:.1f} | {g['us'] / n:.2f} | {g['bytes'] / n / 1e6:.2f} | "
                   f"{g['bytes'] / g['us'] / 1e3:.0f} | {g['pct'] / n:.1f} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="large-v3")
    parser.add_argument("--summarize", type=Path, metavar="CSV", help="print the markdown summary of an ncu --csv file")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize))
    else:
        profile_step(args.model)


if __name__ == "__main__":
    main()
