"""The rows of a benchmark run: implementation names, the row record, the Runner that measures a row (recording
a failure instead of stopping the run), the floors of a model, and the output checks every section shares."""

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from whisper.audio import N_SAMPLES, SAMPLE_RATE
from whisper.model import ModelDimensions

from common import MIB, decoder_floor, error_status, floor_for, free_device_memory, is_cuda, synchronize

REPO = Path(__file__).resolve().parents[2]

OPENAI, HF, FAST, HYBRID, CPP = "openai-whisper", "hf-sdpa", "fastwhisper", "fastwhisper-hybrid", "fastwhisper-cpp"
# faster-whisper's engine, CTranslate2: float16 on a GPU, float32 on the CPU; and int8 weights on the CPU
FW, FW_INT8 = "faster-whisper", "faster-whisper-int8"
IMPLS = (OPENAI, HF, FAST, HYBRID, CPP, FW, FW_INT8)
SECTIONS = ("encoder", "decoder", "longform", "cpu")
CPU_SECTION_MODELS = ("tiny", "base")
SAMPLES = REPO / "audio_samples"
LONG_CLIP = SAMPLES / "long_pocketsphinx_concat.flac"
WARMUP_CLIP = SAMPLES / "pocketsphinx_goforward.flac"  # real-weight rows warm up on this short clip
QUICK_REAL_AUDIO = SAMPLES / "librivox_sense_and_sensibility_0870.flac"
HF_LOGITS_TOL = 1e-3
WINDOW_S = N_SAMPLES / SAMPLE_RATE  # 30 s
TIME_KEYS = ("value", "median_ms", "min_ms", "max_ms", "times_ms", "x_floor", "peak_mib", "speedup_vs_openai")
UNITS = {"encoder": "ms/window", "decoder": "ms/token", "longform": "RTFx"}
# Real-weight batched rows: one file, its windows decoded together (transcribe_batch decodes the windows ahead of
# the current one when they cannot depend on it), compared with openai-whisper's transcript with these options.
BATCHED_REAL_OPTIONS = {"without_timestamps": True, "condition_on_previous_text": False}


class WrongOutput(Exception):
    """An implementation returned a wrong result: its row is a failure, not a time."""


# -- rows -----------------------------------------------------------------------------------------


def new_row(section: str, model: str, impl: str, device: str, weights: str = "random", **config) -> Dict:
    return {"section": section, "model": model, "weights": weights, "impl": impl, "device": device,
            **config, "metric": UNITS[section], "status": None, "error": None, "value": None,
            "floor": None, "x_floor": None, "peak_mib": None, "check": {}}


class Runner:
    """Holds the rows and the run's settings; runs each row's measurement, recording a failure
    instead of stopping; writes the results."""

    def __init__(self, args, meta: Dict, write_outputs: Optional[Callable[[Dict, List[Dict], Path], None]] = None):
        self.args, self.meta, self.rows, self.kept = args, meta, [], []
        self.write_outputs = write_outputs
        self.deadline = time.monotonic() + args.deadline_s if args.deadline_s else None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def add(self, row: Dict) -> None:
        self.rows.append(row)
        config = row.get("batch") if row["section"] == "encoder" else row.get("mode")
        value = "-" if row["value"] is None else f"{row['value']:.4g}"
        floor = "-" if row["floor"] is None else f"{row['floor']:.4g}"
        print(f"  {row['section']:8s} {row['device']:4s} {row['model']:8s} {row['weights']:8s} {row['impl']:18s} "
              f"{str(config):8s} {row['status']:13s} {value:>9s} {row['metric']:9s} floor {floor:>8s}"
              + (f"  {row['error']}" if row["error"] else ""), file=sys.stderr, flush=True)

    def not_available(self, row: Dict, why: str) -> None:
        row.update(status="not available", error=why)
        self.add(row)

    def run(self, row: Dict, measure: Callable[[Dict], None], prerequisite: Optional[str] = None) -> Dict:
        """measure(row) fills the figures; WrongOutput or any exception makes the row a failure
        with no time. ``prerequisite``: an earlier error that makes the row a failure at once."""
        device = row["device"]
        if self.past_deadline():
            row.update(status="skipped", error=f"run deadline (--deadline-s {self.args.deadline_s:g}) reached")
        elif prerequisite:
            row.update(status="failure", error=prerequisite)
        else:
            try:
                if is_cuda(device):
                    synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                measure(row)
                if is_cuda(device):
                    row["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - recorded in the row, the run goes on
                row.update(status="failure", error=str(exc) if isinstance(exc, WrongOutput) else error_status(exc))
                free_device_memory(device)
        if row["status"] != "ok":
            row.update({key: None for key in TIME_KEYS})
        self.add(row)
        return row

    def inject(self, impl: str, fn: Callable):
        """--inject-failure test hook: the implementation's outputs are emptied, or it raises."""
        kind = self.args.inject.get(impl)
        if kind is None:
            return fn
        if kind == "raise":
            def raising(*a, **k):
                raise RuntimeError(f"injected failure (--inject-failure {impl}=raise)")
            return raising
        return lambda *a, **k: emptied(fn(*a, **k))

    def write(self) -> None:
        if self.write_outputs is not None:
            self.write_outputs(self.meta, self.kept + self.rows, self.args.out_base)

    def planned(self, row: Dict) -> bool:
        """Whether this run measures the rows like ``row`` (--append keeps the others)."""
        if self.args.real_weights_only and row["weights"] == "random":
            return False
        main = [s for s in self.args.sections if s != "cpu"]
        if row["device"] == self.args.device and row["section"] in main and row["model"] in self.args.models:
            return True
        return "cpu" in self.args.sections and row["device"] == "cpu" and row["model"] in self.args.cpu_models


def emptied(out):
    """The same kind of output with nothing in it (the --inject-failure IMPL=empty hook): an encoder
    output without features, a transcript without text, token lists without tokens."""
    if isinstance(out, torch.Tensor):
        return out[..., :0]
    if isinstance(out, dict):
        return {**out, "text": "", "segments": []}
    if isinstance(out, list):
        return [[] for _ in out]
    return out


def precision(device, impl: str = OPENAI) -> str:
    if impl == FW_INT8:
        return "int8 weights (CTranslate2 int8)"
    if not is_cuda(device):
        return "fp32"
    if impl == FW:
        return "fp16 (CTranslate2 float16)"
    return "fp16" if impl == HF else "fp32 weights, fp16 activations"


class Floors:
    """The floors of one model on one device's measured ceilings (fp16 bytes on a GPU, fp32 on the CPU)."""

    def __init__(self, dims: ModelDimensions, state: Dict[str, torch.Tensor], ceilings: Optional[Dict], device):
        self.dims, self.ceilings = dims, ceilings
        self.elem_bytes = 2 if is_cuda(device) else 4
        self.encoder_params = sum(v.numel() for k, v in state.items() if k.startswith("encoder."))
        self.decoder_params = sum(v.numel() for k, v in state.items() if k.startswith("decoder."))

    def encoder_ms(self, batch: int) -> Optional[float]:
        """Per 30-s window, at ``batch`` windows per call."""
        d = self.dims
        floor = floor_for((d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer), batch,
                          self.encoder_params, self.ceilings, self.elem_bytes)
        return None if floor["floor_ms"] is None else floor["floor_ms"] / batch

    def decoder_ms(self, rows: int) -> Optional[float]:
        """Per decoder step over ``rows`` sequences."""
        return decoder_floor(self.dims, self.decoder_params, rows, self.ceilings, self.elem_bytes)["floor_ms"]

    def rtfx_ceiling(self, audio_s: float, windows: int, tokens: float, batch: int = 1) -> Optional[float]:
        """Audio seconds per second at the floors: ``windows`` encoder windows and ``tokens`` decoder
        steps in all, ``batch`` windows (rows) at a time."""
        enc, dec = self.encoder_ms(batch), self.decoder_ms(batch)
        if enc is None or dec is None:
            return None
        return audio_s / ((windows * enc + tokens * dec / batch) / 1e3)


def check_tokens(lists: List[List[int]], windows: int, tokens: int) -> None:
    if len(lists) != windows:
        raise WrongOutput(f"wrong output: {len(lists)} results for {windows} windows")
    short = [len(t) for t in lists if len(t) != tokens]
    if short:
        raise WrongOutput(f"wrong output: decoded {short[0]} tokens, expected {tokens} (EOT suppressed)")


def transcript_text(result) -> str:
    if not isinstance(result, dict) or not isinstance(result.get("text"), str):
        raise WrongOutput(f"wrong output: no transcript text ({type(result).__name__})")
    text = result["text"].strip()
    if not text:
        raise WrongOutput("wrong output: empty transcript")
    return text


def config_label(row: Dict) -> str:
    if row["section"] == "encoder":
        return f"batch {row.get('batch')}"
    if row.get("mode") == "batched":
        return f"batched {row.get('batch')}"
    return str(row.get("mode"))


def baseline_key(row: Dict, as_baseline: bool = False):
    """Rows compared with each other: same section, device, weights kind, model and configuration;
    batched long-form rows are compared with openai-whisper's single stream."""
    config = config_label(row)
    if row["section"] == "longform" and not as_baseline:
        config = "single"
    return row["section"], row["device"], row["weights"], row["model"], config
