"""Transcribe a corpus on many GPUs and machines with Ray Data (the `distributed` extra: `pip install
fastwhisper[distributed]`).

    import ray, fastwhisper.distributed as fd
    summary = fd.transcribe_dataset(paths, "out/", model="large-v3", concurrency=4, num_gpus_per_worker=1,
                                    language="en")

    # or inside your own Ray Data pipeline: one actor per GPU, the model loaded once per actor
    ds = ray.data.from_items([{"path": p, "sha256": fd.file_sha256(p)} for p in paths])
    ds = ds.map_batches(fd.Transcriber, fn_constructor_kwargs=dict(model="large-v3", output_dir="out/"),
                        batch_size=16, concurrency=4, num_gpus=1)

Each actor transcribes its batch of files together on its model's engine (the windows of several files in one
encoder and decoder call) and writes each file's outputs atomically (a temporary file, then a rename). The
driver keeps `manifest.json` in the output folder: each input's SHA-256 and its outcome, so a second run skips
the files already done and retries the rest. A file that cannot be transcribed fails alone; an actor that dies
is restarted by Ray and its batch is run again.
"""

from .manifest import Manifest, file_sha256
from .run import transcribe_dataset
from .worker import Transcriber

__all__ = ["Manifest", "Transcriber", "file_sha256", "transcribe_dataset"]
