"""transcribe_batch: the windows of several audios encoded and decoded together give, for each audio, the
dict transcribe() returns for it alone (real tiny.en weights, CPU, fp32, both decoders).

Exactness: encoder outputs are bit-identical batched or not (each row is computed alike), and so are
tokens, text, timestamps, temperatures and compression ratios. avg_logprob and no_speech_prob may differ
in the last bits (observed <= 1e-6): the decoder's matrix products over several rows (one per audio) sum
in a different order than over one row, so they are compared to 1e-5.

One-by-one references are computed once per (decoder, file, options) and shared by the tests.
"""

import inspect

import numpy as np
import pytest
import torch
import whisper
from whisper.transcribe import transcribe as whisper_transcribe

import fastwhisper
from fastwhisper.engine import fallback as batch_decoding
from fastwhisper.engine.options import TRANSCRIBE_DEFAULTS
from fastwhisper.engine.stream import TranscriptionStream
from conftest import assert_same_result
from real_models import SAMPLES_DIR, fast_model, require, samples

SAMPLES = samples()
PATHS = [str(SAMPLES_DIR / s["file"]) for s in SAMPLES]
# tiny.en is English-only: its tests take the English samples (the other languages go to base, which
# detects them); tiny.en on Spanish decodes garbage to the full sample length at every temperature
ENGLISH = [str(SAMPLES_DIR / s["file"]) for s in SAMPLES if s.get("language", "en") == "en"]
SHORT = sorted((s for s in SAMPLES if s["duration_s"] < 10 and s.get("language", "en") == "en"),
               key=lambda s: s["duration_s"])
LONG = next((str(SAMPLES_DIR / s["file"]) for s in SAMPLES if s["duration_s"] > 60), None)
BASE = dict(fp16=False)
FALLBACK = dict(fp16=False, compression_ratio_threshold=1.6, logprob_threshold=-0.5)  # some windows retry
_references = {}


def short(n):
    return [str(SAMPLES_DIR / s["file"]) for s in SHORT[:n]]


@pytest.fixture(scope="module")
def model():
    require("tiny.en")
    return fast_model("tiny.en")


def one_by_one(model, audios, decoder, **options):
    """openai-whisper's own transcribe() of each audio alone, from torch.manual_seed(0) (cached). Its decoder
    is openai-whisper's for both decoders: the C++ loop gives the same tokens (tests/test_cpp_decoder.py)."""
    results = []
    for audio in audios:
        key = (id(model), audio if isinstance(audio, str) else id(audio), repr(sorted(options.items())))
        if key not in _references:
            torch.manual_seed(0)
            _references[key] = whisper_transcribe(model, fastwhisper.load_audio(audio), **options)
        results.append(_references[key])
    return results


def batched(model, audios, decoder, batch_size, **options):
    torch.manual_seed(0)
    return fastwhisper.transcribe_batch(model, audios, batch_size=batch_size, decoder=decoder, **options)


def assert_all_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_same_result(a, b)


@pytest.fixture
def decode_calls(monkeypatch):
    """(batch size, temperature) of every decode call transcribe_batch makes."""
    calls, decode = [], batch_decoding.decode

    def spy(model, features, options, decoder):
        calls.append((features.shape[0], options.temperature))
        return decode(model, features, options, decoder=decoder)

    monkeypatch.setattr(batch_decoding, "decode", spy)
    return calls


def test_options_are_whisper_transcribe_options():
    parameters = inspect.signature(whisper_transcribe).parameters
    whisper_defaults = {name: p.default for name, p in parameters.items() if p.kind == p.KEYWORD_ONLY}
    assert whisper_defaults == TRANSCRIBE_DEFAULTS


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [2, 4])
@pytest.mark.parametrize("decoder", ["torch", "cpp"])
def test_every_sample_equals_one_by_one(model, decoder, batch_size, decode_calls):
    assert LONG is not None, "a > 60 s sample exercises long-form transcription"
    ours = batched(model, ENGLISH, decoder, batch_size, **BASE)
    assert_all_same(ours, one_by_one(model, ENGLISH, decoder, **BASE))
    long_result = ours[ENGLISH.index(LONG)]
    assert long_result["segments"][-1]["end"] > 60 and len({s["seek"] for s in long_result["segments"]}) > 2
    assert max(n for n, _ in decode_calls) == batch_size  # the first windows were decoded together


@pytest.mark.slow
def test_temperature_fallback_equals_one_by_one(model, decode_calls):
    """Tight thresholds: in a batch of windows, some retry at higher temperatures and some do not."""
    audios, decoder = short(3), "torch"
    ours = batched(model, audios, decoder, 2, **FALLBACK)
    after = torch.get_rng_state()
    torch.manual_seed(0)
    assert torch.equal(after, torch.get_rng_state())  # the default generator is left as it was
    assert_all_same(ours, one_by_one(model, audios, decoder, **FALLBACK))
    temperatures = {s["temperature"] for r in ours for s in r["segments"]}
    assert 0.0 in temperatures and max(temperatures) > 0, temperatures  # some windows fell back, some not
    # retries decode only the failing windows: at a temperature > 0, one window per call
    assert (2, 0.0) in decode_calls and all(n == 1 for n, t in decode_calls if t > 0)


@pytest.mark.slow
def test_without_condition_on_previous_text_windows_of_two_files_share_calls(model, decode_calls):
    """Prompts stay empty: the windows of two long audios are decoded in one call with each other."""
    long_audio = fastwhisper.load_audio(LONG)
    audios = [long_audio[: 40 * 16000], short(1)[0], long_audio[30 * 16000: 70 * 16000]]  # 2, 1 and 2 windows
    options = dict(fp16=False, condition_on_previous_text=False)
    ours = batched(model, audios, "cpp", 4, **options)
    assert_all_same(ours, one_by_one(model, audios, "cpp", **options))
    assert [n for n, t in decode_calls if t == 0][:2] == [3, 2]


# windows of one audio decoded ahead of their turn (TranscriptionStream.speculates)
AHEAD = dict(fp16=False, without_timestamps=True, condition_on_previous_text=False)


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["torch", "cpp"])
def test_windows_of_one_long_audio_decoded_together_equal_one_by_one(model, decoder, decode_calls):
    """Without timestamps or carried text, the 3 windows of the 72.7-s sample go in one decode call."""
    ours = batched(model, [LONG], decoder, 4, **AHEAD)
    assert_all_same(ours, one_by_one(model, [LONG], decoder, **AHEAD))
    assert len({s["seek"] for s in ours[0]["segments"]}) == 3
    assert decode_calls[0] == (3, 0.0)


@pytest.mark.slow
def test_windows_ahead_of_several_audios_equal_one_by_one(model, decode_calls):
    """Three audios of 3, 1 and 2 windows in 4 places: the free place takes the first audio's next window, and
    as audios finish their places go to windows ahead of the others."""
    long_audio = fastwhisper.load_audio(LONG)
    audios = [long_audio[: 70 * 16000], short(1)[0], long_audio[20 * 16000: 75 * 16000]]
    ours = batched(model, audios, "cpp", 4, **AHEAD)
    assert_all_same(ours, one_by_one(model, audios, "cpp", **AHEAD))
    assert decode_calls[0] == (4, 0.0)


@pytest.mark.slow
def test_transcribe_with_a_batch_size_decodes_windows_of_the_audio_together(model, decode_calls, tmp_path):
    torch.manual_seed(0)
    ours = model.transcribe(LONG, decoder="cpp", batch_size=4, **AHEAD)
    assert_same_result(ours, one_by_one(model, [LONG], "cpp", **AHEAD)[0])
    assert decode_calls[0] == (3, 0.0)
    with pytest.raises(fastwhisper.AudioLoadError, match="missing.flac"):
        model.transcribe(str(tmp_path / "missing.flac"), batch_size=2, **AHEAD)
    with pytest.raises(ValueError, match="batch_size"):
        model.transcribe(LONG, batch_size=0, **AHEAD)


@pytest.mark.slow
def test_windows_ahead_that_need_a_higher_temperature_are_decoded_in_their_turn(model, decode_calls):
    """Tight thresholds: windows ahead that fail at temperature 0 are dropped, then decoded in order with the
    audio's generator: the samples and the default generator are those of one-by-one transcription."""
    options = dict(AHEAD, compression_ratio_threshold=1.6, logprob_threshold=-0.5)
    ours = batched(model, [LONG], "cpp", 4, **options)
    after = torch.get_rng_state()
    torch.manual_seed(0)
    assert torch.equal(after, torch.get_rng_state())
    assert_all_same(ours, one_by_one(model, [LONG], "cpp", **options))
    temperatures = [s["temperature"] for s in ours[0]["segments"]]
    assert max(temperatures[1:]) > 0, temperatures  # a window after the first fell back
    # the windows ahead went at temperature 0 only; each retry decodes one window
    assert decode_calls[0] == (3, 0.0) and all(n == 1 for n, t in decode_calls if t > 0)


@pytest.mark.slow
def test_windows_ahead_at_another_position_are_dropped(model, monkeypatch, decode_calls):
    """A window ahead that is not where the audio moves to (here: every one, shifted by 1 s) is never accepted:
    each window is decoded again in its turn, and the result is one-by-one's."""
    real = TranscriptionStream.lookahead

    def shifted(self, count):
        return [type(w)(w.seek + 100, w.segment_size, w.mel_segment) for w in real(self, count)]

    monkeypatch.setattr(TranscriptionStream, "lookahead", shifted)
    ours = batched(model, [LONG], "cpp", 4, **AHEAD)
    assert_all_same(ours, one_by_one(model, [LONG], "cpp", **AHEAD))
    assert [n for n, _ in decode_calls] == [3, 2, 1]  # each round: the audio's window and the shifted ones


@pytest.mark.slow
def test_windows_ahead_with_an_initial_prompt_and_silence_equal_one_by_one(model, decode_calls):
    """The first window's prompt is the initial prompt, the windows ahead have none; 30 s of silence first: a
    window skipped as silence leaves the initial prompt to the next one, which must not take a window ahead
    decoded without it."""
    speech = fastwhisper.load_audio(LONG)[: 50 * 16000]
    audio = np.concatenate([np.zeros(30 * 16000, np.float32), speech])
    options = dict(AHEAD, initial_prompt="A recording of read speech.")
    ours = batched(model, [audio], "cpp", 4, **options)
    assert_all_same(ours, one_by_one(model, [audio], "cpp", **options))


@pytest.mark.slow
def test_windows_of_one_audio_with_timestamps_are_decoded_one_at_a_time(model, decode_calls):
    options = dict(fp16=False, condition_on_previous_text=False)
    ours = batched(model, [LONG], "cpp", 4, **options)
    assert_all_same(ours, one_by_one(model, [LONG], "cpp", **options))
    assert decode_calls and all(n == 1 for n, _ in decode_calls)


@pytest.mark.slow
def test_initial_prompt_equals_one_by_one(model, decode_calls):
    audios = short(3)
    options = dict(fp16=False, initial_prompt="Transcript of a recorded reading.", carry_initial_prompt=True)
    ours = batched(model, audios, "cpp", 4, **options)
    assert_all_same(ours, one_by_one(model, audios, "cpp", **options))
    assert decode_calls[0] == (3, 0.0)  # the same prompt: the first windows in one call


@pytest.mark.slow
def test_word_timestamps_equal_one_by_one(model):
    audios = short(2)
    options = dict(fp16=False, word_timestamps=True, hallucination_silence_threshold=1.0)
    ours = batched(model, audios, "cpp", 2, **options)
    assert_all_same(ours, one_by_one(model, audios, "cpp", **options))
    assert all(s["words"] for r in ours for s in r["segments"] if s["text"])


@pytest.mark.slow
def test_language_detected_per_file():
    require("base")
    base = fast_model("base")
    spanish = [str(SAMPLES_DIR / s["file"]) for s in SAMPLES if s.get("language", "en") != "en"]
    if not spanish:
        pytest.skip("no non-English sample bundled")
    audios = [spanish[0], short(1)[0]]
    ours = batched(base, audios, "cpp", 2, **BASE)
    assert_all_same(ours, one_by_one(base, audios, "cpp", **BASE))
    assert [r["language"] for r in ours] == [SAMPLES[PATHS.index(spanish[0])]["language"], "en"]


@pytest.mark.slow
def test_clips_past_the_end_of_an_audio_end_there(model):
    """whisper.transcribe never returns when a clip reaches past the end of the audio (it decodes the empty
    window there again and again); a batch stream ends the clip at the end of the audio instead."""
    good = short(1)[0]  # < 10 s
    [whole] = one_by_one(model, [good], "cpp", **BASE)
    to_20s, from_15s = [batched(model, [good], "cpp", 2, fp16=False, clip_timestamps=clips)[0]
                        for clips in ("0,20", "15,30")]
    assert_same_result(to_20s, whole)
    assert from_15s == dict(text="", segments=[], language="en")


@pytest.mark.slow
def test_bad_audio_is_returned_and_the_others_transcribed(model, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    good = short(1)[0]
    audios = [str(tmp_path / "missing.flac"), good, str(corrupt), np.zeros(0, np.float32), good]
    ours = batched(model, audios, "torch", 2, verbose=False, **BASE)
    assert [type(r).__name__ for r in ours] == ["AudioLoadError", "dict", "AudioLoadError", "AudioLoadError", "dict"]
    assert "missing.flac" in str(ours[0]) and "corrupt.wav" in str(ours[2])
    [reference] = one_by_one(model, [good], "torch", **BASE)
    assert_same_result(ours[1], reference)
    assert_same_result(ours[4], reference)
    bar = capsys.readouterr().err  # verbose=False: one progress bar over the mel frames of the good audios
    frames = 2 * (len(fastwhisper.load_audio(good)) // 160)
    assert f"{frames}/{frames}" in bar and "100%" in bar


def test_argument_errors(model):
    with pytest.raises(ValueError, match="batch_size"):
        fastwhisper.transcribe_batch(model, [], batch_size=0)
    with pytest.raises(ValueError, match="decoder"):
        fastwhisper.transcribe_batch(model, [], decoder="tensorrt")
    with pytest.raises(TypeError):
        fastwhisper.transcribe_batch(model, [np.zeros(16000, np.float32)], no_such_option=1)
    assert fastwhisper.transcribe_batch(model, [], fp16=False) == []
    assert model.transcribe_batch([], batch_size=3, fp16=False) == []


def test_torch_beam_search_decodes_several_audios(model):
    """openai-whisper's decode fails on several audios with beam search; fastwhisper.decode does not."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, model.dims.n_audio_ctx, model.dims.n_audio_state, generator=generator)
    options = whisper.DecodingOptions(language="en", fp16=False, beam_size=3, sample_len=8)
    together = fastwhisper.decode(model, features, options)
    alone = [fastwhisper.decode(model, f[None], options)[0] for f in features]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.avg_logprob for r in together] == pytest.approx([r.avg_logprob for r in alone], abs=1e-5)
