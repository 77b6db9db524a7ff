"""Speed of one long file three ways, in one run: sequential transcribe(), vad=True (speech chunks batched) and
without_timestamps batched windows (issue 32).

    python benchmarks/vad_speed.py --models large-v3=random,tiny.en=real --device cuda --batch_size 16 \
        --decoder cpp --out benchmarks/results/vad-speed-h100

The audio: vad_longform.py's long-form set (the bundled English recordings with silences of 2-20 s inserted),
--repeats passes over the recordings, loaded once before timing. Each mode runs once untimed, then --runs times;
the median wall time gives RTFx = audio seconds / seconds (the VAD pass, on the CPU, included in vad=True's).
Floor: a mode decodes at least its windows x tokens; the rows give both, so RTFx can be read per token.

Modes:
  sequential  transcribe(batch_size=1): one window after another, each starting where the last ended.
  vad         transcribe(vad=True, batch_size=B): Silero VAD speech chunks packed into windows of at most 30 s,
              B windows at a time; Silero
              runs on the model's device (vad_options={"device": ...}); the VAD pass alone is timed apart.
  no_ts_batch transcribe(batch_size=B, without_timestamps=True, condition_on_previous_text=False): 30-s windows
              B at a time, no timestamps inside a window.
Random weights (NAME=random): serve_load.py's seeded weights and fixed budget (--tokens per window, EOT
suppressed, temperature 0 without fallback, no conditioning) in every mode, and no timestamp tokens
(without_timestamps=True) in every mode, because random weights give meaningless timestamps and a sequential
seek driven by them would decode a different number of windows; the three modes then differ only in how the
windows are cut and batched. Real weights (NAME=real): whisper's default options (timestamps, temperature
fallback, conditioning in the sequential mode) and the word error rate against the set's reference text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastwhisper  # noqa: E402
from common import device_name, free_device_memory, git_commit, synchronize, write_outputs  # noqa: E402
from fastwhisper.audio.vad import speech_windows  # noqa: E402
from serve_load import build_model, fixed_options, parse_models  # noqa: E402
from vad_longform import SR, build_set, wer  # noqa: E402

MODES = ("sequential", "vad", "no_ts_batch")


def mode_options(mode: str, kind: str, base: dict, batch_size: int, device: str) -> dict:
    options = dict(base)
    if kind == "random":
        options["without_timestamps"] = True  # every mode: see the module's docstring
    if mode == "sequential":
        return dict(options, batch_size=1)
    if mode == "vad":
        return dict(options, vad=True, batch_size=batch_size, vad_options={"device": device})
    return dict(options, batch_size=batch_size, without_timestamps=True, condition_on_previous_text=False)


def run_mode(model, waveform, options: dict, decoder: str, device: str, runs: int):
    fastwhisper.transcribe(model, waveform, decoder=decoder, **options)  # untimed: graphs, allocator, VAD model
    times, result = [], None
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        result = fastwhisper.transcribe(model, waveform, decoder=decoder, **options)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, result


def measure(name: str, kind: str, waveform, reference: str, args) -> list:
    model = build_model(name, kind, args.device)
    base = fixed_options(model, kind, args.tokens, args.device)
    audio_s = len(waveform) / SR
    rows = []
    for mode in MODES:
        options = mode_options(mode, kind, base, args.batch_size, args.device)
        times, result = run_mode(model, waveform, options, args.decoder, args.device, args.runs)
        median = statistics.median(times)
        row = {"model": name, "weights": kind, "mode": mode, "decoder": args.decoder,
               "batch_size": options["batch_size"], "audio_s": round(audio_s, 1), "median_s": round(median, 3),
               "times_s": [round(t, 3) for t in times], "rtfx": round(audio_s / median, 1),
               "segments": len(result["segments"]), "tokens": sum(len(s["tokens"]) for s in result["segments"])}
        if kind == "real":
            row["wer"] = round(wer(reference, result["text"]), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    del model
    free_device_memory(args.device)
    return rows


def report_markdown(meta: dict, rows: list) -> str:
    lines = [f"# One long file: sequential, vad=True, without_timestamps batched ({meta['device_name']}, "
             f"{meta['date']})", "",
             f"Audio: {meta['audio_s']} s (the long-form set of vad_longform.py, {meta['repeats']} passes), "
             f"{meta['vad_chunks']} VAD chunks covering {meta['vad_chunked_s']} s, packed into {meta['vad_windows']} "
             f"windows; the VAD pass alone takes "
             f"{', '.join(f'{s} s on {d}' for d, s in meta['vad_pass_s'].items())}. Decoder {meta['decoder']}, "
             f"batch_size {meta['batch_size']}, median of {meta['runs']} runs after one untimed run; "
             f"random weights: {meta['tokens']} tokens per window, no timestamp tokens (see the script). "
             f"Commit {meta['commit']}, torch {meta['torch']}.", "",
             "| model | weights | mode | batch | RTFx | median s | segments | tokens | WER |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['weights']} | {r['mode']} | {r['batch_size']} | {r['rtfx']} | "
                     f"{r['median_s']} | {r['segments']} | {r['tokens']} | {r.get('wer', '')} |")
    lines += ["", "Target (issue 32): large-v3, one long file with timestamps, at least 1000 RTFx.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="large-v3=random,tiny.en=real", help="NAME=random|real, comma separated")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--decoder", default="cpp")
    parser.add_argument("--tokens", type=int, default=100, help="token budget per window (random weights)")
    parser.add_argument("--repeats", type=int, default=8, help="passes over the recordings (8: about 20 min)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commit", default=None)
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    waveform, reference, _silences, _names = build_set(args.repeats)
    vad_pass_s = {}
    for device in dict.fromkeys(["cpu", args.device]):
        # untimed: loads the model and, on a GPU, captures the CUDA graphs of this audio's number of streams,
        # as the untimed transcription before the timed ones does
        speech_windows(waveform, device=device)
        times = []
        for _ in range(args.runs):
            synchronize(device)
            start = time.perf_counter()
            windows = speech_windows(waveform, device=device)
            synchronize(device)
            times.append(time.perf_counter() - start)
        vad_pass_s[device] = round(statistics.median(times), 3)
    meta = {"date": time.strftime("%Y-%m-%d"), "commit": args.commit or git_commit(),
            "device_name": device_name(args.device), "torch": torch.__version__, "decoder": args.decoder,
            "batch_size": args.batch_size, "tokens": args.tokens, "runs": args.runs, "repeats": args.repeats,
            "audio_s": round(len(waveform) / SR, 1), "vad_chunks": sum(len(w) for w in windows),
            "vad_windows": len(windows),
            "vad_chunked_s": round(sum(b - a for w in windows for a, b in w) / SR, 1), "vad_pass_s": vad_pass_s}
    rows = []
    for name, kind in parse_models(args.models):
        rows += measure(name, kind, waveform, reference, args)
    text = report_markdown(meta, rows)
    print(text)
    write_outputs(args.out, {"meta": meta, "rows": rows}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
