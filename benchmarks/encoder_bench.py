"""Benchmark of the Whisper audio encoder: openai-whisper against fastwhisper.

What is measured
----------------
For each model size (random weights of the real dims, seeded) and batch size, the encoder forward
pass on a ``[batch, n_mels, 3000]`` log-mel-like input (``randn * 0.5``) is run by every
implementation in the same process on the same device:

  openai             whisper.model.AudioEncoder, fp32 weights, fp16 mel (how openai-whisper runs
                     on a GPU: its Linear/Conv1d cast the weights to the input dtype on every call)
  torch-fp16         whisper.model.AudioEncoder ``.half()`` with LayerNorm in fp16 too, fp16 mel
                     (plain PyTorch fp16)
  fastwhisper-fp32w  fastwhisper.FastAudioEncoder, fp32 weights, fp16 mel (fp16 casts cached)
  fastwhisper-fp16   fastwhisper.FastAudioEncoder ``.half()``, fp16 mel

With ``--device cpu`` (smoke tests only) everything is fp32 and only "openai" and "fastwhisper"
run. All encoders load the state_dict of one seeded AudioEncoder and run in eval mode under
``torch.inference_mode()`` (they are built outside it: FastAudioEncoder's cast cache reads the
parameters' version counters, which inference tensors lack). Each encoder is built, measured and
freed before the next, so the peak memory of a row is that implementation's own (weights, cast
caches, input, activations).

How
---
1. Correctness first: every output is compared with an fp32 reference (AudioEncoder, fp32 weights
   and input, TF32 off for matmul and cuDNN) on the same mel; relative error =
   max|out - ref| / max|ref|. A row whose output has NaN/Inf or a relative error above 5e-2 is
   "wrong-output" and gets no time.
2. Timing: ``--warmup`` untimed calls, then ``--repeats`` timed calls, each started from an idle
   GPU (synchronize) and timed with CUDA events (``time.perf_counter`` on CPU); median, min and
   p90 in ms, and ms per 30 s window (median / batch). Building and loading happen outside.
   Peak memory: ``torch.cuda.max_memory_allocated`` over the warm-up and timed calls.
3. Ceilings, measured at the start of the run (CUDA only): fp16 GEMM rate (8192^3 torch.matmul)
   and device-to-device copy bandwidth (1 GiB copy, bytes read + written). Per (model, batch):
   compute floor = encoder FLOPs / GEMM rate; memory floor = (fp16 weights + fp16 input and
   output, each moved once) / copy bandwidth; floor = the larger, "x over floor" = median / floor.

Output: a markdown table on stdout, and a JSON file (``--out``) with the run's metadata, the
ceilings and one record per row, with the same table next to it as ``.md``.

    python benchmarks/encoder_bench.py                       # every model, batch 1 and 8, on CUDA
    python benchmarks/encoder_bench.py --models tiny --device cpu --batch-sizes 1 --repeats 2
"""

import argparse
import datetime
import functools
import json
import statistics
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import torch
import whisper
from whisper.model import AudioEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DIMS, MAX_REL_ERR, MIB, WEIGHT_SEED, ceilings_text, device_name, encoder_dims,  # noqa: E402
                    error_status, floor_for, fmt, free_device_memory, git_commit, is_cuda, json_safe, make_mel,
                    measure_ceilings, percentile, relative_error, slug, synchronize, tf32_disabled, time_calls)

import fastwhisper  # noqa: E402

# name: (n_mels, n_ctx, n_state, n_head, n_layer); turbo's encoder is large-v3's.
MODEL_DIMS = {name: encoder_dims(name) for name in DIMS}


class TorchFp16AudioEncoder(AudioEncoder):
    """openai-whisper's AudioEncoder whose LayerNorms run in the input's dtype (torch.nn.LayerNorm's
    own forward), so that ``.half()`` gives a plain PyTorch fp16 encoder: whisper's LayerNorm upcasts
    x to fp32 but not its weights, which fails once the weights are fp16."""

    def __init__(self, *dims):
        super().__init__(*dims)
        for module in self.modules():
            if isinstance(module, whisper.model.LayerNorm):
                module.forward = functools.partial(torch.nn.LayerNorm.forward, module)


@dataclass(frozen=True)
class Impl:
    name: str
    cls: type
    weight_dtype: torch.dtype
    input_dtype: torch.dtype


CUDA_IMPLS = [
    Impl("openai", AudioEncoder, torch.float32, torch.float16),
    Impl("torch-fp16", TorchFp16AudioEncoder, torch.float16, torch.float16),
    Impl("fastwhisper-fp32w", fastwhisper.FastAudioEncoder, torch.float32, torch.float16),
    Impl("fastwhisper-fp16", fastwhisper.FastAudioEncoder, torch.float16, torch.float16),
]
CPU_IMPLS = [
    Impl("openai", AudioEncoder, torch.float32, torch.float32),
    Impl("fastwhisper", fastwhisper.FastAudioEncoder, torch.float32, torch.float32),
]


# -- encoders and measurements --------------------------------------------------------------------


def source_state_dict(dims) -> Dict[str, torch.Tensor]:
    """The weights every encoder of this model loads: one seeded AudioEncoder, on the CPU."""
    torch.manual_seed(WEIGHT_SEED)
    return AudioEncoder(*dims).state_dict()


def build_encoder(cls: type, dims, state_dict, device: str, weight_dtype: torch.dtype) -> torch.nn.Module:
    with torch.device(device):
        encoder = cls(*dims)
    encoder.load_state_dict(state_dict)
    if weight_dtype == torch.float16:
        encoder = encoder.half()
    return encoder.eval()


def reference_outputs(dims, state_dict, mels: Dict[int, torch.Tensor], device: str) -> Dict:
    """fp32 reference output (on the CPU) per batch size, or the error message per batch size."""
    outputs = {}
    try:
        encoder = build_encoder(AudioEncoder, dims, state_dict, device, torch.float32)
    except Exception as exc:  # noqa: BLE001 - recorded in the rows, the run goes on
        return {batch: f"reference failed: {exc}" for batch in mels}
    with tf32_disabled(), torch.inference_mode():
        for batch, mel in mels.items():
            try:
                outputs[batch] = encoder(mel.to(device)).float().cpu()
            except Exception as exc:  # noqa: BLE001
                outputs[batch] = f"reference failed: {exc}"
    del encoder
    free_device_memory(device)
    return outputs


@torch.inference_mode()
def measure_row(encoder, mel: torch.Tensor, ref: torch.Tensor, impl: Impl, device: str, args) -> Dict:
    """Correctness check, then timing and peak memory, of one encoder on one input."""
    x = mel.to(device=device, dtype=impl.input_dtype)
    out = encoder(x)
    finite = bool(torch.isfinite(out).all().item())
    rel_err = relative_error(out, ref) if finite else None
    del out
    row = {"output_finite": finite, "rel_err": rel_err}
    if not finite or rel_err is None or not rel_err <= MAX_REL_ERR:
        row["status"] = "wrong-output"
        return row
    if is_cuda(device):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = time_calls(lambda: encoder(x), device, args.warmup, args.repeats)
    median = statistics.median(times)
    row.update(
        status="ok", median_ms=median, min_ms=min(times), p90_ms=percentile(times, 90),
        ms_per_window=median / mel.shape[0], times_ms=times,
        peak_mib=torch.cuda.max_memory_allocated(device) / MIB if is_cuda(device) else None,
    )
    return row


def bench_model(name: str, impls: List[Impl], args, ceilings) -> List[Dict]:
    """Every (impl, batch) row of one model; frees the model's encoders before returning."""
    dims = MODEL_DIMS[name]
    state_dict = source_state_dict(dims)
    param_count = sum(t.numel() for t in state_dict.values())
    mels = {batch: make_mel(dims, batch) for batch in args.batch_sizes}
    refs = reference_outputs(dims, state_dict, mels, args.device)
    rows = []
    for impl in impls:
        base = {"model": name, "impl": impl.name, "weight_dtype": str(impl.weight_dtype).replace("torch.", ""),
                "input_dtype": str(impl.input_dtype).replace("torch.", ""), "param_count": param_count}
        encoder, build_error = None, None
        try:
            encoder = build_encoder(impl.cls, dims, state_dict, args.device, impl.weight_dtype)
        except Exception as exc:  # noqa: BLE001
            build_error = error_status(exc)
        for batch in args.batch_sizes:
            row = {**base, "batch": batch, **floor_for(dims, batch, param_count, ceilings)}
            if build_error:
                row["status"] = build_error
            elif isinstance(refs[batch], str):
                row["status"] = f"error: {refs[batch]}"
            else:
                try:
                    row.update(measure_row(encoder, mels[batch], refs[batch], impl, args.device, args))
                except Exception as exc:  # noqa: BLE001
                    row["status"] = error_status(exc)
                    free_device_memory(args.device)
            if row.get("median_ms") is not None and row.get("floor_ms"):
                row["x_over_floor"] = row["median_ms"] / row["floor_ms"]
            rows.append(row)
            print_progress(row)
        del encoder
        free_device_memory(args.device)
    del state_dict, refs
    free_device_memory(args.device)
    return rows


# -- reporting ------------------------------------------------------------------------------------

TABLE_COLUMNS = [
    ("model", "model", "{}"), ("batch", "batch", "{}"), ("impl", "impl", "{}"),
    ("median ms", "median_ms", "{:.2f}"), ("ms/window", "ms_per_window", "{:.2f}"),
    ("floor ms", "floor_ms", "{:.2f}"), ("x over floor", "x_over_floor", "{:.2f}"),
    ("rel err", "rel_err", "{:.1e}"), ("peak MiB", "peak_mib", "{:.0f}"), ("status", "status", "{}"),
]


def print_progress(row: Dict) -> None:
    print(f"  {row['model']:9s} b={row['batch']:<3d} {row['impl']:18s} {row['status']:14s} "
          f"median {fmt(row.get('median_ms'), '{:.2f}')} ms  rel err {fmt(row.get('rel_err'), '{:.1e}')}",
          file=sys.stderr, flush=True)


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| " + " | ".join(title for title, _, _ in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key), spec) for _, key, spec in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def markdown_report(meta: Dict, rows: List[Dict]) -> str:
    ceilings = meta["ceilings"]
    lines = [
        f"# Whisper encoder benchmark: {meta['gpu'] or meta['device']}",
        "",
        f"commit `{meta['commit']}`, {meta['date']}, torch {meta['torch_version']}, CUDA {meta['cuda_version']}, "
        f"fastwhisper {meta['fastwhisper_version']}, openai-whisper {meta['whisper_version']}; "
        f"warm-up {meta['warmup']}, {meta['repeats']} timed calls (median).",
        "",
    ]
    if ceilings:
        lines += [f"Ceilings: {ceilings_text(ceilings)}.", ""]
    if meta.get("switches"):
        lines += ["Switches: " + ", ".join(f"`{k}={v}`" for k, v in meta["switches"].items()) + ".", ""]
    return "\n".join(lines + [markdown_table(rows), ""])


def default_out(device: str) -> Path:
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return Path(__file__).resolve().parent / "results" / f"{slug(device_name(device))}-{day}-encoder.json"


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_DIMS), help="comma list of " + ", ".join(MODEL_DIMS))
    parser.add_argument("--batch-sizes", default="1,8", help="comma list (default 1,8)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing (default 5)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls (default 20)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test, fp32 only)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/<gpu>-<date>-encoder.json); .md written next to it")
    parser.add_argument("--commit", default=None, help="recorded in the JSON (default: git rev-parse HEAD)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODEL_DIMS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODEL_DIMS)}")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be a comma list of integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("batch sizes and --repeats must be >= 1, --warmup >= 0")
    if is_cuda(args.device) and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device (use --device cpu for a smoke test)")
    args.commit = args.commit or git_commit()
    args.out = args.out or default_out(args.device)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    impls = CUDA_IMPLS if is_cuda(args.device) else CPU_IMPLS
    meta = {
        "commit": args.commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "gpu": device_name(args.device) if is_cuda(args.device) else None,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "fastwhisper_version": fastwhisper.__version__,
        "fastwhisper_with_cuda": fastwhisper.WITH_CUDA,
        "whisper_version": getattr(whisper, "__version__", "unknown"),
        "models": args.models, "batch_sizes": args.batch_sizes,
        "warmup": args.warmup, "repeats": args.repeats,
        "max_rel_err": MAX_REL_ERR,
        "switches": {k: v for k, v in sorted(os.environ.items()) if k.startswith("FASTWHISPER_")},
        "reference": "AudioEncoder, fp32 weights and input, TF32 off (matmul and cuDNN)",
        "impls": {i.name: {"class": i.cls.__name__, "weight_dtype": str(i.weight_dtype), "input_dtype": str(i.input_dtype)}
                  for i in impls},
    }
    print(f"{meta['gpu'] or meta['device']}: torch {meta['torch_version']}, CUDA {meta['cuda_version']}, "
          f"fastwhisper {meta['fastwhisper_version']}, commit {meta['commit']}", file=sys.stderr, flush=True)
    meta["ceilings"] = measure_ceilings(args.device) if is_cuda(args.device) else None
    if meta["ceilings"]:
        print(f"ceilings: {ceilings_text(meta['ceilings'])}", file=sys.stderr, flush=True)
    rows = []
    for name in args.models:
        rows += bench_model(name, impls, args, meta["ceilings"])

    report = markdown_report(meta, rows)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe({**meta, "records": rows}), indent=2) + "\n")
    args.out.with_suffix(".md").write_text(report)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    failed = sum(row["status"] != "ok" for row in rows)
    if failed:
        print(f"FAILED ROWS: {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
