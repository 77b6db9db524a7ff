"""The options of a batched transcription: whisper.transcribe's keyword arguments, split and checked once.

`transcribe_batch` takes exactly the options of `whisper.transcribe` (openai-whisper 20250625): the ones
that steer the long-form loop, kept in `TranscribeOptions`, and any other keyword, which (as in whisper)
becomes a `DecodingOptions` field. The per-temperature option set and the fallback test mirror the
inner function `decode_with_fallback` of whisper/transcribe.py.
"""

import dataclasses
import math
import numbers
import warnings
from typing import Iterable, Optional, Tuple

import torch
from whisper.decoding import DecodingOptions, DecodingResult
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE, get_tokenizer

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
    """Split `options` as whisper.transcribe does, check every value (a ValueError naming the option, before any
    work) and settle the compute dtype (with whisper's warnings)."""
    settings = {name: options.pop(name, default) for name, default in TRANSCRIBE_DEFAULTS.items()}
    decode_options = dict(options)
    DecodingOptions(**decode_options)  # an unknown keyword fails here (TypeError), before any audio is read
    temperatures = _temperatures(settings["temperature"])
    _check_transcribe_settings(settings)
    _check_decode_fields(model, decode_options, temperatures)

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

    settings.pop("temperature")
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


# ---- checks: whisper's own assertions and decode-time errors, raised up front as ValueErrors naming the option.
# Only what openai-whisper rejects (or fails on) is rejected: every call it accepts is accepted.

def check_decode_options(model, options: DecodingOptions = DecodingOptions(), **kwargs) -> DecodingOptions:
    """The DecodingOptions that `decode(model, mel, options, **kwargs)` runs with (whisper.decode's
    `replace(options, **kwargs)`, TypeError for an unknown field), checked: a ValueError naming the field for a
    value openai-whisper would reject only mid-decode (or with a bare assertion)."""
    if not isinstance(options, DecodingOptions):
        raise TypeError(f"options must be a whisper.decoding.DecodingOptions, got {type(options).__name__}")
    if kwargs:
        options = dataclasses.replace(options, **kwargs)
    fields = dataclasses.asdict(options)
    temperature = fields.pop("temperature")
    _check_temperature(temperature, "temperature")
    if options.beam_size is not None and options.best_of is not None:
        raise ValueError("beam_size and best_of can't be given together")
    if temperature == 0 and options.best_of is not None:
        raise ValueError("best_of with greedy sampling (T=0) is not compatible")
    _check_decode_fields(model, fields, (temperature,), beam_search_at_any_temperature=True)
    return options


def _temperatures(temperature) -> Tuple[float, ...]:
    """decode_with_fallback's temperatures: one number or a non-empty sequence of them (kept as given)."""
    if isinstance(temperature, numbers.Real):
        values = (temperature,)
    elif isinstance(temperature, (str, bytes)) or not isinstance(temperature, Iterable):
        raise ValueError(f"temperature must be a number or a sequence of numbers, got {temperature!r}")
    else:
        values = tuple(temperature)
        if not values:
            raise ValueError("temperature must be a number or a non-empty sequence of numbers, got an empty one")
    for value in values:
        _check_temperature(value, "temperature")
    return values


def _check_temperature(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (0: greedy or beam search, > 0: sampling), "
                         f"got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _optional_number(settings: dict, name: str) -> None:
    value = settings[name]
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise ValueError(f"{name} must be a number or None, got {value!r}")


def _check_transcribe_settings(settings: dict) -> None:
    for name in ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold",
                 "hallucination_silence_threshold"):
        _optional_number(settings, name)
    prompt = settings["initial_prompt"]
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"initial_prompt must be a string or None, got {type(prompt).__name__}")
    for name in ("prepend_punctuations", "append_punctuations"):
        if not isinstance(settings[name], str):
            raise ValueError(f"{name} must be a string, got {type(settings[name]).__name__}")
    _check_clip_timestamps(settings["clip_timestamps"])
    if settings["hallucination_silence_threshold"] is not None and not settings["word_timestamps"]:
        # whisper.transcribe ignores it then; a warning, not an error, keeps such calls working
        warnings.warn("hallucination_silence_threshold has no effect without word_timestamps=True")


def _check_clip_timestamps(clips) -> None:
    """A string of comma-separated seconds, or a sequence of seconds: finite, >= 0."""
    if isinstance(clips, str):
        try:
            values = [float(ts) for ts in (clips.split(",") if clips else [])]
        except ValueError:
            raise ValueError(f"clip_timestamps must be comma-separated numbers of seconds (start,end,start,...), "
                             f"got {clips!r}") from None
    elif isinstance(clips, Iterable) and not isinstance(clips, bytes):
        values = list(clips)
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            raise ValueError(f"clip_timestamps must be a list of numbers of seconds, got {clips!r}")
    else:
        raise ValueError(f"clip_timestamps must be a string 'start,end,...' or a list of seconds, got {clips!r}")
    for value in values:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"clip_timestamps must be finite seconds >= 0, got {value!r} in {clips!r}")


def _check_decode_fields(model, fields: dict, temperatures: Tuple[float, ...],
                         beam_search_at_any_temperature: bool = False) -> None:
    """DecodingOptions fields (as a dict, temperature apart) for the given temperatures. In transcribe,
    beam_size and patience matter only at temperature 0 and best_of only above it (decode_with_fallback drops
    the others); whisper.decode searches with beam_size whenever it is given."""
    greedy = beam_search_at_any_temperature or any(t == 0 for t in temperatures)
    sampling = any(t > 0 for t in temperatures)
    task = fields.get("task", "transcribe")
    if task not in (None, "transcribe", "translate", "lang_id"):  # lang_id: whisper.decode's language detection
        raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
    _check_language(fields.get("language"))
    beam_size, patience = fields.get("beam_size"), fields.get("patience")
    if greedy and beam_size is not None and (not _is_int(beam_size) or beam_size < 1):
        raise ValueError(f"beam_size must be a positive integer or None, got {beam_size!r}")
    if greedy and patience is not None:
        if beam_size is None:
            raise ValueError("patience requires beam_size to be given")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Real) or not math.isfinite(patience) \
                or patience < 0 or round(beam_size * (patience or 1.0)) < 1:
            raise ValueError(f"patience must be a finite number > 0 (with beam_size={beam_size}, more than "
                             f"{0.5 / beam_size:g}), got {patience!r}")
    best_of = fields.get("best_of")
    if sampling and best_of is not None and (not _is_int(best_of) or best_of < 0):
        raise ValueError(f"best_of must be a positive integer or None, got {best_of!r}")
    length_penalty = fields.get("length_penalty")
    if length_penalty is not None and (isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real)
                                       or not 0 <= length_penalty <= 1):
        raise ValueError("length_penalty (alpha) should be a value between 0 and 1")
    sample_len = fields.get("sample_len")
    if sample_len is not None and (not _is_int(sample_len) or sample_len < 0):
        raise ValueError(f"sample_len must be a positive integer or None, got {sample_len!r}")
    max_initial = fields.get("max_initial_timestamp")
    if max_initial is not None and (isinstance(max_initial, bool) or not isinstance(max_initial, numbers.Real)
                                    or not math.isfinite(max_initial) or max_initial < 0):
        raise ValueError(f"max_initial_timestamp must be a finite number of seconds >= 0 or None, got {max_initial!r}")
    n_vocab = model.dims.n_vocab
    _check_suppress_tokens(fields.get("suppress_tokens", "-1"), n_vocab)
    for name in ("prompt", "prefix"):
        _check_text_or_tokens(name, fields.get(name), n_vocab)
    _check_initial_tokens_fit(model, fields)


def _check_language(language) -> None:
    """None, or a language code or name openai-whisper knows (its own message for one it does not)."""
    if language is None:
        return
    if not isinstance(language, str):
        raise ValueError(f"language must be a language code ('en', 'de', ...), a language name ('English', ...) "
                         f"or None to detect it, got {language!r}")
    if language.lower() not in LANGUAGES and language.lower() not in TO_LANGUAGE_CODE:
        raise ValueError(f"Unsupported language: {language.lower()}")


def _check_suppress_tokens(tokens, n_vocab: int) -> None:
    if tokens is None:
        return
    if isinstance(tokens, str):
        try:
            ids = [int(t) for t in tokens.split(",")] if tokens else []
        except ValueError:
            raise ValueError(f"suppress_tokens must be comma-separated token ids (or '-1'), got {tokens!r}") from None
    elif isinstance(tokens, Iterable):
        ids = list(tokens)
        if not all(_is_int(t) for t in ids):
            raise ValueError(f"suppress_tokens must be a list of integer token ids, got {tokens!r}")
        if not isinstance(tokens, list) and -1 not in ids:  # whisper asserts a list here
            raise ValueError(f"suppress_tokens must be a list or a comma-separated string, got a "
                             f"{type(tokens).__name__}")
    else:
        raise ValueError(f"suppress_tokens must be a list of token ids or a comma-separated string, got {tokens!r}")
    bad = [t for t in ids if not -1 <= t < n_vocab]
    if bad:
        raise ValueError(f"suppress_tokens: token ids must lie in [0, {n_vocab}) (or be -1), got {bad[:5]}")


def _check_text_or_tokens(name: str, value, n_vocab: int) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, Iterable) or not all(_is_int(t) for t in value):
        raise ValueError(f"{name} must be a string or a list of token ids, got {value!r}")
    bad = [t for t in value if not 0 <= t < n_vocab]
    if bad:
        raise ValueError(f"{name}: token ids must lie in [0, {n_vocab}), got {bad[:5]}")


def _check_initial_tokens_fit(model, fields: dict) -> None:
    """The start of the sequence (start tokens, prompt, prefix) must fit the text context. whisper cuts the
    prompt to n_text_ctx // 2 - 1 tokens, but the prefix to n_text_ctx // 2 - sample_len, which keeps all of
    it at the default sample_len (its slice [-0:]); a longer start fails mid-decode with a tensor-size error."""
    prefix, prompt = fields.get("prefix"), fields.get("prompt")
    if not prefix:
        return
    n_ctx = model.dims.n_text_ctx
    sample_len = fields.get("sample_len") or n_ctx // 2
    language = fields.get("language") or "en"
    tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                              language=language, task=fields.get("task") or "transcribe")

    def count(value) -> int:
        return len(tokenizer.encode(" " + value.strip())) if isinstance(value, str) else len(value)

    n_prefix = len(range(count(prefix))[-(n_ctx // 2 - sample_len):])  # whisper's slice, -0 included
    n_prompt = 1 + len(range(count(prompt))[-(n_ctx // 2 - 1):]) if prompt else 0
    n_start = len(tokenizer.sot_sequence) + bool(fields.get("without_timestamps"))
    if n_start + n_prompt + n_prefix > n_ctx:
        raise ValueError(f"prefix: {n_prefix} tokens (after the {n_start + n_prompt} start and prompt tokens) do "
                         f"not fit the model's text context of {n_ctx} tokens")
