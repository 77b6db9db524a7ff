"""What a round costs when its window count differs from the last round's, against rounds of one size.

A server's rounds take the requests that have come, so the window count changes from round to round. On one warm
model (random weights of the real dims, fp16 activations on CUDA) this times a sequence of rounds of --sizes windows
(default: 12 counts between 20 and 44, in a fixed shuffled order, then the same sequence again; only the second pass
is timed, so what stays captured from the first pass counts as kept), each way:

- encoder, one call of W windows: FastAudioEncoder captures a CUDA graph per batch size and keeps 8, so most
  rounds capture (a warm-up run, then the capture, then the replay);
- encoder, the engine's calls (engine.scheduler.encoder_call_sizes: powers of two, 42 = 32 + 8 + 2);
- encoder, one call of --steady windows every round (every call a replay): the steady rate;
- decoder, decode_cpp of W windows x --tokens tokens on one session, which keeps a one-token graph per row count;
- decoder, the same with the session's graphs dropped before each round (set_cuda_graphs off, then on), which is
  what a change of row count cost before the session kept them;
- decoder, --steady windows every round.

Floors beside them: encoder FLOPs per window over the measured fp16 GEMM rate; decoder bytes per step (weights once
plus each row's cross-attention K/V) over the measured copy rate. CUDA events around each round; the report gives
the sum over the timed pass per window (encoder) and per window-token (decoder).

    python dev/profile/varying_rounds.py --model large-v3 --tokens 100 --out varying-rounds.json
"""

import argparse
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from common import (ceilings_text, decoder_floor, encoder_dims, fixed_length_options, floor_for,  # noqa: E402
                    make_mel, measure_ceilings, random_audio_features, random_whisper)


def timed_rounds(sizes, fn) -> float:
    """Milliseconds of fn(size) summed over sizes, the second of two passes."""
    total = 0.0
    for timed in (False, True):
        for size in sizes:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn(size)
            end.record()
            end.synchronize()
            if timed:
                total += start.elapsed_time(end)
    return total


def main() -> None:
    import fastwhisper
    from fastwhisper.decoder.cpp import decode_cpp, decoder_session
    from fastwhisper.engine.scheduler import encoder_call_sizes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="large-v3")
    p.add_argument("--sizes", default="", help="comma-separated window counts (default: 12 between 20 and 44)")
    p.add_argument("--steady", type=int, default=32)
    p.add_argument("--max_rows", type=int, default=64)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else random.Random(0).sample(range(20, 45), 12)
    ceilings = measure_ceilings("cuda")
    print(ceilings_text(ceilings), flush=True)

    source = random_whisper(args.model, "cuda")
    with torch.device("cuda"):
        model = fastwhisper.FastWhisper(source.dims)
    model.load_state_dict(source.state_dict())
    del source
    model.eval()
    dims = model.dims
    mels = make_mel(encoder_dims(args.model), max(max(sizes), args.steady))
    mels = mels.to("cuda").half()
    enc_params = sum(t.numel() for t in model.encoder.parameters())
    dec_params = sum(t.numel() for t in model.decoder.parameters())
    features = random_audio_features(dims, max(max(sizes), args.steady))
    session = decoder_session(model.decoder)
    options = fixed_length_options(model, args.tokens)

    def encode_whole(n):
        model.encoder(mels[:n])

    def encode_engine(n):
        start = 0
        for size in encoder_call_sizes(n, args.max_rows, True):
            model.encoder(mels[start:start + size])
            start += size

    def decode_kept(n):
        decode_cpp(model, features[:n], options, session=session)

    def decode_dropped(n):
        session.set_cuda_graphs(False)
        session.set_cuda_graphs(True)
        decode_cpp(model, features[:n], options, session=session)

    steady = [args.steady] * len(sizes)
    windows = sum(sizes)
    rows = []
    with torch.inference_mode():
        for name, fn, seq in (("encoder: one call per round", encode_whole, sizes),
                              ("encoder: power-of-two calls", encode_engine, sizes),
                              (f"encoder: {args.steady} windows every round", encode_whole, steady),
                              ("decoder: graphs kept per row count", decode_kept, sizes),
                              ("decoder: graphs dropped every round", decode_dropped, sizes),
                              (f"decoder: {args.steady} windows every round", decode_kept, steady)):
            ms = timed_rounds(seq, fn)
            n = sum(seq)
            per = ms / n if name.startswith("encoder") else ms / (n * args.tokens)
            row = {"case": name, "rounds": len(seq), "windows": n, "total_ms": ms,
                   ("ms_per_window" if name.startswith("encoder") else "ms_per_window_token"): per}
            rows.append(row)
            print(json.dumps(row), flush=True)
    mean = windows / len(sizes)
    enc_floor = floor_for(encoder_dims(args.model), 1, enc_params, ceilings)
    dec_floor = decoder_floor(dims, dec_params, round(mean), ceilings)
    floors = {"encoder_ms_per_window": enc_floor["floor_ms"],
              "decoder_ms_per_step_at_mean_rows": dec_floor["floor_ms"], "mean_rows": mean,
              "decoder_ms_per_window_token_at_mean_rows": dec_floor["floor_ms"] / mean}
    print(json.dumps(floors), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "model": args.model,
                                        "sizes": sizes, "tokens": args.tokens, "ceilings": ceilings,
                                        "floors": floors, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
