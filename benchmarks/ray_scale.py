"""Ray Data scaling: aggregate RTFx of fastwhisper.distributed.transcribe_dataset with 1, 2, 4 ... workers.

Each worker count transcribes the same corpus, from scratch, into an output folder of its own: --files clips of
--audio_seconds s cut from the bundled speech at different offsets, written as 16 kHz WAV files. Workers are
Ray actors with one GPU each on a GPU run (CPU actors otherwise), each transcribing --files_per_batch files
together with the engine.

Random weights (NAME=random): the seeded weights of the real dimensions (benchmarks/common.random_whisper),
written once as an openai .pt checkpoint that every actor loads; every 30-s window decodes exactly --tokens tokens
(English, no timestamps, end-of-text suppressed, temperature 0 without fallback), as in serve_load.py and
run.py's long-form rows. Real weights (NAME=real): the installed weights package, transcribe()'s defaults.

Reported per worker count:
- wall RTFx: corpus audio / wall seconds of transcribe_dataset (actors' start and model loading included);
- batch RTFx: corpus audio / the busiest worker's batch seconds (the steady state, without the start);
- scaling: batch RTFx / (workers x the 1-worker batch RTFx). Its ceiling is 1 (linear scaling), the floor the
  figures are set against: each worker holds a whole model and its own batches, so nothing is shared.

    python benchmarks/ray_scale.py --model large-v3=random --workers 1 --device cuda --out $OUT/ray-scale
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit, random_whisper, write_outputs  # noqa: E402

SAMPLE_RATE = 16000
SPEECH = Path(__file__).resolve().parent.parent / "audio_samples" / "long_pocketsphinx_concat.flac"


def write_corpus(folder: Path, files: int, seconds: float):
    """`files` WAV clips of `seconds` s cut from the bundled speech (tiled) at different offsets."""
    import soundfile

    import fastwhisper

    speech = fastwhisper.load_audio(str(SPEECH))
    n = int(seconds * SAMPLE_RATE)
    tiled = np.tile(speech, n // speech.size + 2)
    step = max(1, (tiled.size - n) // max(1, files))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = folder / f"clip_{i:04d}.wav"
        soundfile.write(str(path), tiled[i * step % (tiled.size - n):][:n], SAMPLE_RATE)
        paths.append(str(path))
    return paths


def model_and_options(spec: str, tokens: int, folder: Path):
    """(model argument for the actors, transcribe options) for NAME=random|real."""
    import whisper

    import fastwhisper

    name, _, kind = spec.partition("=")
    if kind not in ("random", "real"):
        raise SystemExit(f"--model: NAME=random or NAME=real, got {spec!r}")
    if kind == "real":
        return name, {}
    source = random_whisper(name)
    path = folder / f"{name}-random.pt"
    fastwhisper.save_checkpoint(source, path)
    eot = whisper.tokenizer.get_tokenizer(source.is_multilingual, num_languages=source.num_languages).eot
    options = dict(language="en", without_timestamps=True, suppress_tokens=[-1, eot], sample_len=tokens,
                   temperature=0.0, condition_on_previous_text=False, compression_ratio_threshold=None,
                   logprob_threshold=None, no_speech_threshold=None)
    return str(path), options


def run_level(workers: int, paths, model: str, options: dict, args, out_dir: Path) -> dict:
    from fastwhisper.distributed import transcribe_dataset

    gpu = torch.device(args.device).type == "cuda"
    start = time.perf_counter()
    summary = transcribe_dataset(paths, str(out_dir), model=model, num_gpus_per_worker=1 if gpu else 0,
                                 concurrency=workers, files_per_batch=args.files_per_batch,
                                 output_formats=("txt",), device=args.device, decoder=args.decoder,
                                 **({} if gpu else {"fp16": False}), **options)
    wall = time.perf_counter() - start
    audio_s = summary["audio_hours"] * 3600
    busiest = max((w["busy_s"] for w in summary["workers"].values()), default=0.0)
    if summary["failed"] or summary["done"] != len(paths):
        raise RuntimeError(f"{workers} workers: {len(summary['failed'])} files failed: {summary['failed'][:3]}")
    return {"workers": workers, "files": len(paths), "audio_s": round(audio_s, 1), "wall_s": round(wall, 2),
            "wall_rtfx": round(audio_s / wall, 1), "batch_rtfx": round(audio_s / busiest, 1) if busiest else None,
            "per_worker_rtfx": sorted(round(w["rtfx"], 1) for w in summary["workers"].values() if w["rtfx"]),
            "actors": len(summary["workers"])}


def report(meta: dict, rows: list) -> str:
    lines = [f"# Ray Data scaling ({meta['device']}, commit {meta['commit']}, {meta['date']})", "",
             f"`benchmarks/ray_scale.py`: {meta['files']} files of {meta['audio_seconds']:g} s, model {meta['model']}, "
             f"decoder {meta['decoder']}, {meta['files_per_batch']} files per batch"
             + (f", {meta['tokens']} tokens per window" if meta["model"].endswith("=random") else "") + ".", "",
             "| workers | actors | audio s | wall s | wall RTFx | batch RTFx | scaling | per-worker RTFx |",
             "|---|---|---|---|---|---|---|---|"]
    one = next((r["batch_rtfx"] for r in rows if r.get("workers") == 1 and r.get("batch_rtfx")), None)
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['workers']} | | | | | | | {r['error']} |")
            continue
        scaling = f"{r['batch_rtfx'] / (r['workers'] * one):.2f}" if one and r["batch_rtfx"] else ""
        lines.append(f"| {r['workers']} | {r['actors']} | {r['audio_s']} | {r['wall_s']} | {r['wall_rtfx']} | "
                     f"{r['batch_rtfx']} | {scaling} | {', '.join(map(str, r['per_worker_rtfx']))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="large-v3=random", help="NAME=random or NAME=real")
    p.add_argument("--workers", default="1", help="comma list of worker counts, e.g. 1,2,4")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--decoder", default="cpp")
    p.add_argument("--files", type=int, default=256)
    p.add_argument("--audio_seconds", type=float, default=30.0)
    p.add_argument("--files_per_batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=100, help="token budget per window (random weights)")
    p.add_argument("--commit", default=None)
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    levels = [int(w) for w in args.workers.split(",")]

    import ray

    with tempfile.TemporaryDirectory(prefix="ray-scale-") as tmp:
        tmp = Path(tmp)
        paths = write_corpus(tmp / "in", args.files, args.audio_seconds)
        model, options = model_and_options(args.model, args.tokens, tmp)
        ray.init(log_to_driver=False)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        rows = []
        for workers in levels:
            if torch.device(args.device).type == "cuda" and workers > gpus:
                rows.append({"workers": workers, "error": f"not available: Ray sees {gpus} GPU(s)"})
                continue
            rows.append(run_level(workers, paths, model, options, args, tmp / f"out-{workers}"))
            print(rows[-1], flush=True)
        ray.shutdown()
    meta = {"device": device_name(args.device), "commit": args.commit or git_commit(),
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "model": args.model,
            "decoder": args.decoder, "files": args.files, "audio_seconds": args.audio_seconds,
            "files_per_batch": args.files_per_batch, "tokens": args.tokens, "cpus": os.cpu_count()}
    text = report(meta, rows)
    print(text)
    write_outputs(args.out, {"meta": meta, "rows": rows}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
