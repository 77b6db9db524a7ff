"""What the engine's scheduler thread adds to one decode call: the same fixed-length decode timed three ways,
interleaved call by call on one warm model (random weights of the real dims, fp16, batch 1, EOT suppressed):

    engine   fastwhisper.decode(model, features, options, decoder=...)   (runs on the model's scheduler thread)
    direct   fastwhisper.decoder.decode(model, features, options, ...)   (the same work on the caller's thread)
    thread   the direct call run by a plain worker thread (a queue and a future, no engine)

With --profile, one call of each path also runs under cProfile on the thread that does the work, and the
functions with the most own time are printed, so a difference between the paths shows where it is.

Floor: each call runs the same decoder steps, so the two medians differ only by the engine's hand-off (a queue
put, a future, a thread switch) and anything the scheduler thread does differently. CUDA events, warm-up,
median of --repeats calls per path.

    python dev/profile/engine_call_overhead.py --models large-v3,turbo --tokens 50 --decoders cpp,torch
"""

import argparse
import cProfile
import io
import json
import pstats
import queue
import statistics
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from common import fixed_length_options, random_audio_features, random_whisper, time_calls  # noqa: E402


class Worker:
    """A plain long-lived thread that runs the functions it is given."""

    def __init__(self):
        self.queue = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            fn, future = self.queue.get()
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def call(self, fn):
        future = Future()
        self.queue.put((fn, future))
        return future.result()


def profiled(fn, top: int) -> str:
    """fn's own-time profile (on the thread that runs it) as text."""
    profile = cProfile.Profile()
    profile.runcall(fn)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


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
    p.add_argument("--profile", type=int, default=0, help="print this many functions of each path's profile")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rows = []
    worker = Worker()
    for name in args.models.split(","):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        source = random_whisper(name, device)
        with torch.device(device):
            model = fastwhisper.FastWhisper(source.dims)
        model.load_state_dict(source.state_dict())
        del source
        model.eval()
        features = random_audio_features(model.dims, 1, device)
        for decoder in args.decoders.split(","):
            for beam in (int(b) for b in args.beams.split(",")):
                options = fixed_length_options(model, args.tokens, fp16=device == "cuda",
                                               **({"beam_size": beam} if beam > 1 else {}))
                paths = {
                    "engine": lambda m=model, o=options, d=decoder: fastwhisper.decode(m, features, o, decoder=d),
                    "direct": lambda m=model, o=options, d=decoder: fastwhisper.decoder.decode(m, features, o, decoder=d),
                }
                paths["thread"] = lambda direct=paths["direct"]: worker.call(direct)
                outs = {k: fn() for k, fn in paths.items()}
                if outs["engine"][0].tokens != outs["direct"][0].tokens:
                    raise SystemExit(f"{name} {decoder} beam {beam}: the engine's tokens differ from the direct call's")
                for _ in range(args.warmup):
                    for fn in paths.values():
                        fn()
                times = {k: [] for k in paths}
                for _ in range(args.repeats):
                    for k, fn in paths.items():
                        times[k].append(time_calls(fn, device, 0, 1)[0])
                row = {"model": name, "decoder": decoder, "beam": beam, "tokens": args.tokens}
                for k, ts in times.items():
                    row[f"{k}_ms"] = statistics.median(ts)
                    row[f"{k}_ms_per_token"] = statistics.median(ts) / args.tokens
                row["engine_minus_direct_ms"] = row["engine_ms"] - row["direct_ms"]
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.profile:
                    for k in ("engine", "direct"):
                        import fastwhisper.engine as engine
                        inner = paths["direct"]
                        run = (lambda m=model: engine.engine_for(m).call(profiled, inner, args.profile)) if k == "engine" \
                            else (lambda: profiled(inner, args.profile))
                        print(f"--- {name} {decoder} beam {beam}: {k} profile\n{run()}", flush=True)
        del model
        torch.cuda.empty_cache()
    if args.out:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        args.out.write_text(json.dumps({"device": gpu, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
