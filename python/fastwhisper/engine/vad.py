"""vad=True: each audio is cut at its silences into speech chunks (Silero VAD, see fastwhisper.audio.vad), the
chunks are packed end to end into windows of at most 30 s (the silence between them left out), every window of
every audio is transcribed in one engine call as if it were a file of its own (so the windows of one long file
are decoded batch_size at a time, with timestamps), and each audio's window results are mapped back, piece by
piece, onto its own timeline.

What changes from sequential transcription:
  * silence between chunks is never decoded, so no text can be invented over it; a window holds as much
    speech as fits, so short utterances between long pauses share windows instead of taking one each;
  * no prompt crosses a window boundary: condition_on_previous_text applies within a window only, and an
    initial_prompt is given to every window (carrying the previous window's text would make each window wait
    for the one before it, i.e. sequential speed again);
  * unless vad_options={"condition_on_previous_chunk": True}: then each audio is one stream whose clips
    (clip_timestamps) are its speech chunks, so every window carries the text before it as sequential
    transcription does and silence is still skipped. The windows of one audio then follow each other, one a
    round, as sequential transcription's do; several audios still share the rounds;
  * temperature fallback, no_speech and compression checks are per window;
  * without a `language` option, every window of a multilingual model detects its own language; the result's
    language is the first window's;
  * clip_timestamps is refused (the chunks are the clips).
The other vad_options={...} go to fastwhisper.audio.vad.speech_windows (max_seconds, padding_s, max_gap_s,
threshold, min_silence_s, min_speech_s, device: where Silero runs, "cpu" by default).
"""

from __future__ import annotations

import warnings
from bisect import bisect_left, bisect_right
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np
from whisper.audio import FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE
from whisper.utils import format_timestamp

from ..audio import load_audio
from ..audio.vad import PADDING_S, speech_chunks, speech_windows
from ..errors import AudioLoadError
from .options import transcribe_options

__all__ = ["transcribe_batch_with_vad", "iter_transcribe_with_vad", "merge_chunk_results"]

Chunk = Tuple[int, int]  # (start_sample, end_sample) of an audio
Window = List[Chunk]  # the chunks decoded together, joined end to end


def transcribe_batch_with_vad(model, audios: Sequence, submit: Callable, *, batch_size: int = 8,
                              decoder: str = "torch", **options) -> list:
    """One result dict, or the exception of that audio, per audio (see iter_transcribe_with_vad)."""
    results: list = [None] * len(audios)
    for index, result in iter_transcribe_with_vad(model, audios, submit, batch_size=batch_size,
                                                  decoder=decoder, **options):
        results[index] = result
    return results


def iter_transcribe_with_vad(model, audios: Sequence, submit: Callable, *, batch_size: int = 8,
                             decoder: str = "torch", **options) -> Iterator[Tuple[int, object]]:
    """Transcribe `audios` chunk by chunk through `submit(model, waveforms, batch_size=..., decoder=...,
    **options)` (the engine's submit, without vad: a call in flight with results() and cancel()), yielding
    (index in `audios`, merged result or that audio's exception) as soon as every chunk of the audio is done.
    The VAD pass over every audio comes first, on the calling thread."""
    if options.get("clip_timestamps") not in (None, "0", "", [], [0], 0):
        raise ValueError("clip_timestamps cannot be combined with vad=True: the speech chunks are the clips")
    verbose = options.pop("verbose", None)
    vad_options = dict(options.pop("vad_options", None) or {})
    previous_chunk = vad_options.pop("condition_on_previous_chunk", False)
    if not isinstance(previous_chunk, bool):
        raise ValueError(f"vad_options['condition_on_previous_chunk'] must be True or False, got {previous_chunk!r}")
    if previous_chunk and not options.get("condition_on_previous_text", True):
        raise ValueError("vad_options['condition_on_previous_chunk']=True needs condition_on_previous_text=True "
                         "(it carries each chunk's text into the next)")
    with warnings.catch_warnings():  # the chunks' own call gives whisper's warnings (fp16 on the CPU, ...)
        warnings.simplefilter("ignore")
        transcribe_options(model, dict(options))  # refuse bad options before the VAD pass, like a plain call

    default_language = options.get("language") or (None if model.is_multilingual else "en")
    audios = list(audios)
    # condition_on_previous_chunk decodes the chunks in place as clips; otherwise they are packed into windows
    cut = speech_chunks if previous_chunk else speech_windows
    windows_of: Dict[int, list] = {}
    owner: List[Tuple[int, int]] = []  # (audio index, window number) of each window waveform
    waveforms: list = []
    loaded: Dict[int, object] = {}  # each audio's waveform
    for index, audio in enumerate(audios):
        try:
            waveform = load_audio(audio)
        except AudioLoadError as exc:
            yield index, exc
            continue
        windows = windows_of[index] = cut(waveform, **vad_options)
        loaded[index] = waveform
        if not previous_chunk:
            for number, window in enumerate(windows):
                owner.append((index, number))
                waveforms.append(np.concatenate([waveform[start:end] for start, end in window]))
        if not windows:
            yield index, merge_chunk_results([], [], default_language)

    if previous_chunk:
        yield from _clips_of_whole_audios(model, loaded, windows_of, submit, batch_size, decoder, verbose,
                                          len(audios) > 1, options)
        return
    if not waveforms:
        return
    done: Dict[int, list] = {index: [None] * len(windows) for index, windows in windows_of.items() if windows}
    failed: set = set()
    transcription = submit(model, waveforms, batch_size=batch_size, decoder=decoder,
                           verbose=None if verbose else verbose, **options)
    try:
        for position, result in transcription.results():
            index, number = owner[position]
            if index in failed:
                continue
            if isinstance(result, Exception):
                failed.add(index)
                yield index, result
                continue
            parts = done[index]
            parts[number] = result
            if all(part is not None for part in parts):
                merged = merge_chunk_results(windows_of[index], parts, default_language,
                                             seam_s=vad_options.get("padding_s", PADDING_S))
                if verbose:
                    _print_segments(merged["segments"], f"[{index}] " if len(audios) > 1 else "")
                yield index, merged
    finally:
        transcription.cancel()  # an early stop of the caller cancels the windows still in flight


def _clips_of_whole_audios(model, loaded: Dict[int, object], chunks_of: Dict[int, List[Chunk]], submit: Callable,
                           batch_size: int, decoder: str, verbose, named: bool,
                           options: dict) -> Iterator[Tuple[int, object]]:
    """condition_on_previous_chunk: each audio with speech is one call whose clips are its chunks (in seconds),
    all calls in flight at once; (index, result or exception) in the order of `audios`."""
    calls = []
    try:
        for index, chunks in chunks_of.items():
            if chunks:
                # whole mel frames, so the last clip ends within the audio's frames (whisper decodes an empty
                # window at a clip end past them)
                clips = [(sample // HOP_LENGTH) / FRAMES_PER_SECOND for chunk in chunks for sample in chunk]
                calls.append((index, submit(model, [loaded[index]], batch_size=batch_size,
                                            decoder=decoder, verbose=None if verbose else verbose,
                                            clip_timestamps=clips, **options)))
        for index, transcription in calls:
            for _, result in transcription.results():
                if verbose and not isinstance(result, Exception):
                    _print_segments(result["segments"], f"[{index}] " if named else "")
                yield index, result
    finally:
        for _, transcription in calls:
            transcription.cancel()


def merge_chunk_results(windows: Sequence[Window], results: Sequence[dict], default_language=None,
                        seam_s: float = PADDING_S) -> dict:
    """One audio's result from its windows' results: segment and word times mapped from each window's time
    onto the audio's (see _Timeline; seam_s: the chunks' padding), seek moved to the window's first chunk in mel
    frames, ids renumbered, texts joined, language the first window's."""
    segments = []
    for window, result in zip(windows, results):
        timeline = _Timeline(window, seam_s)
        offset_frames = window[0][0] // HOP_LENGTH
        for segment in result["segments"]:
            start = timeline.start(segment["start"])
            segment = dict(segment, id=len(segments), seek=segment["seek"] + offset_frames, start=round(start, 3),
                           end=round(max(start, timeline.end(segment["end"])), 3))
            if "words" in segment:
                segment["words"] = [dict(word, **{k: round(t, 2) for k, t in zip(
                    ("start", "end"), timeline.word(word["start"], word["end"]))}) for word in segment["words"]]
            segments.append(segment)
    text = "".join(result["text"] for result in results)
    language = results[0]["language"] if results else default_language
    return {"text": text, "segments": segments, "language": language}


class _Timeline:
    """Seconds in a window (its chunks joined end to end) to seconds in the audio.

    A time inside a chunk keeps its place in that chunk. Each chunk begins and ends with seam_s of padding
    around its speech (speech_chunks' padding_s), so a segment that starts in the last seam_s of a chunk starts
    at the next chunk, and one that ends in the first seam_s of a chunk ends at the previous chunk's end: no
    segment stretches over the silence that was left out for a timestamp that spills across a seam. A segment
    may still span chunks (speech on both sides of the seam). A word lies in one chunk: the one holding its
    middle, and its times are clamped to that chunk."""

    def __init__(self, window: Window, seam_s: float = PADDING_S):
        self.seam_s = seam_s
        self.seams: List[float] = []  # where each chunk starts in the window, seconds
        self.shifts: List[float] = []  # audio time minus window time, per chunk
        at = 0
        for start, end in window:
            self.seams.append(at / SAMPLE_RATE)
            self.shifts.append((start - at) / SAMPLE_RATE)
            at += end - start
        self.ends = self.seams[1:] + [at / SAMPLE_RATE]  # where each chunk ends in the window

    def _chunk(self, t: float) -> int:
        return max(0, bisect_right(self.seams, t) - 1)

    def start(self, t: float) -> float:
        k = self._chunk(t)
        if k + 1 < len(self.seams) and t > self.ends[k] - self.seam_s:
            k, t = k + 1, self.seams[k + 1]
        return t + self.shifts[k]

    def end(self, t: float) -> float:
        k = max(0, bisect_left(self.seams, t) - 1)
        if k > 0 and t < self.seams[k] + self.seam_s:
            k, t = k - 1, self.seams[k]
        return t + self.shifts[k]

    def word(self, start: float, end: float) -> Tuple[float, float]:
        k = self._chunk((start + end) / 2)
        start, end = (min(max(t, self.seams[k]), self.ends[k]) for t in (start, end))
        return start + self.shifts[k], max(start, end) + self.shifts[k]


def _print_segments(segments, prefix: str) -> None:
    for segment in segments:
        print(f"{prefix}[{format_timestamp(segment['start'])} --> {format_timestamp(segment['end'])}] "
              f"{segment['text']}", flush=True)
