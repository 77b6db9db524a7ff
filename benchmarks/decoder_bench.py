"""Decoder speed: ms per token of openai-whisper's decoding loop and fastwhisper's C++ loop.

For each model size (random weights of the real dims, seed 0) the same encoded audio window is
decoded with a fixed token count: `whisper.decode` (openai-whisper's DecodingTask: PyTorch decoder
with its kv-cache hooks; fastwhisper's hybrid mode runs exactly this decoder) and
`fastwhisper.decoder.cpp.decode_cpp` (the C++ loop on a reused DecoderSession). The end-of-text token
is suppressed so that every run decodes exactly `--tokens` tokens (greedy at batch 1, and beam search
of 5); ms/token = median time of the whole decode call / tokens, so it includes the once-per-window
work (cross-attention K/V, the first multi-token step). fp32 weights with fp16 activations on CUDA
(as openai-whisper runs), fp32 on CPU. CUDA events, warm-up, median of repeats.

Correctness: random weights give near-tied logits, where fp16 rounding differences between any two
implementations flip tokens, so the check runs in fp32: both loops decode `--check-tokens` tokens in
fp32 and must agree token for token, or the fastwhisper row is reported as a failure, not a time.
The fp16 run's agreement (tokens equal to openai-whisper's before the first difference) is reported
beside the time. fastwhisper's loop is timed with its CUDA graphs (the default) and without.

Floor per token: bytes the decoder must read per step (its weights in fp16 plus the cached cross
K/V of every layer) / measured copy bandwidth.

    python benchmarks/decoder_bench.py --out benchmarks/results/<gpu>-<date>-decoder.json
"""

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch
import whisper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DIMS, common_prefix, decoder_floor, measure_ceilings, random_whisper, time_calls_keep  # noqa: E402

from fastwhisper.decoder.cpp import decode_cpp, decoder_session  # noqa: E402


def timed(fn, device, warmup, repeats):
    """(median ms, last output) of ``repeats`` timed calls after ``warmup`` untimed ones."""
    times, out = time_calls_keep(fn, device, warmup, repeats)
    return statistics.median(times), out


def run_model(name, args, ceilings):
    device = args.device
    model = random_whisper(name).to(device)
    dims = model.dims
    act = torch.float16 if device == "cuda" else torch.float32
    features = (torch.randn(1, dims.n_audio_ctx, dims.n_audio_state, device=device) * 0.5).to(act)
    tokenizer = whisper.tokenizer.get_tokenizer(True, num_languages=model.num_languages, language="en", task="transcribe")
    session = decoder_session(model.decoder)
    decoder_params = sum(p.numel() for p in model.decoder.parameters())
    eager_session = decoder_session(model.decoder)
    eager_session.set_cuda_graphs(False)
    rows = []
    for mode, extra in (("greedy", {}), ("beam5", {"beam_size": 5})):
        common = dict(language="en", without_timestamps=True, suppress_tokens=[-1, tokenizer.eot], **extra)
        options = whisper.DecodingOptions(sample_len=args.tokens, fp16=device == "cuda", **common)
        check = whisper.DecodingOptions(sample_len=args.check_tokens, fp16=False, **common)
        with torch.inference_mode():
            fp32_same = (whisper.decode(model, features.float(), check)[0].tokens
                         == decode_cpp(model, features.float(), check, session=session)[0].tokens)
            ref_ms, ref = timed(lambda: whisper.decode(model, features, options), device, args.warmup, args.repeats)
            cpp_ms, ours = timed(lambda: decode_cpp(model, features, options, session=session), device,
                                 args.warmup, args.repeats)
            eager_ms, eager = timed(lambda: decode_cpp(model, features, options, session=eager_session), device,
                                    args.warmup, args.repeats)
        floor_ms = decoder_floor(dims, decoder_params, 5 if mode == "beam5" else 1, ceilings)["floor_ms"]
        for impl, ms, out in (("openai-whisper / torch", ref_ms, ref), ("fastwhisper cpp", cpp_ms, ours),
                              ("fastwhisper cpp, no CUDA graphs", eager_ms, eager)):
            ok = fp32_same or impl.startswith("openai")
            agree = common_prefix(ref[0].tokens, out[0].tokens)
            rows.append({"model": name, "mode": mode, "impl": impl, "tokens": args.tokens,
                         "ms_per_token": ms / args.tokens if ok else None, "floor_ms_per_token": floor_ms,
                         "status": "ok" if ok else f"fp32 tokens differ from openai-whisper ({args.check_tokens} checked)",
                         "tokens_decoded": len(out[0].tokens), "tokens_equal_to_openai_before_first_difference": agree})
            print(f"{name:9s} {mode:6s} {impl:32s} {ms / args.tokens:7.3f} ms/tok  fp32 same {fp32_same}  "
                  f"fp16 agreement {agree}/{len(ref[0].tokens)}  floor {floor_ms if floor_ms is None else round(floor_ms, 3)}",
                  flush=True)
    del model, session, eager_session
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DIMS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--check-tokens", type=int, default=32, help="fp32 tokens that must equal openai-whisper's")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    ceilings = measure_ceilings(args.device) if args.device == "cuda" else None
    bandwidth = ceilings["copy_gb_per_s"] * 1e9 if ceilings else None
    rows = [row for name in args.models.split(",") for row in run_model(name, args, ceilings)]
    table = ["| model | mode | impl | ms/token | floor ms/token | fp16 tokens equal to openai-whisper's | status |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = "-" if r["ms_per_token"] is None else f"{r['ms_per_token']:.3f}"
        floor = "-" if r["floor_ms_per_token"] is None else f"{r['floor_ms_per_token']:.3f}"
        agree = f"{r['tokens_equal_to_openai_before_first_difference']}/{r['tokens_decoded']}"
        table.append(f"| {r['model']} | {r['mode']} | {r['impl']} | {ms} | {floor} | {agree} | {r['status']} |")
    print("\n".join(table))
    if args.out:
        meta = {"commit": args.commit, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
                "copy_bandwidth_bytes_per_s": bandwidth, "tokens": args.tokens, "warmup": args.warmup,
                "repeats": args.repeats, "check_tokens": args.check_tokens}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        Path(args.out).with_suffix(".md").write_text("\n".join(table) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
