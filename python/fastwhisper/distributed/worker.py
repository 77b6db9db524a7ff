"""Transcriber: the callable class a Ray Data actor runs (ds.map_batches(Transcriber, ...))."""

from __future__ import annotations

import os
import socket
import time
from typing import Dict, Optional, Sequence

import numpy as np

from ..cli.main import OUTPUT_FORMATS, write_output


class Transcriber:
    """Loads the model once (in the actor) and transcribes each batch of files together.

    model, model_dir, device, dtype: as `fastwhisper.load_model` (device: "cuda" when the actor has a GPU, else
    "cpu"); output_dir: where each file's outputs go (its name with each format's extension); output_formats:
    of "txt", "vtt", "srt", "tsv", "json"; batch_size: files decoded together; decoder: "torch" or "cpp";
    writer_args: openai-whisper's writer options (max_line_width, ...); threads: torch's CPU threads (default:
    the CPUs Ray gave the actor); options: `transcribe()`'s options.

    A batch is columns "path" (and "sha256", passed through); the result adds, per file, "status" ("done" or
    "failed"), "error", "audio_s", "outputs" (file names), "worker" (host:pid) and "batch_s" (the batch's wall
    seconds, on its first row, 0 on the others).
    """

    def __init__(self, model: str = "tiny.en", output_dir: str = ".", output_formats: Sequence[str] = ("txt",),
                 model_dir: Optional[str] = None, device: Optional[str] = None, dtype=None, batch_size: int = 8,
                 decoder: str = "torch", writer_args: Optional[dict] = None, threads: Optional[int] = None,
                 **options):
        import torch

        import fastwhisper
        from whisper.utils import get_writer

        unknown = sorted(set(output_formats) - set(OUTPUT_FORMATS))
        if unknown:
            raise ValueError(f"output_formats: unknown {unknown}; choose from {list(OUTPUT_FORMATS)}")
        if threads is None:
            threads = _granted_cpus()
        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = fastwhisper.load_model(model, device=device, dtype=dtype, download_root=model_dir)
        if device == "cpu":
            options["fp16"] = False
        self.output_dir = output_dir
        self.writers = [get_writer(fmt, output_dir) for fmt in output_formats]
        self.writer_args = writer_args or {}
        self.batch_size, self.decoder, self.options = batch_size, decoder, options
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import fastwhisper

        paths = [str(p) for p in batch["path"]]
        start = time.perf_counter()
        results = fastwhisper.transcribe_batch(self.model, paths, batch_size=self.batch_size, decoder=self.decoder,
                                               **self.options)
        status, errors, audio_s, outputs = [], [], [], []
        for path, result in zip(paths, results):
            names, error = [], ""
            if isinstance(result, Exception):
                error = f"{type(result).__name__}: {' '.join(str(result).split())}"
            else:
                try:
                    for writer in self.writers:
                        names.append(write_output(writer, result, path, self.output_dir, self.writer_args))
                except Exception as exc:  # this file's outputs could not be written; the others go on
                    error = f"cannot write the output: {type(exc).__name__}: {' '.join(str(exc).split())}"
            status.append("failed" if error else "done")
            errors.append(error)
            audio_s.append(0.0 if error else _duration(path, result))
            outputs.append(",".join(names))
        batch_s = [time.perf_counter() - start] + [0.0] * (len(paths) - 1)
        return {"path": np.array(paths, dtype=object),
                "sha256": np.array([str(h) for h in batch.get("sha256", [""] * len(paths))], dtype=object),
                "status": np.array(status, dtype=object), "error": np.array(errors, dtype=object),
                "audio_s": np.array(audio_s), "outputs": np.array(outputs, dtype=object),
                "worker": np.array([self.worker] * len(paths), dtype=object), "batch_s": np.array(batch_s)}


def _duration(path: str, result: dict) -> float:
    """The audio's seconds from its header (libsndfile), else the end of its last segment."""
    try:
        import soundfile

        return float(soundfile.info(path).duration)
    except Exception:  # a format libsndfile does not read (ffmpeg decoded it)
        return float(result["segments"][-1]["end"]) if result["segments"] else 0.0


def _granted_cpus() -> Optional[int]:
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        return max(1, int(cpus)) if cpus else None
    except Exception:  # outside Ray, or no CPUs assigned
        return None
