"""Where a random-weight long-form run of benchmarks/run.py spends its wall time.

run.py's long-form row (``fixed_budget_transcription``: load the FLAC, log-mel it on the GPU, then encode
and decode its 30-s windows ``--batch`` at a time with a fixed budget of ``--tokens`` tokens) is run here
with the same functions, on the same tiled clip, for fastwhisper with the C++ decoder (fp16 activations,
random weights of the real dims), three ways:

  * plain, as run.py times it (median of --repeats after a warm-up);
  * with a CUDA synchronize after each phase, timing load + log-mel, each encode and each decode on the
    host clock, so the per-window cost splits into phases ("other" = plain total less the phases);
  * once under cProfile (host functions by cumulative time).

    python benchmarks/longform_profile.py --models tiny,large-v3 --windows 16 --batch 1,8 --out results/x.json
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (check_model_names, device_name, fixed_length_options, git_commit, host_profile,  # noqa: E402
                    random_whisper, write_report)
from sections.rows import LONG_CLIP  # noqa: E402
from sections.timed_rows import LongAudio, fixed_budget_transcription  # noqa: E402

import fastwhisper  # noqa: E402

PHASES = ("encode", "decode")


class PhaseClock:
    """Host seconds per phase, each phase ended by a CUDA synchronize."""

    def __init__(self):
        self.seconds = {p: 0.0 for p in PHASES}

    def timed(self, phase, fn):
        def wrapper(*args, **kwargs):
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            torch.cuda.synchronize()
            self.seconds[phase] += time.perf_counter() - start
            return out
        return wrapper


def measure(name: str, windows: int, batch: int, tokens: int, repeats: int, top: int, workdir: Path):
    reference = random_whisper(name, device="cuda")
    with torch.device("cuda"):
        model = fastwhisper.FastWhisper(reference.dims)
    model.load_state_dict(reference.state_dict())
    model.eval()
    del reference
    options = fixed_length_options(model, tokens)
    ctx = SimpleNamespace(dims=model.dims, device="cuda", act=torch.float16)
    path = LongAudio(LONG_CLIP, windows * 30.0, workdir).prefix(windows)

    def encode(x):
        return model.encoder(x)

    def decode(features, n):
        assert n == tokens
        return [r.tokens for r in fastwhisper.decode(model, features, options, decoder="cpp")]

    def plain():
        return fixed_budget_transcription(path, ctx, encode, decode, batch, tokens)

    with torch.inference_mode():
        out = plain()  # warm-up (graphs, sessions)
        if len(out) != windows or any(len(t) != tokens for t in out):
            raise RuntimeError(f"{name}: expected {windows} windows of {tokens} tokens, got {[len(t) for t in out]}")
        totals = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            plain()
            torch.cuda.synchronize()
            totals.append(time.perf_counter() - start)
        clocks = []
        for _ in range(repeats):
            clock = PhaseClock()
            start = time.perf_counter()
            torch.cuda.synchronize()
            fixed_budget_transcription(path, ctx, clock.timed("encode", encode), clock.timed("decode", decode), batch,
                                       tokens)
            torch.cuda.synchronize()
            clock.seconds["total"] = time.perf_counter() - start
            clocks.append(clock.seconds)
        hosts = host_profile(plain, top)
    del model
    torch.cuda.empty_cache()
    per_window = {p: 1e3 * statistics.median(c[p] for c in clocks) / windows for p in ("encode", "decode", "total")}
    per_window["rest"] = per_window["total"] - per_window["encode"] - per_window["decode"]
    total_ms = 1e3 * statistics.median(totals)
    return {"model": name, "windows": windows, "batch": batch, "tokens": tokens, "total_ms": total_ms,
            "rtfx": windows * 30.0 / (total_ms / 1e3), "per_window_ms": per_window, "host_top": hosts}


def markdown(results, meta):
    lines = [f"# Long-form wall time by phase: {meta['gpu']}", "",
             f"commit `{meta['commit']}`; `benchmarks/longform_profile.py`; run.py's fixed-budget long-form loop, "
             f"fastwhisper + C++ decoder, fp16, random weights; median of {meta['repeats']} after a warm-up. "
             "Phases timed with a synchronize after each (host clock); rest = load, log-mel, slicing and "
             "everything between the phases.", "",
             "| model | windows | batch | tokens | plain total ms | RTFx | encode ms/window | decode ms/window | "
             "rest ms/window | synced total ms/window |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        w = r["per_window_ms"]
        lines.append(f"| {r['model']} | {r['windows']} | {r['batch']} | {r['tokens']} | {r['total_ms']:.1f} | "
                     f"{r['rtfx']:.0f} | {w['encode']:.2f} | {w['decode']:.2f} | {w['rest']:.2f} | {w['total']:.2f} |")
    for r in results:
        lines += ["", f"## {r['model']}, batch {r['batch']}: one plain run under cProfile", "",
                  "| host function | calls | cumulative ms |", "|---|---|---|"]
        lines += [f"| `{n}` | {c} | {ms:.1f} |" for n, c, ms in r["host_top"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,large-v3")
    parser.add_argument("--windows", type=int, default=16, help="30-s windows of audio")
    parser.add_argument("--batch", default="1,8", help="comma list of windows encoded and decoded together")
    parser.add_argument("--tokens", type=int, default=100, help="fixed token budget per window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--commit", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    models = check_model_names(parser, args.models)
    if not torch.cuda.is_available():
        sys.exit("longform_profile.py needs a CUDA GPU")
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, args.windows, int(b), args.tokens, args.repeats, args.top, Path(tmp))
                   for name in models for b in args.batch.split(",")]
    meta = {"commit": args.commit or git_commit(), "gpu": device_name("cuda"), "repeats": args.repeats}
    write_report(args.out, meta, results, markdown(results, meta))


if __name__ == "__main__":
    main()
