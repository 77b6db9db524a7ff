"""Option errors, and property-based fuzzing of transcribe/decode options against openai-whisper.

Every combination of DecodingOptions fields (fastwhisper.decode) and of whisper.transcribe's options
(fastwhisper.transcribe), on both decoders, gives openai-whisper's own result on the same random-weight model
where openai-whisper succeeds, or a clear ValueError / TypeError / NotImplementedError; never another exception.
A bad value is refused before any work, with a message naming the option.

Budgets: HYPOTHESIS_PROFILE=ci (the default, bounded for CI) or HYPOTHESIS_PROFILE=long (the larger run).
"""

import math
import time

import numpy as np
import pytest
import torch
import whisper
from hypothesis import given, settings
from hypothesis import strategies as st
from whisper.decoding import DecodingOptions
from whisper.model import ModelDimensions

import fastwhisper
from conftest import assert_same_result, random_model
from fastwhisper.engine.options import check_decode_options

EXAMPLES = settings().max_examples

# A random model small enough to decode in milliseconds: one layer each side, width 64 (one head of 64), and a
# text context of 24 tokens, so that whisper's default sample_len (n_text_ctx // 2) is 12 tokens.
SMALL_EN = ModelDimensions(80, 1500, 64, 1, 1, 51864, 24, 64, 1, 1)
SMALL_MULTI = ModelDimensions(80, 1500, 64, 1, 1, 51865, 24, 64, 1, 1)
CLEAR = (ValueError, TypeError, NotImplementedError)
DECODERS = ("torch", "cpp")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: the shared CPU runs each decode several times faster without oversubscription."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def models(one_thread):
    """{"en"/"multi": (openai-whisper's model, the same weights for fastwhisper)}: fastwhisper's engine puts
    its encoder into the model it runs, so the reference keeps its own copy."""
    return Models({name: (random_model(dims, seed=3), random_model(dims, seed=3))
                   for name, dims in (("en", SMALL_EN), ("multi", SMALL_MULTI))})


class Models(dict):
    def __repr__(self):  # hypothesis prints the arguments of a failing case
        return "models"


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def assert_same_decoding(expected, out):
    """DecodingResults alike: tokens, text, language and temperature exactly, probabilities to 1e-4 (NaN where
    whisper has NaN, as in its language-identification results)."""
    expected, out = (r if isinstance(r, list) else [r] for r in (expected, out))
    assert len(expected) == len(out)
    for e, o in zip(expected, out):
        assert (o.tokens, o.text, o.language) == (e.tokens, e.text, e.language)
        assert same(o.temperature, e.temperature) and same(o.compression_ratio, e.compression_ratio)
        for name in ("avg_logprob", "no_speech_prob"):
            assert getattr(o, name) == pytest.approx(getattr(e, name), abs=1e-4, nan_ok=True), name
        assert (o.language_probs is None) == (e.language_probs is None)
        if e.language_probs is not None:
            assert o.language_probs == pytest.approx(e.language_probs, abs=1e-4)


def outcome(function):
    try:
        return function(), None
    except Exception as exc:  # noqa: BLE001 (the property is about which exceptions come out)
        return None, exc


# ---- option errors: ValueErrors naming the option, before any work (defects a probe found) ---------------

BAD_TRANSCRIBE_OPTIONS = [
    (dict(beam_size=0), "beam_size"),
    (dict(beam_size=-2), "beam_size"),
    (dict(beam_size=2.5), "beam_size"),
    (dict(best_of=-1, temperature=0.5), "best_of"),
    (dict(patience=2.0), "patience requires beam_size"),
    (dict(patience=-1.0, beam_size=5), "patience"),
    (dict(patience=0.05, beam_size=5), "patience"),
    (dict(temperature=-1), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(temperature=(0.0, -0.2)), "temperature"),
    (dict(temperature=()), "temperature"),
    (dict(temperature="0.5"), "temperature"),
    (dict(length_penalty=1.5), "length_penalty"),
    (dict(length_penalty=-0.1), "length_penalty"),
    (dict(sample_len=-1), "sample_len"),
    (dict(sample_len=3.5), "sample_len"),
    (dict(compression_ratio_threshold="high"), "compression_ratio_threshold"),
    (dict(logprob_threshold="low"), "logprob_threshold"),
    (dict(no_speech_threshold=[0.6]), "no_speech_threshold"),
    (dict(task="summarize"), "task"),
    (dict(language="klingon"), "Unsupported language: klingon"),
    (dict(language=7), "language must be"),
    (dict(clip_timestamps="0,abc"), "clip_timestamps"),
    (dict(clip_timestamps="-1,5"), "clip_timestamps"),
    (dict(clip_timestamps=[0.0, float("nan")]), "clip_timestamps"),
    (dict(clip_timestamps=["0", "1"]), "clip_timestamps"),
    (dict(initial_prompt=42), "initial_prompt"),
    (dict(suppress_tokens="1,two"), "suppress_tokens"),
    (dict(suppress_tokens=[99999]), "suppress_tokens"),
    (dict(prefix=[1, 99999]), "prefix"),
    (dict(prefix=list(range(1000, 1030))), "prefix: 30 tokens .* do not fit"),  # longer than n_text_ctx (24)
    (dict(max_initial_timestamp=float("nan")), "max_initial_timestamp"),
    (dict(max_initial_timestamp=-1.0), "max_initial_timestamp"),
    (dict(hallucination_silence_threshold="long", word_timestamps=True), "hallucination_silence_threshold"),
]


@pytest.mark.parametrize("options, field", BAD_TRANSCRIBE_OPTIONS, ids=[f for _, f in BAD_TRANSCRIBE_OPTIONS])
@pytest.mark.parametrize("decoder", DECODERS)
def test_bad_options_are_value_errors_before_any_work(models, monkeypatch, options, field, decoder):
    model = models["multi"][1]
    loaded = []
    monkeypatch.setattr("fastwhisper.engine.job.load_audio", lambda source: loaded.append(source))
    start = time.monotonic()
    with pytest.raises(ValueError, match=field) as info:
        fastwhisper.transcribe(model, "speech.wav", decoder=decoder, fp16=False, **options)
    assert not isinstance(info.value, fastwhisper.AudioLoadError)
    assert loaded == [] and time.monotonic() - start < 2.0


@pytest.mark.parametrize("options", [
    dict(beam_size=0, temperature=0.5),  # whisper drops beam_size when sampling
    dict(best_of=0, temperature=0.5),  # whisper takes 0 candidates as 1
    dict(best_of=-1, temperature=0.0),  # whisper drops best_of at temperature 0
    dict(patience=0.0, beam_size=2),  # whisper takes patience 0 as 1.0
    dict(patience=-3.0, temperature=0.5),  # whisper drops patience when sampling
    dict(sample_len=0),  # whisper's default
    dict(language="German"), dict(language="de"), dict(language="EN"),
    dict(task="lang_id"), dict(task=None),
    dict(clip_timestamps=""), dict(clip_timestamps=[0, 1.5]),
    dict(suppress_tokens=(-1, 5)), dict(suppress_tokens=None), dict(suppress_tokens=""),
    dict(compression_ratio_threshold=None, logprob_threshold=None, no_speech_threshold=None),
    dict(hallucination_silence_threshold=1.0),  # ignored without word_timestamps, as in whisper
])
def test_options_openai_whisper_accepts_are_accepted(models, options):
    model = models["multi"][1]
    fastwhisper.engine.options.transcribe_options(model, dict(options, fp16=False))


def test_temperature_below_zero_fails_at_once_with_the_torch_decoder(models):
    """The probe's case: a NaN Categorical error after seconds of decoding, now a ValueError up front."""
    model = models["en"][1]
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    start = time.monotonic()
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        fastwhisper.transcribe(model, audio, decoder="torch", temperature=-1, fp16=False)
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("options, field", [
    (dict(beam_size=0), "beam_size"), (dict(beam_size=2, best_of=2), "beam_size and best_of"),
    (dict(best_of=2), "best_of"), (dict(patience=1.0), "patience requires beam_size"),
    (dict(temperature=-0.5), "temperature"), (dict(length_penalty=3.0), "length_penalty"),
    (dict(task="nope"), "task"), (dict(language="xx"), "Unsupported language: xx"), (dict(sample_len=-4), "sample_len"),
    (dict(prompt=[-3]), "prompt"),
])
def test_check_decode_options(models, options, field):
    model = models["multi"][1]
    with pytest.raises(ValueError, match=field):
        check_decode_options(model, DecodingOptions(fp16=False), **options)
    with pytest.raises(TypeError):
        check_decode_options(model, DecodingOptions(), no_such_field=1)
    assert check_decode_options(model, DecodingOptions(), language="de").language == "de"


# ---- fuzzing decode(): DecodingOptions field combinations -----------------------------------------------

NAN, INF = float("nan"), float("inf")
TOKENS = st.lists(st.integers(-2, 52_000), max_size=30)
DECODING_FIELDS = dict(
    task=st.sampled_from(["transcribe", "translate", "lang_id", None, "bogus"]),
    language=st.sampled_from([None, "en", "English", "de", "german", "xx", 3]),
    temperature=st.sampled_from([0.0, 0, 0.3, 1.0, -1.0, NAN, INF]),
    sample_len=st.sampled_from([None, 0, 1, 3, 8, 40, -1, 2.5]),
    best_of=st.sampled_from([None, 0, 1, 2, -1, 2.0]),
    beam_size=st.sampled_from([None, 0, 1, 2, 3, -1, 2.0]),
    patience=st.sampled_from([None, 0.0, 0.1, 0.5, 1.0, 2.0, -1.0, NAN]),
    length_penalty=st.sampled_from([None, 0.0, 0.5, 1.0, 1.5, -0.1, NAN]),
    prompt=st.one_of(st.none(), st.text(max_size=20), TOKENS),
    prefix=st.one_of(st.none(), st.text(max_size=10), st.lists(st.integers(-2, 52_000), max_size=8)),
    suppress_tokens=st.sampled_from(["-1", "", "1,2,3", "abc", [1, 2], (1,), (-1, 5), [-1], [99_999], [-5], None]),
    suppress_blank=st.booleans(),
    without_timestamps=st.booleans(),
    max_initial_timestamp=st.sampled_from([None, 0.0, 1.0, 5.0, -1.0, NAN, INF]),
    fp16=st.sampled_from([False, False, False, True]),
)


def _numbers(value) -> list:
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float))]
    return []


def _suppressed_ids(suppress) -> list:
    if isinstance(suppress, str):
        try:
            return [int(t) for t in suppress.split(",")] if suppress else []
        except ValueError:
            return []
    return list(suppress) if suppress is not None else []


def refused_on_purpose(fields: dict) -> bool:
    """Values openai-whisper may run with but fastwhisper refuses up front: an unknown task (whisper translates
    or ignores it), negative sample_len (whisper decodes nothing), token ids below -1 in suppress_tokens
    (whisper counts them from the end of the vocabulary), negative clip timestamps, and values that fail
    whenever whisper comes to use them: a negative or non-finite temperature (whisper's beam search ignores
    it) or max_initial_timestamp (ignored without timestamps), a negative best_of, a
    hallucination_silence_threshold that is no number (whisper reaches those only on a fallback or a long
    silence)."""
    hallucination = fields.get("hallucination_silence_threshold")
    clips = fields.get("clip_timestamps", "0")
    clip_values = _numbers(clips)
    if isinstance(clips, str):
        try:
            clip_values = [float(t) for t in clips.split(",")] if clips else []
        except ValueError:
            clip_values = []
    return (fields.get("task", "transcribe") not in (None, "transcribe", "translate", "lang_id")
            or (isinstance(fields.get("sample_len"), int) and fields["sample_len"] < 0)
            or any(t < -1 for t in _suppressed_ids(fields.get("suppress_tokens")))
            or any(not math.isfinite(t) or t < 0 for t in _numbers(fields.get("temperature")))
            or any(t < 0 for t in _numbers(fields.get("best_of")))
            or any(t < 0 for t in clip_values)
            or any(not math.isfinite(t) or t < 0 for t in _numbers(fields.get("max_initial_timestamp")))
            or (hallucination is not None and not isinstance(hallucination, (int, float))))


def check_against_reference(reference, ours, fields, compare, decoder):
    """The property: ours equals the reference where it succeeds, or is a clear error."""
    ref_result, ref_error = reference
    result, error = ours
    if error is not None:
        assert isinstance(error, CLEAR), f"{decoder}: {type(error).__name__}: {error} for {fields}"
        if ref_error is None and not isinstance(error, NotImplementedError):
            assert refused_on_purpose(fields), (
                f"{decoder} refused what openai-whisper accepts: {type(error).__name__}: {error} for {fields}")
        return
    assert ref_error is None, (
        f"{decoder} succeeded where openai-whisper raised {type(ref_error).__name__}: {ref_error} for {fields}")
    compare(ref_result, result)


@given(fields=st.fixed_dictionaries({}, optional=DECODING_FIELDS), which=st.sampled_from(["en", "multi"]))
@settings(max_examples=EXAMPLES)
def test_fuzz_decode_options(models, fields, which):
    ref_model, our_model = models[which]
    features = torch.randn(1, 1500, 64, generator=torch.Generator().manual_seed(len(str(fields))))
    options = DecodingOptions(**fields)

    def reference():
        torch.manual_seed(0)
        return whisper.decode(ref_model, features, options)

    expected = outcome(reference)
    for decoder in DECODERS:
        def ours():
            torch.manual_seed(0)
            return fastwhisper.decode(our_model, features, options, decoder=decoder)

        check_against_reference(expected, outcome(ours), fields, assert_same_decoding, decoder)


# ---- fuzzing transcribe(): whisper.transcribe's options -------------------------------------------------

TRANSCRIBE_FIELDS = dict(
    temperature=st.sampled_from([0.0, 0.5, (0.0, 0.5, 1.0), (0.2, 0.4), (), (0.2, -1.0), "0.5", NAN]),
    compression_ratio_threshold=st.sampled_from([None, 2.4, 0.0, NAN, "high"]),
    logprob_threshold=st.sampled_from([None, -1.0, 0.0, "x"]),
    no_speech_threshold=st.sampled_from([None, 0.6, 1.0]),
    condition_on_previous_text=st.booleans(),
    initial_prompt=st.sampled_from([None, "hello there", "", 5]),
    carry_initial_prompt=st.booleans(),
    word_timestamps=st.booleans(),
    clip_timestamps=st.sampled_from(["0", "", "0,1.5", "1,2,2.5", "abc", [0.0, 1.0], [-1.0], "0,inf", [0.5]]),
    hallucination_silence_threshold=st.sampled_from([None, 0.5, 2.0]),
    beam_size=st.sampled_from([None, 0, 2]),
    best_of=st.sampled_from([None, 0, 2, -1]),
    patience=st.sampled_from([None, 0.5, 2.0]),
    length_penalty=st.sampled_from([None, 0.5, 2.0]),
    sample_len=st.sampled_from([None, 3, -1]),
    suppress_tokens=st.sampled_from(["-1", "", "x"]),
    without_timestamps=st.booleans(),
    language=st.sampled_from([None, "en", "xx", "English"]),
    task=st.sampled_from(["transcribe", "translate", "bogus"]),
)


@given(fields=st.fixed_dictionaries({}, optional=TRANSCRIBE_FIELDS), which=st.sampled_from(["en", "multi"]))
@settings(max_examples=max(5, EXAMPLES // 6))
def test_fuzz_transcribe_options(models, fields, which):
    ref_model, our_model = models[which]
    audio = np.random.default_rng(len(fields)).normal(0, 0.1, 16000 * 3).astype(np.float32)

    def reference():
        torch.manual_seed(0)
        return whisper.transcribe(ref_model, audio, fp16=False, **fields)

    expected = outcome(reference)
    if isinstance(expected[1], (KeyboardInterrupt, SystemExit)):
        raise expected[1]
    for decoder in DECODERS:
        def ours():
            torch.manual_seed(0)
            return fastwhisper.transcribe(our_model, audio, decoder=decoder, fp16=False, **fields)

        check_against_reference(expected, outcome(ours), fields, assert_same_result, decoder)


def test_profiles_are_registered():
    assert settings.get_profile("ci").max_examples < settings.get_profile("long").max_examples
    assert math.isfinite(EXAMPLES)
