"""One timed row of each random-weight section: the encoder (ms per window), the decoder (ms per token at a
fixed token count) and long-form transcription with a fixed token budget per window (RTFx), each checked
before it is timed."""

import math
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from whisper.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram, pad_or_trim

import fastwhisper
from common import MAX_REL_ERR, common_prefix, encoder_dims, make_mel, relative_error, synchronize, time_calls_keep
from sections.models import Context
from sections.rows import OPENAI, WINDOW_S, Runner, WrongOutput, check_tokens, new_row, precision


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
