"""The `fastwhisper-batch` command: a list of audio files through Ray Data actors (fastwhisper.distributed).

    fastwhisper-batch --input_list files.txt --output_dir out --model large-v3 --workers 4 [--address ray://...]

It takes the options of the `fastwhisper` command (model, decoding and output options) with the inputs in a
file (one path per line; blank lines and lines starting with # are skipped). --workers actors run at once,
each with --gpus_per_worker GPUs (default 1 when this machine has a GPU, else 0). Outputs are written
atomically; output_dir/manifest.json records each input's hash and outcome, so a second run skips the files
already done. It prints a summary: files, audio hours, RTFx per worker, and the failures with their errors.

Exit status: 0 when every file is done, 1 when some failed, 2 for a usage error.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import numpy as np

from ..cli.main import DTYPES, OUTPUT_FORMATS, WORD_OPTIONS, _output_dir_problem, build_parser

PROG = "fastwhisper-batch"


def parse_args(argv: Optional[Sequence[str]] = None):
    import torch

    p = build_parser(prog=PROG, inputs=False)
    p.description = __doc__.split("\n\n")[0]
    p.set_defaults(batch_size=16)
    g = p.add_argument_group("batch")
    g.add_argument("--input_list", required=True, help="a text file with one audio path per line")
    g.add_argument("--workers", type=int, default=1, help="Ray actors transcribing at once")
    g.add_argument("--gpus_per_worker", type=float, default=1.0 if torch.cuda.is_available() else 0.0,
                   help="GPUs per actor (0: CPU actors)")
    g.add_argument("--files_per_batch", type=int, default=16, help="files one actor transcribes together")
    g.add_argument("--address", default=None, help="a Ray cluster to join (ray.init's address); default: a local Ray")
    return p, vars(p.parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser, args = parse_args(argv)
    try:
        with open(args.pop("input_list"), encoding="utf-8") as f:
            paths = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        parser.error(f"--input_list: {exc.strerror}: {exc.filename}")
    workers, files_per_batch = args.pop("workers"), args.pop("files_per_batch")
    if workers < 1 or files_per_batch < 1:
        parser.error("--workers and --files_per_batch must be positive")
    output_dir = args.pop("output_dir")
    problem = _output_dir_problem(output_dir)
    if problem:
        parser.error(f"--output_dir {output_dir!r}: {problem}")
    output_format = args.pop("output_format")
    formats = OUTPUT_FORMATS if output_format == "all" else (output_format,)
    if not args["word_timestamps"]:
        for option in WORD_OPTIONS:
            if args[option]:
                parser.error(f"--{option} requires --word_timestamps True")
    writer_args = {option: args.pop(option) for option in WORD_OPTIONS}
    temperature, increment = args.pop("temperature"), args.pop("temperature_increment_on_fallback")
    if increment is not None:
        temperature = tuple(np.arange(temperature, 1.0 + 1e-6, increment))
    dtype = DTYPES.get(args.pop("dtype"))
    threads = args.pop("threads") or None
    device = args.pop("device")
    if device == parser.get_default("device"):
        device = None  # each actor takes its GPU when Ray gave it one, else the CPU

    from .run import format_summary, transcribe_dataset

    summary = transcribe_dataset(
        paths, output_dir, model=args.pop("model"), model_dir=args.pop("model_dir"), device=device,
        dtype=dtype, decoder=args.pop("decoder"), batch_size=args.pop("batch_size"), threads=threads,
        num_gpus_per_worker=args.pop("gpus_per_worker"), concurrency=workers, files_per_batch=files_per_batch,
        output_formats=formats, address=args.pop("address"), writer_args=writer_args, temperature=temperature,
        **{k: v for k, v in args.items() if k != "verbose"})
    print(format_summary(summary))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
