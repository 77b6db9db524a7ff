"""transcribe_dataset: a corpus through Ray Data actors, with a manifest that makes a re-run resume."""

from __future__ import annotations

import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Union

from .manifest import Manifest, file_sha256
from .worker import Transcriber

SAVE_EVERY_S = 5.0  # the manifest is rewritten at most this often while results arrive, and at the end


def transcribe_dataset(paths_or_dataset: Union[Iterable[str], "ray.data.Dataset"], output_dir: str, *,
                       model: str = "tiny.en", num_gpus_per_worker: float = 0, concurrency: int = 1,
                       files_per_batch: int = 8, output_formats: Sequence[str] = ("txt", "json"),
                       address: Optional[str] = None, on_file=None, **transcribe_options) -> dict:
    """Transcribe every input into output_dir with `concurrency` Ray actors, skipping the inputs that
    manifest.json already records as done with the same content.

    paths_or_dataset: audio paths, or a ray.data.Dataset with a "path" column. num_gpus_per_worker: GPUs per
    actor (0: CPU actors). files_per_batch: files one actor transcribes together (its engine's batch_size
    unless transcribe_options gives one). address: a Ray cluster to join (ray.init's address); Ray is started
    locally when it is not running. on_file(row): called on the driver as each file's outcome arrives.
    transcribe_options: Transcriber's options (model_dir, device, dtype, decoder, writer_args, threads, and
    transcribe()'s options). Returns the summary (see `summarize`).
    """
    import ray

    os.makedirs(output_dir, exist_ok=True)
    output_dir = os.path.abspath(output_dir)
    manifest = Manifest.load(output_dir)
    if isinstance(paths_or_dataset, (str, bytes, os.PathLike)):
        raise TypeError("paths_or_dataset: a list of paths or a ray.data.Dataset, not one path")
    if hasattr(paths_or_dataset, "take_all"):
        paths = [str(row["path"]) for row in paths_or_dataset.select_columns(["path"]).take_all()]
    else:
        paths = [str(p) for p in paths_or_dataset]
    hashes = {p: file_sha256(p) for p in paths}
    todo = [p for p in paths if not manifest.is_done(p, hashes[p])]
    rows: List[dict] = []
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
        transcribe_options.setdefault("batch_size", files_per_batch)
        items = [{"path": os.path.abspath(p), "sha256": hashes[p] or ""} for p in todo]
        results = ray.data.from_items(items).map_batches(
            Transcriber, fn_constructor_kwargs=dict(model=model, output_dir=output_dir,
                                                    output_formats=tuple(output_formats), **transcribe_options),
            batch_size=files_per_batch, batch_format="numpy", concurrency=concurrency,
            num_gpus=num_gpus_per_worker or None)  # Ray Data restarts a dead actor and reruns its batch
        saved = time.monotonic()
        try:
            for row in results.iter_rows():
                row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                manifest.record(row["path"], sha256=row["sha256"] or None, status=row["status"], error=row["error"],
                                audio_s=row["audio_s"], outputs=[n for n in row["outputs"].split(",") if n],
                                worker=row["worker"])
                rows.append(row)
                if time.monotonic() - saved >= SAVE_EVERY_S:  # an interrupted run keeps what it recorded
                    manifest.save()
                    saved = time.monotonic()
                if on_file is not None:
                    on_file(row)
        finally:
            manifest.save()
    return summarize(paths, manifest, rows)


def summarize(paths: List[str], manifest: Manifest, rows: List[dict]) -> dict:
    """files, done, skipped (done before this run), failed ([(path, error)]), audio_hours (of the files done
    in this run), and per worker: files, audio_s, busy_s (its batches' wall time), rtfx."""
    run = {row["path"] for row in rows}
    entries = [manifest.entries.get(os.path.abspath(p), {}) for p in paths]
    workers: Dict[str, dict] = {}
    for row in rows:
        w = workers.setdefault(row["worker"], {"files": 0, "audio_s": 0.0, "busy_s": 0.0})
        w["files"] += 1
        w["audio_s"] += row["audio_s"]
        w["busy_s"] += row["batch_s"]
    for w in workers.values():
        w["rtfx"] = w["audio_s"] / w["busy_s"] if w["busy_s"] > 0 and w["audio_s"] > 0 else None
    return {
        "files": len(paths),
        "done": sum(e.get("status") == "done" for e in entries),
        "skipped": sum(os.path.abspath(p) not in run for p in paths),
        "failed": [(p, e.get("error", "")) for p, e in zip(paths, entries) if e.get("status") == "failed"],
        "audio_hours": sum(row["audio_s"] for row in rows) / 3600,
        "workers": workers,
    }


def format_summary(summary: dict) -> str:
    lines = [f"{summary['files']} files: {summary['done']} done ({summary['skipped']} skipped, done before), "
             f"{len(summary['failed'])} failed; {summary['audio_hours']:.3f} audio hours transcribed in this run"]
    for worker, w in sorted(summary["workers"].items()):
        rtfx = f"{w['rtfx']:.1f}" if w["rtfx"] else "-"
        lines.append(f"  worker {worker}: {w['files']} files, {w['audio_s']:.1f} s of audio, RTFx {rtfx}")
    for path, error in summary["failed"]:
        lines.append(f"  failed: {path}: {error}")
    return "\n".join(lines)


__all__ = ["Transcriber", "format_summary", "summarize", "transcribe_dataset"]
