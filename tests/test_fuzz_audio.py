"""Property-based fuzzing of audio input: arrays, tensors and files of any length, dtype, layout and rate.

load_audio gives float32 mono samples (the right number, the right values) or an AudioLoadError naming the
problem; transcribe gives a result (openai-whisper's, for the float32 mono audio whisper takes) or an
AudioLoadError / ValueError; never another exception.

Budgets: HYPOTHESIS_PROFILE=ci (the default, bounded for CI) or HYPOTHESIS_PROFILE=long (the larger run).
"""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from whisper.model import ModelDimensions

import fastwhisper
from conftest import assert_same_result, random_model
from fastwhisper.audio import MAX_CHANNELS, SAMPLE_RATE, load_audio
from fastwhisper.errors import AudioLoadError

EXAMPLES = settings().max_examples

TEN_MINUTES = 600 * SAMPLE_RATE
SMALL = ModelDimensions(80, 1500, 64, 1, 1, 51864, 24, 64, 1, 1)  # a random model that decodes in milliseconds

# Lengths in samples: mostly short, sometimes around the 30-s window, sometimes up to ten minutes.
LENGTHS = st.one_of(st.integers(0, 3 * SAMPLE_RATE), st.integers(29 * SAMPLE_RATE, 31 * SAMPLE_RATE),
                    st.integers(0, TEN_MINUTES), st.sampled_from([0, 1, 2, 479, 480, 481, TEN_MINUTES]))
SUPPORTED = ("float16", "float32", "float64", "int16", "int32")
DTYPES = st.sampled_from(SUPPORTED + ("int64", "uint8", "bool", "complex64", "bfloat16"))
LAYOUTS = st.sampled_from(["mono", "channels-first", "channels-last", "row", "column", "3-D", "0-D"])


def make_array(rng, dtype, layout, length, channels, bad):
    """The audio as the caller passes it, and the float64 values it stands for, in the same layout (None for a
    dtype that stands for no audio)."""
    values = rng.normal(0, 0.2, size=(channels, length))
    if bad is not None and length:
        values[rng.integers(channels), rng.integers(length)] = bad
    if dtype in ("int16", "int32"):
        scale = 32768 if dtype == "int16" else 2147483648
        with np.errstate(over="ignore", invalid="ignore"):  # infinite samples clip to full scale
            array = np.clip(np.nan_to_num(values) * scale, -scale, scale - 1).astype(dtype)
        meaning = array.astype(np.float64) / scale
    elif dtype == "bfloat16":
        array = torch.from_numpy(values).to(torch.bfloat16)
        meaning = array.double().numpy()
    elif dtype == "bool":
        array, meaning = values > 0, None
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            array = values.astype(dtype)
        meaning = array.astype(np.float64) if dtype != "complex64" else None
    shaped = {"mono": lambda a: a[0], "channels-first": lambda a: a, "channels-last": lambda a: a.T,
              "row": lambda a: a[:1], "column": lambda a: a[:1].T, "3-D": lambda a: a[None],
              "0-D": lambda a: a[0, 0] if a.shape[1] else a[0, :0].sum()}[layout]
    array = shaped(array)
    if isinstance(array, np.ndarray):
        array = np.ascontiguousarray(array)
    return array, None if meaning is None else np.asarray(shaped(meaning))


def expected_samples(dtype, meaning, bad):
    """load_audio's documented result for these values: mono float samples, or None for an AudioLoadError
    (unsupported dtype, not 1-D/2-D, empty, an ambiguous 2-D layout, NaN or infinite samples)."""
    if meaning is None or dtype not in SUPPORTED + ("bfloat16",) or meaning.ndim not in (1, 2) or meaning.size == 0:
        return None
    if meaning.ndim == 2:
        rows, cols = meaning.shape
        if rows == 1 or cols == 1:
            meaning = meaning.reshape(-1)
        elif rows <= MAX_CHANNELS < cols:
            meaning = meaning.mean(axis=0)
        elif cols <= MAX_CHANNELS < rows:
            meaning = meaning.mean(axis=1)
        else:
            return None
    if not np.isfinite(meaning).all():
        return None
    return meaning


@given(dtype=DTYPES, layout=LAYOUTS, length=LENGTHS, channels=st.integers(1, 10),
       bad=st.sampled_from([None, None, float("nan"), float("inf"), -float("inf")]), as_tensor=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=EXAMPLES)
def test_fuzz_load_audio_arrays(dtype, layout, length, channels, bad, as_tensor, seed):
    assume(length * channels <= TEN_MINUTES * 2)
    if layout in ("mono", "row", "column"):
        channels = 1
    array, meaning = make_array(np.random.default_rng(seed), dtype, layout, length, channels, bad)
    if as_tensor and isinstance(array, np.ndarray) and dtype not in ("uint8", "complex64", "bool"):
        array = torch.from_numpy(array)
    expected = expected_samples(dtype, meaning, bad)
    try:
        out = load_audio(array)
    except AudioLoadError as exc:
        assert str(exc)
        assert expected is None, f"refused a good input: {exc}"
        return
    assert expected is not None, "accepted a bad input"
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags["C_CONTIGUOUS"]
    assert out.shape == expected.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, atol=1e-6 + 2e-3 * (dtype in ("float16", "bfloat16")), rtol=1e-5)


RATES = st.one_of(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000]),
                  st.integers(1, 200_000))
SUBTYPES = st.sampled_from(["PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE"])


@given(rate=RATES, subtype=SUBTYPES, channels=st.integers(1, 4), seconds=st.floats(0, 40),
       target=st.sampled_from([SAMPLE_RATE, SAMPLE_RATE, 8000, 22050, 7919]),
       container=st.sampled_from(["WAV", "FLAC"]),
       bad=st.sampled_from([None, None, None, float("nan")]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=EXAMPLES)
def test_fuzz_load_audio_files(tmp_path_factory, rate, subtype, channels, seconds, target, container, bad, seed):
    frames = int(seconds * rate)
    assume(frames * max(1, target / rate) <= TEN_MINUTES)
    if container == "FLAC" and (subtype not in ("PCM_16", "PCM_24") or rate > 655350 or channels > 8):
        container = "WAV"
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 0.2, size=(frames, channels)).clip(-0.99, 0.99)
    if bad is not None and frames and subtype in ("FLOAT", "DOUBLE"):
        data[rng.integers(frames), rng.integers(channels)] = bad
    path = tmp_path_factory.mktemp("rates") / f"clip.{container.lower()}"
    try:
        sf.write(path, data, rate, format=container, subtype=subtype)
    except (RuntimeError, ValueError, TypeError):
        assume(False)  # a combination libsndfile will not write
    try:
        out = load_audio(path, sr=target)
    except AudioLoadError as exc:
        assert path.name in str(exc)
        has_bad = bad is not None and frames and subtype in ("FLOAT", "DOUBLE")
        assert frames == 0 or has_bad, f"refused a good file: {exc}"
        return
    assert frames > 0 and not (bad is not None and subtype in ("FLOAT", "DOUBLE"))
    assert out.dtype == np.float32 and out.ndim == 1 and np.isfinite(out).all()
    assert out.size == (frames if rate == target else math.ceil(frames * target / rate))
    if rate == target:  # no resampling: the file's own samples, downmixed
        stored = sf.read(path, dtype="float64", always_2d=True)[0].mean(axis=1)
        np.testing.assert_allclose(out, stored, atol=1e-6)
    else:  # band-limited resampling of values within [-1, 1] stays within the filter's overshoot
        assert np.abs(out).max() <= 1.5


@pytest.fixture(scope="module")
def models():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield random_model(SMALL, seed=5), random_model(SMALL, seed=5)
    torch.set_num_threads(saved)


@given(dtype=st.sampled_from(SUPPORTED + ("int64", "complex64")), layout=LAYOUTS,
       length=st.one_of(st.integers(0, 35 * SAMPLE_RATE), st.sampled_from([0, 1, 160, TEN_MINUTES])),
       channels=st.integers(1, 3), bad=st.sampled_from([None, None, float("nan"), float("inf")]),
       decoder=st.sampled_from(["torch", "cpp"]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=max(4, EXAMPLES // 5))
def test_fuzz_transcribe_arrays(models, dtype, layout, length, channels, bad, decoder, seed):
    ref_model, our_model = models
    if layout in ("mono", "row", "column"):
        channels = 1
    array, meaning = make_array(np.random.default_rng(seed), dtype, layout, length, channels, bad)
    expected = expected_samples(dtype, meaning, bad)
    options = dict(temperature=0.0, sample_len=4, fp16=False, language="en", condition_on_previous_text=False)
    try:
        result = fastwhisper.transcribe(our_model, array, decoder=decoder, **options)
    except ValueError as exc:  # AudioLoadError is one
        assert str(exc)
        assert expected is None, f"refused a good input: {exc}"
        return
    assert expected is not None, "accepted a bad input"
    assert isinstance(result, dict) and isinstance(result["text"], str)
    if dtype == "float32" and array.ndim == 1:  # what openai-whisper takes as it is
        assert_same_result(result, whisper.transcribe(ref_model, array, **options))
