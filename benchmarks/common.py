"""Helpers shared by the benchmark scripts: model dimensions, random models, timing, the measured
ceilings (GEMM rate, copy bandwidth) and the floors derived from them, and report formatting.

Used by run.py (the benchmark CLI) and its sections/, encoder_bench.py, decoder_bench.py, longform_profile.py,
and the profiling scripts of the dev/ lab.
"""

import contextlib
import cProfile
import gc
import io
import json
import math
import os
import pstats
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from whisper.model import ModelDimensions, Whisper

from fastwhisper.loading import OFFICIAL_DIMS

# name: ModelDimensions fields in order (fastwhisper.loading.OFFICIAL_DIMS); turbo's encoder is large-v3's.
DIMS = {name: OFFICIAL_DIMS[name] for name in ("tiny", "base", "small", "medium", "large-v3", "turbo")}
WEIGHT_SEED = 0
INPUT_SEED = 1234
MAX_REL_ERR = 5e-2  # encoder output against the fp32 reference; above it a row is a wrong output
GEMM_N = {"cuda": 8192, "cpu": 1024}
COPY_BYTES = {"cuda": 1 << 30, "cpu": 64 << 20}
MIB = 1 << 20


def encoder_dims(name: str) -> Tuple[int, int, int, int, int]:
    """(n_mels, n_ctx, n_state, n_head, n_layer): AudioEncoder's constructor arguments."""
    return DIMS[name][:5]


# -- devices and timing ---------------------------------------------------------------------------


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def free_device_memory(device) -> None:
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()


def device_name(device) -> str:
    return torch.cuda.get_device_name(device) if is_cuda(device) else "cpu"


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def git_commit() -> str:
    """$FASTWHISPER_COMMIT where set, else HEAD of the checkout this file is in, or "unknown" (e.g. a copy without
    .git). The GPU machine's copy of the working tree keeps the .git of the session's first commit, so
    scripts/gpu_run.sh sets FASTWHISPER_COMMIT from the commit it is given."""
    if os.environ.get("FASTWHISPER_COMMIT"):
        return os.environ["FASTWHISPER_COMMIT"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


@contextlib.contextmanager
def tf32_disabled():
    """Full-precision fp32 matmuls and convolutions (for references); restores the settings."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def time_calls_keep(fn: Callable[[], object], device, warmup: int, repeats: int) -> Tuple[List[float], object]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls, and the
    last call's return value. Each timed call starts from an idle device; CUDA events on a GPU,
    time.perf_counter on the CPU."""
    out = None
    for _ in range(warmup):
        out = fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if is_cuda(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return times, out


def time_calls_device_synced(fn: Callable[[], object], device, warmup: int, repeats: int) -> Tuple[List[float], object]:
    """time_calls_keep for work that runs on a CUDA stream of its own (CTranslate2's), which CUDA events
    recorded on torch's stream would not wait for: time.perf_counter around each call, with a device-wide
    synchronize (every stream) before it and after it."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start_s = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append((time.perf_counter() - start_s) * 1e3)
    return times, out


def time_calls(fn: Callable[[], object], device, warmup: int, repeats: int) -> List[float]:
    return time_calls_keep(fn, device, warmup, repeats)[0]


def per_call_us(fns, warmup=3, repeats=7):
    """Median over repeats of (time to replay a CUDA graph running every fn once) / len(fns), in microseconds."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(fns))
    return statistics.median(times)


# -- ceilings and floors --------------------------------------------------------------------------


@torch.inference_mode()
def measure_ceilings(device) -> Dict[str, object]:
    """The device's matmul rate and copy bandwidth, measured now: on CUDA an fp16 8192^3 matmul and
    a 1 GiB device-to-device copy; on the CPU an fp32 1024^3 matmul and a 64 MiB copy. Copy bandwidth
    counts bytes read + written."""
    kind = "cuda" if is_cuda(device) else "cpu"
    n, nbytes = GEMM_N[kind], COPY_BYTES[kind]
    dtype = torch.float16 if kind == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    gemm_ms = statistics.median(time_calls(lambda: torch.matmul(a, b), device, warmup=3, repeats=10))
    del a, b
    src = torch.randint(0, 256, (nbytes,), device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    copy_ms = statistics.median(time_calls(lambda: dst.copy_(src), device, warmup=3, repeats=10))
    del src, dst
    free_device_memory(device)
    return {
        "device": device_name(device),
        "gemm_tflops": 2 * n**3 / (gemm_ms * 1e-3) / 1e12,
        "gemm_dtype": str(dtype).replace("torch.", ""),
        "gemm_shape": [n, n, n],
        "gemm_median_ms": gemm_ms,
        "copy_gb_per_s": 2 * nbytes / (copy_ms * 1e-3) / 1e9,
        "copy_bytes": nbytes,
        "copy_median_ms": copy_ms,
    }


def ceilings_text(ceilings: Optional[Dict]) -> str:
    if not ceilings:
        return "no ceilings measured"
    n = ceilings["gemm_shape"][0]
    return (f"{ceilings['device']}: {ceilings['gemm_dtype']} GEMM {ceilings['gemm_tflops']:.3g} TFLOP/s "
            f"({n}^3 matmul), copy {ceilings['copy_gb_per_s']:.4g} GB/s (read + write)")


def encoder_flops(dims, batch: int) -> int:
    """Multiply-adds counted as 2 FLOPs: the two convolutions, then per layer the QKV and output
    projections, the MLP and the attention scores and values."""
    n_mels, n_ctx, d, _, n_layer = dims
    t_in, t = 2 * n_ctx, n_ctx
    convs = 2 * batch * t_in * d * n_mels * 3 + 2 * batch * t * d * d * 3
    per_layer = 2 * batch * t * d * d * 4 + 2 * batch * t * d * (4 * d) * 2 + 2 * batch * t * t * d * 2
    return convs + n_layer * per_layer


def encoder_bytes(dims, batch: int, param_count: int, elem_bytes: int = 2) -> int:
    """Weights read once plus the input and output written/read once (``elem_bytes`` each)."""
    n_mels, n_ctx, d, _, _ = dims
    return elem_bytes * (param_count + batch * n_mels * 2 * n_ctx + batch * n_ctx * d)


def floor_for(dims, batch: int, param_count: int, ceilings: Optional[Dict], elem_bytes: int = 2) -> Dict:
    """Encoder floor of one call at ``batch``: FLOPs / GEMM rate or bytes / copy bandwidth, the larger."""
    flops, nbytes = encoder_flops(dims, batch), encoder_bytes(dims, batch, param_count, elem_bytes)
    floor = {"flops": flops, "bytes": nbytes, "floor_compute_ms": None, "floor_memory_ms": None,
             "floor_ms": None, "floor_binds": None}
    if ceilings:
        compute_ms = flops / (ceilings["gemm_tflops"] * 1e12) * 1e3
        memory_ms = nbytes / (ceilings["copy_gb_per_s"] * 1e9) * 1e3
        floor.update(floor_compute_ms=compute_ms, floor_memory_ms=memory_ms,
                     floor_ms=max(compute_ms, memory_ms),
                     floor_binds="compute" if compute_ms >= memory_ms else "memory")
    return floor


def decoder_floor(dims: ModelDimensions, decoder_param_count: int, rows: int, ceilings: Optional[Dict],
                  elem_bytes: int = 2) -> Dict:
    """Bytes one decoder step must read (its weights once, token embedding included for the logits,
    plus the cached cross-attention K/V of every layer for each of ``rows`` sequences) and the time
    that takes at the measured copy bandwidth."""
    cross_kv = elem_bytes * 2 * dims.n_text_layer * dims.n_audio_ctx * dims.n_text_state
    nbytes = elem_bytes * decoder_param_count + rows * cross_kv
    floor_ms = nbytes / (ceilings["copy_gb_per_s"] * 1e9) * 1e3 if ceilings else None
    return {"bytes_per_step": nbytes, "cross_kv_bytes_per_row": cross_kv, "rows": rows, "floor_ms": floor_ms}


# -- models and inputs ----------------------------------------------------------------------------


def random_whisper(name: str, device="cpu", seed: int = WEIGHT_SEED) -> Whisper:
    """openai-whisper's Whisper with random weights of ``name``'s dims, built on ``device``: the
    encoder with PyTorch's default initialisation, the decoder's tensors (whose positional embedding
    whisper leaves uninitialised) drawn from N(0, 0.02). Eval mode, fp32."""
    dims = ModelDimensions(*DIMS[name])
    torch.manual_seed(seed)
    with torch.device(device):
        model = Whisper(dims)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def random_audio_features(dims, windows: int, device="cuda") -> torch.Tensor:
    """Encoded audio of ``windows`` windows [windows, n_audio_ctx, n_audio_state], N(0, 0.25); fp16 on a GPU."""
    features = torch.randn(windows, dims.n_audio_ctx, dims.n_audio_state, device=device) * 0.5
    return features.half() if is_cuda(device) else features


def fixed_length_options(model: Whisper, sample_len: int, **fields):
    """whisper.DecodingOptions for the decoder step benchmarks: English, no timestamps, EOT suppressed, so every
    decode takes exactly ``sample_len`` tokens; ``fields`` add or override (beam_size=5, ...)."""
    import whisper

    tokenizer = whisper.tokenizer.get_tokenizer(True, num_languages=model.num_languages, language="en",
                                                task="transcribe")
    return whisper.DecodingOptions(**{"sample_len": sample_len, "language": "en", "without_timestamps": True,
                                      "suppress_tokens": [-1, tokenizer.eot], **fields})


def make_mel(dims, batch: int) -> torch.Tensor:
    """A log-mel-like input [batch, n_mels, 2 * n_ctx] (fp32, CPU), reproducible per (n_mels, batch)."""
    generator = torch.Generator().manual_seed(INPUT_SEED + 1000 * dims[0] + batch)
    return torch.randn(batch, dims[0], 2 * dims[1], generator=generator) * 0.5


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| (on the CPU, fp32)."""
    out = out.float().cpu()
    return ((out - ref).abs().max() / ref.abs().max()).item()


def common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# -- reporting ------------------------------------------------------------------------------------


def error_status(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"error: {type(exc).__name__}: {message}"


def fmt(value, spec: str = "{}", width: int = 120) -> str:
    """A markdown table cell: "-" for missing values; long messages cut, "|" escaped."""
    if value is None:
        return "-"
    text = spec.format(value)
    return (text[: width - 3] + "..." if len(text) > width else text).replace("|", "\\|")


def json_safe(value):
    """Non-finite floats become null so the file is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- the GPU profiling scripts (decode_call_profile.py, longform_profile.py) ----------------------------


def check_model_names(parser, models: str) -> List[str]:
    """The comma list `models` as names of DIMS, or a parser error naming the unknown one."""
    names = models.split(",")
    for name in names:
        if name not in DIMS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(DIMS)}")
    return names


def host_profile(fn: Callable[[], object], top: int):
    """The ``top`` functions of one call of fn (then a CUDA synchronize) by cumulative host time under cProfile:
    [(file:line(function), calls, cumulative ms)]."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    torch.cuda.synchronize()
    prof.disable()
    rows = [(f"{Path(path).name}:{line}({func})", calls, cumulative * 1e3)
            for (path, line, func), (_, calls, _, cumulative, _) in pstats.Stats(prof, stream=io.StringIO()).stats.items()]
    return sorted(rows, key=lambda r: -r[2])[:top]


def write_outputs(out: Optional[Path], data: Dict, text: str) -> None:
    """With `out`: `data` as JSON at out.json and `text` (a Markdown report) at out.md, folders made."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        out.with_suffix(".md").write_text(text)


def write_report(out: Optional[Path], meta: Dict, results: List[Dict], report: str) -> None:
    """Print the markdown report; with `out`, write meta and results as JSON there and the report beside it (.md)."""
    print(report)
    write_outputs(out, {**meta, "results": results}, report)