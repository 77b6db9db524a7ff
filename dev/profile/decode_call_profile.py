"""Where a decode_cpp call's time goes besides its decoding steps: the fixed cost of a call.

For each model (random weights of the real dims, fp16 activations, on a CUDA GPU) and each window count
(rows of different audio decoded together), one DecoderSession decodes encoded audio features with EOT
suppressed, 1 token and 1 + --tokens tokens (CUDA events, warm-up, median of repeats):

    step ms = (t(1 + tokens) - t(1)) / tokens       fixed ms per call = t(1) - step ms

Then one 1-token call under cProfile (the Python and C++ functions on the host, by cumulative time) and
one under torch.profiler (kernel count and summed kernel time on the GPU, host ops by self time), so the
fixed cost splits into host work, GPU work and waiting.

    python dev/profile/decode_call_profile.py --models tiny,large-v3 --windows 1,8 --out results/x.json
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from common import (check_model_names, device_name, fixed_length_options, git_commit, host_profile,  # noqa: E402
                    random_audio_features, random_whisper, time_calls, write_report)


def device_profile(fn, top: int):
    """Kernel count and summed kernel microseconds of one call of fn, and the host ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_op = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return {"kernels": len(kernels), "kernel_us": sum(e.device_time for e in kernels),
            "host_ops": [(e.key, e.count, e.self_cpu_time_total) for e in by_op]}


def measure(name: str, windows: int, tokens: int, warmup: int, repeats: int, top: int):
    from fastwhisper.decoder.cpp import decode_cpp, decoder_session

    model = random_whisper(name, device="cuda")
    features = random_audio_features(model.dims, windows)
    session = decoder_session(model.decoder)

    def call(n):
        options = fixed_length_options(model, n)
        return lambda: decode_cpp(model, features, options, session=session)

    with torch.inference_mode():
        short_ms = statistics.median(time_calls(call(1), "cuda", warmup, repeats))
        long_ms = statistics.median(time_calls(call(1 + tokens), "cuda", warmup, repeats))
        step_ms = (long_ms - short_ms) / tokens
        host = host_profile(call(1), top)
        device = device_profile(call(1), top)
    del model, session
    torch.cuda.empty_cache()
    return {"model": name, "windows": windows, "tokens": tokens, "call_1_ms": short_ms, "call_long_ms": long_ms,
            "step_ms": step_ms, "fixed_ms": short_ms - step_ms, "host_top": host, **device}


def markdown(results, meta):
    lines = [f"# Fixed cost of a decode_cpp call: {meta['gpu']}", "",
             f"commit `{meta['commit']}`; `dev/profile/decode_call_profile.py`; fp16, random weights, EOT suppressed; "
             f"median of {meta['repeats']} after {meta['warmup']} warm-up calls.", "",
             "| model | windows | 1-token call ms | step ms | fixed ms per call | kernels in a 1-token call | their summed GPU ms |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['windows']} | {r['call_1_ms']:.2f} | {r['step_ms']:.3f} | {r['fixed_ms']:.2f} | "
                     f"{r['kernels']} | {r['kernel_us'] / 1e3:.2f} |")
    for r in results:
        lines += ["", f"## {r['model']}, {r['windows']} window(s): one 1-token call", "",
                  "| host function (cProfile) | calls | cumulative ms |", "|---|---|---|"]
        lines += [f"| `{n}` | {c} | {ms:.2f} |" for n, c, ms in r["host_top"]]
        lines += ["", "| host op (torch.profiler) | calls | self CPU ms |", "|---|---|---|"]
        lines += [f"| `{n}` | {c} | {us / 1e3:.2f} |" for n, c, us in r["host_ops"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,large-v3")
    parser.add_argument("--windows", default="1,8", help="comma list of windows decoded together")
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--commit", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    models = check_model_names(parser, args.models)
    if not torch.cuda.is_available():
        sys.exit("decode_call_profile.py needs a CUDA GPU")
    results = [measure(name, int(w), args.tokens, args.warmup, args.repeats, args.top)
               for name in models for w in args.windows.split(",")]
    meta = {"commit": args.commit or git_commit(), "gpu": device_name("cuda"), "warmup": args.warmup,
            "repeats": args.repeats}
    write_report(args.out, meta, results, markdown(results, meta))


if __name__ == "__main__":
    main()
