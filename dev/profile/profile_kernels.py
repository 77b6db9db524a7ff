"""Where the GPU time goes: per-kernel CUDA time of the encoder and of one decoder step (torch.profiler).

The profile that explains a benchmark row. Random weights of the real dims (benchmarks/common.py's
DIMS); fp16 activations on CUDA, as the benchmarks run.

  encoder   FastAudioEncoder (fp32 weights, fp16 mel) at --batch sizes: kernels per window
  decoder   the C++ decoding loop (greedy, --tokens tokens, EOT suppressed) with CUDA graphs off, so
            every kernel shows: kernels per token (the loop's per-token work, filters included,
            plus the once-per-window work spread over the tokens)

For each: a table of the top kernels by total CUDA time (calls, total, mean, share), the total
kernel time and the wall time per unit, so the gap between them (launch and host overhead) is visible.

    python dev/profile/profile_kernels.py --models large-v3,turbo,tiny --what encoder,decoder
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import whisper
from torch.profiler import ProfilerActivity, profile
from whisper.model import ModelDimensions, Whisper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from common import DIMS  # noqa: E402

import fastwhisper  # noqa: E402
from fastwhisper.decoder.cpp import decode_cpp, decoder_session  # noqa: E402


def kernel_table(prof, units, top):
    """Kernels of a profile, summed by name: [(name, calls per unit, us per unit)], total us per unit."""
    by_name = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            calls, us = by_name.get(e.name, (0, 0.0))
            by_name[e.name] = (calls + 1, us + e.device_time)
    total = sum(us for _, us in by_name.values())
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
    return [(name[:90], calls / units, us / units) for name, (calls, us) in rows], total / units


def wall_ms(fn, repeats=5):
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def report(title, fn, units, unit_name, top):
    fn()
    fn()
    wall = wall_ms(fn) * 1e3 / units
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows, total = kernel_table(prof, units, top)
    print(f"\n## {title}: wall {wall:.1f} us/{unit_name}, kernel time {total:.1f} us/{unit_name}, "
          f"{sum(r[1] for r in rows):.1f}+ kernels/{unit_name}")
    print(f"| kernel | calls/{unit_name} | us/{unit_name} | share |\n|---|---|---|---|")
    for name, calls, us in rows:
        print(f"| `{name}` | {calls:.2f} | {us:.1f} | {100 * us / total:.1f}% |")
    return {"title": title, "wall_us": wall, "kernel_us": total,
            "kernels": [{"name": n, "calls": c, "us": u} for n, c, u in rows]}


def build(name):
    dims = ModelDimensions(*DIMS[name])
    torch.manual_seed(0)
    model = Whisper(dims)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return fastwhisper.accelerate(model.cuda().eval()), dims


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="large-v3,turbo,tiny")
    parser.add_argument("--what", default="encoder,decoder")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []
    for name in args.models.split(","):
        model, dims = build(name)
        tokenizer = whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                                    language="en", task="transcribe")
        with torch.inference_mode():
            if "encoder" in args.what and name != "turbo":  # turbo's encoder is large-v3's
                for b in map(int, args.batch.split(",")):
                    mel = (torch.randn(b, dims.n_mels, 3000, device="cuda") * 0.5).half()
                    results.append(report(f"{name} encoder batch {b}", lambda: model.encoder(mel), b, "window",
                                          args.top))
            if "decoder" in args.what:
                features = (torch.randn(1, dims.n_audio_ctx, dims.n_audio_state, device="cuda") * 0.5).half()
                options = whisper.DecodingOptions(sample_len=args.tokens, language="en", without_timestamps=True,
                                                  suppress_tokens=[-1, tokenizer.eot], fp16=True)
                for graphs in (False, True):
                    session = decoder_session(model.decoder)
                    session.set_cuda_graphs(graphs)
                    label = "CUDA graphs (kernels inside graphs may not show)" if graphs else "no CUDA graphs"
                    results.append(report(f"{name} decoder greedy, {label}",
                                          lambda: decode_cpp(model, features, options, session=session),
                                          args.tokens, "token", args.top))
        del model
        torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
