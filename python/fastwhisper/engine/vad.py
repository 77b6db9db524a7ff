"""vad=True: each audio is cut at its silences into speech chunks of at most 30 s (Silero VAD, see
fastwhisper.audio.vad), every chunk of every audio is transcribed in one engine call as if it were a file of
its own (so the chunks of one long file are decoded batch_size at a time, with timestamps), and each audio's
chunk results are merged back onto its own timeline.

What changes from sequential transcription:
  * silence between chunks is never decoded, so no text can be invented over it;
  * no prompt crosses a chunk boundary: condition_on_previous_text applies within a chunk only, and an
    initial_prompt is given to every chunk (carrying the previous chunk's text would make each chunk wait
    for the one before it, i.e. sequential speed again);
  * unless vad_options={"condition_on_previous_chunk": True}: then each audio is one stream whose clips
    (clip_timestamps) are its speech chunks, so every window carries the text before it as sequential
    transcription does and silence is still skipped. The windows of one audio then follow each other, one a
    round, as sequential transcription's do; several audios still share the rounds;
  * temperature fallback, no_speech and compression checks are per chunk, as they are per window;
  * without a `language` option, every chunk of a multilingual model detects its own language; the result's
    language is the first chunk's;
  * clip_timestamps is refused (the chunks are the clips).
The other vad_options={...} go to fastwhisper.audio.vad.speech_chunks (max_seconds, padding_s, max_gap_s,
threshold, min_silence_s, min_speech_s, device: where Silero runs, "cpu" by default).
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

from whisper.audio import FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE
from whisper.utils import format_timestamp

from ..audio import load_audio
from ..audio.vad import speech_chunks
from ..errors import AudioLoadError
from .options import transcribe_options

__all__ = ["transcribe_batch_with_vad", "iter_transcribe_with_vad", "merge_chunk_results"]

Chunk = Tuple[int, int]


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
    chunks_of: Dict[int, List[Chunk]] = {}
    owner: List[Tuple[int, int]] = []  # (audio index, chunk number) of each chunk waveform
    waveforms: list = []
    loaded: Dict[int, object] = {}  # each audio's waveform (the chunks are views of it)
    for index, audio in enumerate(audios):
        try:
            waveform = load_audio(audio)
        except AudioLoadError as exc:
            yield index, exc
            continue
        chunks = chunks_of[index] = speech_chunks(waveform, **vad_options)
        loaded[index] = waveform
        for number, (start, end) in enumerate(chunks):
            owner.append((index, number))
            waveforms.append(waveform[start:end])
        if not chunks:
            yield index, merge_chunk_results([], [], default_language)

    if not waveforms:
        return
    if previous_chunk:
        yield from _clips_of_whole_audios(model, loaded, chunks_of, submit, batch_size, decoder, verbose,
                                          len(audios) > 1, options)
        return
    done: Dict[int, list] = {index: [None] * len(chunks) for index, chunks in chunks_of.items() if chunks}
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
                merged = merge_chunk_results(chunks_of[index], parts, default_language)
                if verbose:
                    _print_segments(merged["segments"], f"[{index}] " if len(audios) > 1 else "")
                yield index, merged
    finally:
        transcription.cancel()  # an early stop of the caller cancels the chunks still in flight


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


def merge_chunk_results(chunks: Sequence[Chunk], results: Sequence[dict], default_language=None) -> dict:
    """One audio's result from its chunks' results: segment and word times shifted by the chunk's offset
    (seconds), seek by its offset in mel frames, ids renumbered, texts joined, language the first chunk's."""
    segments = []
    for (start, _), result in zip(chunks, results):
        offset_s = start / SAMPLE_RATE
        offset_frames = start // HOP_LENGTH
        for segment in result["segments"]:
            segment = dict(segment, id=len(segments), seek=segment["seek"] + offset_frames,
                           start=round(segment["start"] + offset_s, 3), end=round(segment["end"] + offset_s, 3))
            if "words" in segment:
                segment["words"] = [dict(word, start=round(word["start"] + offset_s, 2),
                                         end=round(word["end"] + offset_s, 2)) for word in segment["words"]]
            segments.append(segment)
    text = "".join(result["text"] for result in results)
    language = results[0]["language"] if results else default_language
    return {"text": text, "segments": segments, "language": language}


def _print_segments(segments, prefix: str) -> None:
    for segment in segments:
        print(f"{prefix}[{format_timestamp(segment['start'])} --> {format_timestamp(segment['end'])}] "
              f"{segment['text']}", flush=True)
