"""What the engine's scheduler thread adds to one decode call: the same fixed-length decode timed three ways,
interleaved call by call on one warm model (random weights of the real dims, fp16, batch 1, EOT suppressed):

    engine   fastwhisper.decode(model, features, options, decoder=...)   (runs on the model's scheduler thread)
    direct   fastwhisper.decoder.decode(model, features, options, ...)   (the same work on the caller's thread)

Floor: each call runs the same decoder steps, so the two medians differ only by the engine's hand-off (a queue
put, a future, a thread switch) and anything the scheduler thread does differently. CUDA events, warm-up,
median of --repeats calls per path.

    python dev/profile/engine_call_overhead.py --models large-v3,turbo --tokens 50 --decoders cpp,torch
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from common import fixed_length_options, random_audio_features, random_whisper  # noqa: E402


def timed(fn) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def main() -> None:
    import fastwhisper
    import fastwhisper.decoder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="large-v3,turbo")
    p.add_argument("--decoders", default="cpp")
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--beams", default="1,5")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        source = random_whisper(name, "cuda")
        with torch.device("cuda"):
            model = fastwhisper.FastWhisper(source.dims)
        model.load_state_dict(source.state_dict())
        del source
        model.eval()
        features = random_audio_features(model.dims, 1)
        for decoder in args.decoders.split(","):
            for beam in (int(b) for b in args.beams.split(",")):
                options = fixed_length_options(model, args.tokens, **({"beam_size": beam} if beam > 1 else {}))
                paths = {
                    "engine": lambda m=model, o=options, d=decoder: fastwhisper.decode(m, features, o, decoder=d),
                    "direct": lambda m=model, o=options, d=decoder: fastwhisper.decoder.decode(m, features, o, decoder=d),
                }
                outs = {k: fn() for k, fn in paths.items()}
                if outs["engine"][0].tokens != outs["direct"][0].tokens:
                    raise SystemExit(f"{name} {decoder} beam {beam}: the engine's tokens differ from the direct call's")
                for _ in range(args.warmup):
                    for fn in paths.values():
                        fn()
                times = {k: [] for k in paths}
                for _ in range(args.repeats):
                    for k, fn in paths.items():
                        times[k].append(timed(fn))
                row = {"model": name, "decoder": decoder, "beam": beam, "tokens": args.tokens}
                for k, ts in times.items():
                    row[f"{k}_ms"] = statistics.median(ts)
                    row[f"{k}_ms_per_token"] = statistics.median(ts) / args.tokens
                row["engine_minus_direct_ms"] = row["engine_ms"] - row["direct_ms"]
                rows.append(row)
                print(json.dumps(row), flush=True)
        del model
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
