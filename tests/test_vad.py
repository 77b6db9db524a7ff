"""vad=True: Silero VAD speech chunks, packed end to end into windows of at most 30 s, decoded as separate audios
and mapped back onto the audio's timeline (fastwhisper/audio/vad.py, fastwhisper/engine/vad.py)."""

import importlib.util
import json
import sys
import threading
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import soundfile
import torch
from whisper.transcribe import transcribe as whisper_transcribe

# find_spec, not importorskip: importing silero_vad sets torch's thread count to 1 for the whole process,
# which fastwhisper undoes when it loads the model but pytest's collection would not.
if importlib.util.find_spec("silero_vad") is None:
    pytest.skip("silero-vad is not installed (pip install fastwhisper[vad])", allow_module_level=True)

import fastwhisper  # noqa: E402
from fastwhisper.audio import vad as audio_vad  # noqa: E402
from fastwhisper.audio import silero_steps  # noqa: E402
from fastwhisper.audio.silero_steps import GRAPH_STEPS, run_steps  # noqa: E402
from fastwhisper.audio.vad import VADUnavailableError, speech_chunks, speech_windows  # noqa: E402
from fastwhisper.engine import transcribe  # noqa: E402
from fastwhisper.engine.vad import iter_transcribe_with_vad, merge_chunk_results  # noqa: E402
from conftest import DEVICES, NO_CACHE, random_model, requires_cuda, run_cli  # noqa: E402
from real_models import SAMPLES_DIR, fast_model, normalized_wer, require, samples  # noqa: E402

SR = 16000
CLIPS = ["pocketsphinx_goforward.flac", "cards_005.flac", "librivox_sense_and_sensibility_0890.flac"]
SILENCES_S = [6.0, 4.0]  # inserted between the clips
TEXTS = {s["file"]: s["text"] for s in samples()}


def concatenation():
    """The clips with SILENCES_S of digital silence between them: (waveform, [(start_s, end_s) of each clip],
    [(start_s, end_s) of each inserted silence])."""
    parts, clips, silences, t = [], [], [], 0.0
    for i, name in enumerate(CLIPS):
        clip = fastwhisper.load_audio(str(SAMPLES_DIR / name))
        parts.append(clip)
        clips.append((t, t + len(clip) / SR))
        t += len(clip) / SR
        if i < len(SILENCES_S):
            parts.append(np.zeros(int(SILENCES_S[i] * SR), np.float32))
            silences.append((t, t + SILENCES_S[i]))
            t += SILENCES_S[i]
    return np.concatenate(parts), clips, silences


def seconds(chunks):
    return [(a / SR, b / SR) for a, b in chunks]


def test_speech_chunks_cover_the_speech_and_skip_inserted_silence():
    waveform, clips, silences = concatenation()
    chunks = seconds(speech_chunks(waveform))
    assert len(chunks) == len(CLIPS), chunks  # each silence is longer than the gap a chunk may span
    for (start, end), (clip_start, clip_end) in zip(chunks, clips):
        # The recordings have short quiet edges of their own, which VAD may leave out.
        assert clip_start - 0.01 <= start < clip_start + 0.6, (chunks, clips)
        assert clip_end - 0.6 < end <= clip_end + 0.3, (chunks, clips)
    for silence_start, silence_end in silences:
        for start, end in chunks:
            assert end <= silence_start + 0.3 or start >= silence_end - 0.3, (chunks, silences)


def test_speech_chunks_of_a_long_recording_are_at_most_30_s_and_cover_most_of_it():
    waveform = fastwhisper.load_audio(str(SAMPLES_DIR / "long_pocketsphinx_concat.flac"))
    chunks = speech_chunks(waveform)
    assert len(chunks) >= 3  # 72 s of speech with short pauses
    assert all(0 < end - start <= 30 * SR for start, end in chunks)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(chunks, chunks[1:]))
    assert sum(end - start for start, end in chunks) > 0.85 * len(waveform)
    with pytest.raises(ValueError, match="max_seconds"):
        speech_chunks(waveform, max_seconds=31)


def test_speech_windows_pack_whole_chunks_in_order_up_to_30_s():
    waveform, _, _ = concatenation()  # three short clips between long silences: one window
    assert speech_windows(waveform) == [speech_chunks(waveform)]
    long = fastwhisper.load_audio(str(SAMPLES_DIR / "long_pocketsphinx_concat.flac"))
    long = np.concatenate([long, np.zeros(10 * SR, np.float32), waveform, long])
    windows = speech_windows(long)
    assert [chunk for window in windows for chunk in window] == speech_chunks(long)
    lengths = [sum(end - start for start, end in window) for window in windows]
    assert all(0 < n <= 30 * SR for n in lengths)
    # greedy: a window ends only where its next chunk would not fit
    for window, n, following in zip(windows, lengths, windows[1:]):
        assert n + following[0][1] - following[0][0] > 30 * SR
    assert speech_windows(np.zeros(5 * SR, np.float32)) == []


def test_speech_chunks_of_silence_and_noise_floor_are_empty():
    assert speech_chunks(np.zeros(5 * SR, np.float32)) == []
    quiet = np.random.default_rng(0).normal(0, 1e-4, 5 * SR).astype(np.float32)
    assert speech_chunks(quiet) == []
    assert speech_chunks(np.zeros(0, np.float32)) == []


def wrapper_probabilities(model, windows, starts, steps):
    """Silero's own way: its TorchScript wrapper called once per step, from reset_states()."""
    out = torch.empty(starts.numel(), steps, device=windows.device)
    model.reset_states()
    for step in range(steps):
        out[:, step] = model(windows[starts + step], SR)[:, 0]
    model.reset_states()
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_speech_probabilities_equal_silero_wrappers_steps(device):
    waveform, _, _ = concatenation()
    usable = len(waveform) // 512 * 512
    windows = torch.from_numpy(waveform[:usable]).view(-1, 512).to(device)
    model = audio_vad.load_vad_model(device)
    steps = 3 * GRAPH_STEPS + 5  # three CUDA graphs and five eager steps on a GPU
    starts = torch.tensor([0, 7, 200, 333, 500], device=device)  # streams in speech and in silence
    assert int(starts.max()) + steps <= windows.shape[0]
    with torch.inference_mode():
        expected = wrapper_probabilities(model, windows, starts, steps)
        for _ in range(2):  # the second pass replays the cached graphs
            got = run_steps(model, windows, starts, steps)
            assert got.shape == (starts.numel(), steps)
            if device == "cpu":
                assert torch.equal(got, expected)
            else:
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert float(expected.max()) > 0.9 and float(expected.min()) < 0.1  # speech and silence were both read


def test_audios_of_many_lengths_share_a_few_silero_graphs():
    assert [silero_steps._bucket(n) for n in (1, 2, 3, 5, 8, 9, 138, 255, 256)] == [1, 2, 4, 8, 8, 16, 256, 256, 256]
    assert silero_steps._bucket(audio_vad.MAX_STREAMS).bit_length() <= silero_steps.GRAPH_CACHE


@requires_cuda
@pytest.mark.gpu
def test_another_thread_may_allocate_cuda_memory_while_silero_captures(monkeypatch):
    """The engine's scheduler decodes other jobs while a caller's VAD pass captures its graphs: an allocation on
    that thread during the capture must neither fail nor spoil the capture."""
    monkeypatch.setattr(silero_steps, "_graphs", OrderedDict())
    monkeypatch.setattr(silero_steps, "_graph_failed", set())
    errors, captured = [], []
    steps = silero_steps._StepGraph._steps

    def steps_beside_an_allocating_thread(self, net):
        if torch.cuda.is_current_stream_capturing():
            def allocate():
                try:
                    torch.empty(2 ** 27 + 12345, device="cuda")  # 512 MiB of a new size: a real cudaMalloc
                except RuntimeError as exc:
                    errors.append(exc)
            neighbour = threading.Thread(target=allocate)
            neighbour.start()
            neighbour.join()
            captured.append(True)
        steps(self, net)

    monkeypatch.setattr(silero_steps._StepGraph, "_steps", steps_beside_an_allocating_thread)
    torch.cuda.empty_cache()
    waveform, _, _ = concatenation()
    windows = torch.from_numpy(waveform[:len(waveform) // 512 * 512]).view(-1, 512).cuda()
    model = audio_vad.load_vad_model("cuda")
    starts = torch.tensor([0, 100, 300], device="cuda")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns
        expected = wrapper_probabilities(model, windows, starts, GRAPH_STEPS)
        got = run_steps(model, windows, starts, GRAPH_STEPS)
    assert captured and not errors, errors
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_loading_silero_vad_keeps_torchs_thread_count():
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # more than the one thread silero_vad's import sets, on any machine
    try:
        audio_vad.load_vad_model.cache_clear()
        for name in [m for m in sys.modules if m == "silero_vad" or m.startswith("silero_vad.")]:
            del sys.modules[name]  # so that its import runs again
        speech_chunks(np.zeros(SR, np.float32))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


def test_missing_silero_vad_says_how_to_install_it(monkeypatch):
    audio_vad.load_vad_model.cache_clear()
    for name in [m for m in sys.modules if m == "silero_vad" or m.startswith("silero_vad.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "silero_vad", None)
    try:
        with pytest.raises(VADUnavailableError, match=r"pip install fastwhisper\[vad\]"):
            speech_chunks(np.zeros(SR, np.float32))
        with pytest.raises(ImportError):
            speech_chunks(np.zeros(SR, np.float32))
    finally:
        audio_vad.load_vad_model.cache_clear()


def test_merge_maps_times_seek_and_words_chunk_by_chunk():
    def segment(i, start, end, text):
        return {"id": i, "seek": 0, "start": start, "end": end, "text": text, "tokens": [1],
                "words": [{"word": text, "start": start + 0.1, "end": end - 0.1, "probability": 0.9}]}

    # window 1: one chunk at 1-5 s; window 2: chunks at 20-25 s and 40-43 s, joined: 0-5 s and 5-8 s of it
    windows = [[(16000, 80000)], [(320000, 400000), (640000, 688000)]]
    first = {"text": " a b", "language": "en", "segments": [segment(0, 0.0, 1.0, " a"), segment(1, 1.0, 2.5, " b")]}
    second = {"text": " c d e f g", "language": "fr", "segments": [
        segment(0, 0.5, 5.0, " c"),   # ends on the seam: the first chunk's end
        segment(1, 5.0, 6.0, " d"),   # starts on the seam: the second chunk's start
        segment(2, 4.0, 7.5, " e"),   # spans the seam; its one word lies mostly in the second chunk
        segment(3, 2.0, 5.15, " f"),  # ends in the second chunk's leading padding: at the first chunk's end
        segment(4, 4.9, 6.5, " g")]}  # starts in the first chunk's trailing padding: at the second's start
    merged = merge_chunk_results(windows, [first, second])
    assert merged["text"] == " a b c d e f g"
    assert merged["language"] == "en"
    assert [s["id"] for s in merged["segments"]] == [0, 1, 2, 3, 4, 5, 6]
    assert [(s["start"], s["end"]) for s in merged["segments"]] == [
        (1.0, 2.0), (2.0, 3.5), (20.5, 25.0), (40.0, 41.0), (24.0, 42.5), (22.0, 25.0), (40.0, 41.5)]
    assert [s["seek"] for s in merged["segments"]] == [100, 100, 2000, 2000, 2000, 2000, 2000]
    assert [(w["start"], w["end"]) for s in merged["segments"] for w in s["words"]] == [
        (1.1, 1.9), (2.1, 3.4), (20.6, 24.9), (40.1, 40.9), (40.0, 42.4), (22.1, 25.0), (40.0, 41.4)]
    assert first["segments"][0]["start"] == 0.0  # the window results are left as they were
    assert merge_chunk_results([], [], "en") == {"text": "", "segments": [], "language": "en"}


def test_a_segment_end_snaps_back_over_a_seam_only_within_the_chunks_padding():
    # one window of two chunks, audio 1-5 s and 20-25 s: the segment ends 0.3 s into the second chunk
    windows = [[(16000, 80000), (320000, 400000)]]
    result = {"text": " a", "language": "en", "segments": [
        {"id": 0, "seek": 0, "start": 1.0, "end": 4.3, "text": " a", "tokens": [1]}]}
    ends = {seam: merge_chunk_results(windows, [result], seam_s=seam)["segments"][0]["end"] for seam in (0, 0.2, 0.5)}
    assert ends == {0: 20.3, 0.2: 20.3, 0.5: 5.0}


def test_the_seams_follow_vad_options_padding():
    waveform, _, _ = concatenation()
    model = random_model()
    for padding_s in (0.2, 0.5):
        window = speech_windows(waveform, padding_s=padding_s)[0]
        first = (window[0][1] - window[0][0]) / SR  # the first chunk's length: where the second starts

        def engine(model, window_waveforms, **options):  # one segment ending 0.3 s into the second chunk
            class Call:
                def results(self):
                    for position in range(len(window_waveforms)):
                        yield position, {"text": " a", "language": "en", "segments": [
                            {"id": 0, "seek": 0, "start": 0.0, "end": first + 0.3, "text": " a", "tokens": []}]}

                def cancel(self):
                    pass
            return Call()

        (_, merged), = iter_transcribe_with_vad(model, [waveform], engine, fp16=False, language="en",
                                                vad_options={"padding_s": padding_s})
        expected = window[0][1] / SR if padding_s > 0.3 else window[1][0] / SR + 0.3
        assert merged["segments"][0]["end"] == pytest.approx(expected, abs=1e-3), padding_s


def test_window_results_are_routed_to_their_audio_and_a_failing_window_fails_its_audio_alone():
    waveform, clips, _ = concatenation()  # three chunks
    silence = np.zeros(3 * SR, np.float32)
    calls = []

    class FakeCall:  # the engine's submit() answer: results() and cancel(); one segment over each whole window
        def __init__(self, window_waveforms, failing):
            self.window_waveforms, self.failing = window_waveforms, failing
            self.cancelled = False

        def results(self):
            lengths = [len(w) / SR for w in self.window_waveforms]
            order = list(range(len(self.window_waveforms)))[::-1]  # windows finish in any order
            for position in order:
                if position == self.failing:  # a window of the last audio
                    yield position, RuntimeError("decode failed")
                    continue
                text = f" window{position}"
                yield position, {"text": text, "language": "en", "segments": [
                    {"id": 0, "seek": 0, "start": 0.0, "end": lengths[position], "text": text, "tokens": []}]}

        def cancel(self):
            self.cancelled = True

    def engine_failing(failing):
        def fake_engine(model, window_waveforms, **options):
            calls.append((len(window_waveforms), options))
            return FakeCall(window_waveforms, failing)
        return fake_engine

    audios = [waveform, "/nonexistent.flac", silence, torch.from_numpy(waveform)]
    model = random_model()
    chunks = speech_chunks(waveform)
    # whole windows: the three chunks share one window, whose one segment runs from the first chunk's start
    # to the last one's end on the audio's timeline
    results = dict(iter_transcribe_with_vad(model, audios, engine_failing(1), batch_size=3, fp16=False,
                                            language="en"))
    assert [n for n, _ in calls] == [2] and calls[0][1]["batch_size"] == 3
    assert isinstance(results[1], fastwhisper.AudioLoadError)
    assert results[2] == {"text": "", "segments": [], "language": "en"}
    assert isinstance(results[3], RuntimeError)
    assert results[0]["text"] == " window0"
    assert [(s["start"], s["end"]) for s in results[0]["segments"]] == [
        (round(chunks[0][0] / SR, 3), round(chunks[-1][1] / SR, 3))]
    # windows of at most 5.5 s hold one chunk each: each window's segment is its chunk
    calls.clear()
    results = dict(iter_transcribe_with_vad(model, audios, engine_failing(4), batch_size=3, fp16=False,
                                            language="en", vad_options={"max_seconds": 5.5}))
    assert [n for n, _ in calls] == [6]
    assert isinstance(results[3], RuntimeError)
    assert results[0]["text"] == " window0 window1 window2"
    assert [(s["start"], s["end"]) for s in results[0]["segments"]] == [
        (round(a, 3), round(b, 3)) for a, b in seconds(speech_chunks(waveform, max_seconds=5.5))]
    with pytest.raises(ValueError, match="clip_timestamps"):
        list(iter_transcribe_with_vad(model, [silence], engine_failing(None), clip_timestamps="1,2"))


OPTIONS = dict(fp16=False, language="en", temperature=0.0)


@pytest.mark.slow
@pytest.mark.real_weights
def test_vad_transcript_matches_sequential_and_stays_on_the_speech():
    require("tiny.en")
    model = fast_model("tiny.en")
    waveform, clips, silences = concatenation()
    sequential = transcribe(model, waveform, **OPTIONS)
    with_vad = transcribe(model, waveform, vad=True, batch_size=4, word_timestamps=True, **OPTIONS)

    reference = " ".join(TEXTS[name] for name in CLIPS)
    assert normalized_wer(reference, with_vad["text"]) <= normalized_wer(reference, sequential["text"]) + 0.1
    assert with_vad["language"] == "en"
    chunks = seconds(speech_chunks(waveform))
    segments = with_vad["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))

    def in_a_chunk(start, end):
        return any(a - 0.01 <= start and end <= b + 0.05 for a, b in chunks)

    for segment in segments:  # a segment may span the seam of two chunks of one window
        assert in_a_chunk(segment["start"], segment["start"]) and in_a_chunk(segment["end"], segment["end"]), (
            segment["start"], segment["end"], chunks)
        assert segment["seek"] <= int(segment["start"] * 100)
        assert segment["words"], segment
        for word in segment["words"]:
            assert in_a_chunk(word["start"], word["end"]), (word, chunks)
    # The cards recording is the second chunk: its words must come back at that chunk's offset.
    [spades] = [w for s in segments for w in s["words"] if "spades" in w["word"].lower()]
    assert spades["start"] >= clips[1][0] - 0.01 and spades["end"] <= clips[1][1] + 0.05
    for silence_start, silence_end in silences:
        assert not [s for s in segments if s["start"] >= silence_start and s["end"] <= silence_end]


@pytest.mark.real_weights
def test_vad_false_is_the_sequential_transcription_and_silence_gives_nothing():
    require("tiny.en")
    model = fast_model("tiny.en")
    audio = str(SAMPLES_DIR / CLIPS[1])
    ours = transcribe(model, audio, vad=False, **OPTIONS)
    theirs = whisper_transcribe(model, fastwhisper.load_audio(audio), **OPTIONS)
    assert ours["text"] == theirs["text"]
    assert [(s["start"], s["end"]) for s in ours["segments"]] == [(s["start"], s["end"]) for s in theirs["segments"]]
    silent = transcribe(model, np.zeros(10 * SR, np.float32), vad=True, **OPTIONS)
    assert silent == {"text": "", "segments": [], "language": "en"}
    [missing, found] = fastwhisper.transcribe_batch(model, ["/nonexistent.flac", audio], vad=True, **OPTIONS)
    assert isinstance(missing, fastwhisper.AudioLoadError)
    assert normalized_wer(TEXTS[CLIPS[1]], found["text"]) <= normalized_wer(TEXTS[CLIPS[1]], ours["text"]) + 0.1
    with pytest.raises(ValueError, match="clip_timestamps"):
        transcribe(model, audio, vad=True, clip_timestamps=[1.0, 2.0], **OPTIONS)


@pytest.mark.real_weights
def test_cli_vad_writes_the_speech_on_the_files_own_timeline(tmp_path):
    require("tiny.en")
    waveform, clips, silences = concatenation()
    path = tmp_path / "long.wav"
    soundfile.write(str(path), waveform, SR)
    status, out, err = run_cli(path, "--vad", "True", "--batch_size", "4", "--device", "cpu", "--verbose", "False",
                               "--output_format", "json", "--output_dir", tmp_path / "out", "--model_dir", NO_CACHE)
    assert status == 0, err
    result = json.loads((tmp_path / "out" / "long.json").read_text())
    assert normalized_wer(" ".join(TEXTS[c] for c in CLIPS), result["text"]) <= 0.35
    assert result["segments"][-1]["end"] > clips[-1][0], "the last clip is transcribed at its own offset"
    for s in result["segments"]:
        assert not any(a + 0.5 < s["start"] and s["end"] < b - 0.5 for a, b in silences), s


@pytest.mark.real_weights
def test_condition_on_previous_chunk_is_whispers_transcription_of_the_speech_clips():
    # vad_options={"condition_on_previous_chunk": True}: the speech chunks become the clips of one sequential
    # transcription, each window prompted with the text before it: openai-whisper's transcribe() with those
    # clip_timestamps gives the same text and segments. Two audios in flight together keep their own clips.
    require("tiny.en")
    model = fast_model("tiny.en")
    waveform, _, silences = concatenation()
    clips = [(sample // 160) / 100 for chunk in speech_chunks(waveform) for sample in chunk]  # whole mel frames
    theirs = whisper_transcribe(model, waveform, clip_timestamps=clips, **OPTIONS)
    other = fastwhisper.load_audio(str(SAMPLES_DIR / CLIPS[1]))
    ours, other_ours = fastwhisper.transcribe_batch(model, [waveform, other], vad=True, batch_size=4, decoder="cpp",
                                                    vad_options={"condition_on_previous_chunk": True}, **OPTIONS)
    assert ours["text"] == theirs["text"]
    assert [(s["start"], s["end"], s["tokens"]) for s in ours["segments"]] == [
        (s["start"], s["end"], s["tokens"]) for s in theirs["segments"]]
    assert len(speech_chunks(waveform)) > 1 and any(s["seek"] > 0 for s in ours["segments"])
    for silence_start, silence_end in silences:
        assert not [s for s in ours["segments"] if s["start"] >= silence_start and s["end"] <= silence_end]
    other_clips = [(sample // 160) / 100 for chunk in speech_chunks(other) for sample in chunk]
    assert other_ours["text"] == whisper_transcribe(model, other, clip_timestamps=other_clips, **OPTIONS)["text"]
    with pytest.raises(ValueError, match="condition_on_previous_text"):
        transcribe(model, waveform, vad=True, vad_options={"condition_on_previous_chunk": True},
                   condition_on_previous_text=False, **OPTIONS)
    with pytest.raises(ValueError, match="condition_on_previous_chunk"):
        transcribe(model, waveform, vad=True, vad_options={"condition_on_previous_chunk": "yes"}, **OPTIONS)
