"""The options of a batched transcription: whisper.transcribe's keyword arguments, split and checked once.

`transcribe_batch` takes exactly the options of `whisper.transcribe` (openai-whisper 20250625): the ones
that steer the long-form loop, kept in `TranscribeOptions`, and any other keyword, which (as in whisper)
becomes a `DecodingOptions` field. The per-temperature option set and the fallback test mirror the
inner function `decode_with_fallback` of whisper/transcribe.py.
"""

import dataclasses
import warnings
from typing import Optional, Tuple

import torch
from whisper.decoding import DecodingOptions, DecodingResult

# whisper.transcribe's own keyword arguments and their defaults (tests/test_batch_transcribe.py checks
# that they are those of the installed openai-whisper).
TRANSCRIBE_DEFAULTS = dict(
    verbose=None,
    temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    compression_ratio_threshold=2.4,
    logprob_threshold=-1.0,
    no_speech_threshold=0.6,
    condition_on_previous_text=True,
    initial_prompt=None,
    carry_initial_prompt=False,
    word_timestamps=False,
    prepend_punctuations="\"'“¿([{-",
    append_punctuations="\"'.。,，!！?？:：”)]}、",
    clip_timestamps="0",
    hallucination_silence_threshold=None,
)


@dataclasses.dataclass(frozen=True)
class TranscribeOptions:
    """One call's settings, shared by every audio of the batch."""

    verbose: Optional[bool]
    temperatures: Tuple[float, ...]
    compression_ratio_threshold: Optional[float]
    logprob_threshold: Optional[float]
    no_speech_threshold: Optional[float]
    condition_on_previous_text: bool
    initial_prompt: Optional[str]
    carry_initial_prompt: bool
    word_timestamps: bool
    prepend_punctuations: str
    append_punctuations: str
    clip_timestamps: object  # "start,end,..." or a list of seconds, as whisper takes it
    hallucination_silence_threshold: Optional[float]
    decode_options: dict  # DecodingOptions fields (language, task, beam_size, fp16, ...); prompt set per window
    dtype: torch.dtype  # of the mel windows handed to the encoder


def transcribe_options(model, options: dict) -> TranscribeOptions:
    """Split `options` as whisper.transcribe does and settle the compute dtype (with whisper's warnings)."""
    settings = {name: options.pop(name, default) for name, default in TRANSCRIBE_DEFAULTS.items()}
    decode_options = dict(options)
    DecodingOptions(**decode_options)  # an unknown keyword fails here, before any audio is read

    # whisper.transcribe's opening lines: fp16 unless fp16=False, never on the CPU
    dtype = torch.float16 if decode_options.get("fp16", True) else torch.float32
    if model.device == torch.device("cpu"):
        if torch.cuda.is_available():
            warnings.warn("Performing inference on CPU when CUDA is available")
        if dtype == torch.float16:
            warnings.warn("FP16 is not supported on CPU; using FP32 instead")
            dtype = torch.float32
    if dtype == torch.float32:
        decode_options["fp16"] = False
    if settings["word_timestamps"] and decode_options.get("task", "transcribe") == "translate":
        warnings.warn("Word-level timestamps on translations may not be reliable.")

    temperature = settings.pop("temperature")
    # decode_with_fallback: a single number or a sequence of temperatures (elements kept as given)
    temperatures = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)
    return TranscribeOptions(temperatures=temperatures, decode_options=decode_options, dtype=dtype, **settings)


def decoding_options(decode_options: dict, temperature: float) -> DecodingOptions:
    """The DecodingOptions of one attempt at `temperature` (decode_with_fallback's kwargs handling)."""
    kwargs = dict(decode_options)
    if temperature > 0:  # sampling: no beam search
        kwargs.pop("beam_size", None)
        kwargs.pop("patience", None)
    else:  # greedy or beam search: no best-of sampling
        kwargs.pop("best_of", None)
    return DecodingOptions(**kwargs, temperature=temperature)


def needs_fallback(result: DecodingResult, settings: TranscribeOptions) -> bool:
    """Whether decode_with_fallback would retry this result at the next temperature."""
    logprob_threshold = settings.logprob_threshold
    too_repetitive = (settings.compression_ratio_threshold is not None
                      and result.compression_ratio > settings.compression_ratio_threshold)
    too_improbable = logprob_threshold is not None and result.avg_logprob < logprob_threshold
    silence = (settings.no_speech_threshold is not None and result.no_speech_prob > settings.no_speech_threshold
               and too_improbable)
    return (too_repetitive or too_improbable) and not silence


def options_key(options: DecodingOptions) -> tuple:
    """A hashable key equal for two DecodingOptions exactly when they decode alike (lists as tuples)."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in dataclasses.astuple(options))
