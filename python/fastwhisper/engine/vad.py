"""vad=True: each audio is cut at its silences into speech chunks of at most 30 s (Silero VAD, see
fastwhisper.audio.vad), every chunk of every audio is transcribed in one engine call as if it were a file of
its own (so the chunks of one long file are decoded batch_size at a time, with timestamps), and each audio's
chunk results are merged back onto its own timeline.

What changes from sequential transcription:
  * silence between chunks is never decoded, so no text can be invented over it;
  * no prompt crosses a chunk boundary: condition_on_previous_text applies within a chunk only, and an
    initial_prompt is given to every chunk (carrying the previous chunk's text would make each chunk wait
    for the one before it, i.e. sequential speed again);
  * temperature fallback, no_speech and compression checks are per chunk, as they are per window;
  * without a `language` option, every chunk of a multilingual model detects its own language; the result's
    language is the first chunk's;
  * clip_timestamps is refused (the chunks are the clips).
The option vad_options={...} goes to fastwhisper.audio.vad.speech_chunks (max_seconds, padding_s, max_gap_s,
threshold, min_silence_s, min_speech_s, device: where Silero runs, "cpu" by default).
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

from whisper.audio import HOP_LENGTH, SAMPLE_RATE
from whisper.utils import format_timestamp

from ..audio import load_audio
from ..audio.vad import speech_chunks
from ..errors import AudioLoadError
from .options import transcribe_options

__all__ = ["transcribe_batch_with_vad", "merge_chunk_results"]

Chunk = Tuple[int, int]


def transcribe_batch_with_vad(model, audios: Sequence, run_batch: Callable[..., list], *, batch_size: int,
                              decoder: str, **options) -> list:
    """Transcribe `audios` chunk by chunk through `run_batch(model, chunk_waveforms, batch_size=...,
    decoder=..., **options)` (the engine's transcribe_batch without vad) and merge each audio's chunks.
    Returns one result dict, or the exception of that audio, per audio."""
    if options.get("clip_timestamps") not in (None, "0", "", [], [0], 0):
        raise ValueError("clip_timestamps cannot be combined with vad=True: the speech chunks are the clips")
    verbose = options.pop("verbose", None)
    vad_options = dict(options.pop("vad_options", None) or {})
    transcribe_options(model, dict(options))  # refuse bad options before the VAD pass, like a plain call

    per_audio: List[object] = []
    waveforms: list = []
    for audio in audios:
        try:
            waveform = load_audio(audio)
        except AudioLoadError as exc:
            per_audio.append(exc)
            continue
        chunks = speech_chunks(waveform, **vad_options)
        per_audio.append(chunks)
        waveforms.extend(waveform[start:end] for start, end in chunks)

    chunk_results = run_batch(model, waveforms, batch_size=batch_size, decoder=decoder,
                              verbose=None if verbose else verbose, **options) if waveforms else []
    results, position = [], 0
    default_language = options.get("language") or (None if model.is_multilingual else "en")
    for index, chunks in enumerate(per_audio):
        if isinstance(chunks, Exception):
            results.append(chunks)
            continue
        mine = chunk_results[position:position + len(chunks)]
        position += len(chunks)
        failure = next((r for r in mine if isinstance(r, Exception)), None)
        result = failure if failure is not None else merge_chunk_results(chunks, mine, default_language)
        if verbose and isinstance(result, dict):
            _print_segments(result["segments"], f"[{index}] " if len(per_audio) > 1 else "")
        results.append(result)
    return results


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
