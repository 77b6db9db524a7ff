"""Batched transcription: windows of several audios encoded and decoded together.

    results = fastwhisper.transcribe_batch(model, ["a.flac", "b.wav", waveform], batch_size=8, decoder="cpp")

Each audio is a `TranscriptionStream` (batch_stream.py), whisper.transcribe's seek loop as a state
machine. Up to `batch_size` streams are active at once; each round takes the current window of every
active stream, runs the encoder once on the stacked windows, decodes them with whisper's temperature
fallback in as few calls as the options allow (batch_decoding.py), and hands each stream its result.
A finished stream frees its place for the next audio, loaded only then.

What is batched: the encoder (all active windows, one call per round), language detection of the audios
that start together, and decoding of the windows whose DecodingOptions are identical (the first windows
of audios without a prompt; every window with condition_on_previous_text=False, or with
carry_initial_prompt and no previous text) at temperature 0. Not batched: windows with different prompts
(with condition_on_previous_text=True, every window after the first carries its audio's previous text),
sampling at temperature > 0 (each audio draws from its own generator state), and word-timestamp alignment.
Windows of one audio: each window starts where the previous window's last complete segment ended (seek),
so in general it is known only once the previous window is decoded. With without_timestamps=True,
condition_on_previous_text=False (and no carry_initial_prompt, no word timestamps) a window almost always
moves the seek by its whole size and the next window's prompt is empty, so places that no other audio
takes are filled with the windows ahead of the current one, decoded at the first temperature with an empty
prompt; each is accepted only if it is exactly the window (and prompt) the audio moves to, and a window
ahead that needs a higher temperature is decoded again in its turn. A single long audio is then encoded and
decoded batch_size windows at a time, with the results of one-by-one transcription.

Results: for each audio, the dict `transcribe()` returns for it alone (and with the default generator in
the same state). Decoding several windows in one call computes each row with the same operations, but a
matrix product over a different number of rows may sum in another order, so log-probabilities can differ
from the one-by-one run in the last bits (about 1e-7 in fp32); tokens, text and timestamps stay the same
unless two candidates tie to that precision. A clip (clip_timestamps) that reaches past the end of an
audio ends there, where whisper.transcribe would never return (see TranscriptionStream.next_window).
"""

import os
from collections import deque
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
import tqdm
from whisper.audio import HOP_LENGTH, SAMPLE_RATE

from ..audio import load_audio
from .fallback import StreamGenerators, decode_with_fallback
from .options import transcribe_options
from .stream import TranscriptionStream
from ..encoder import FastAudioEncoder, accelerate
from ..decoder import check_decoder

Result = Union[dict, Exception]


def transcribe_batch(model, audios: Iterable, *, batch_size: int = 8, decoder: str = "torch",
                     **options) -> List[Result]:
    """Transcribe several audios (paths, or 16 kHz waveforms as numpy arrays / torch tensors) together.

    Returns one entry per audio, in order: the dict `transcribe(model, audio, decoder=decoder, **options)`
    returns (text, segments, language), or the exception that audio raised (an AudioLoadError for a
    missing, corrupt or empty file; the other audios are transcribed regardless). batch_size: at most this
    many audios are decoded together. Takes every option of whisper.transcribe; verbose=False shows a
    progress bar over the audio duration, verbose=True prints each segment (prefixed with the audio's
    name when there are several), None (the default) prints nothing.
    An error that is no single audio's (an unsupported option, a failing decode) is raised.
    """
    audios = list(audios)
    results: List[Optional[Result]] = [None] * len(audios)
    for index, result in iter_transcribe_batch(model, audios, batch_size=batch_size, decoder=decoder, **options):
        results[index] = result
    return results


def iter_transcribe_batch(model, audios: Iterable, *, batch_size: int = 8, decoder: str = "torch",
                          **options) -> Iterator[Tuple[int, Result]]:
    """`transcribe_batch`, yielding (index in `audios`, result or exception) as each audio finishes."""
    check_decoder(decoder)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(model.encoder, FastAudioEncoder):
        accelerate(model)
    audios = list(audios)
    settings = transcribe_options(model, dict(options))
    generators = StreamGenerators(model.device)
    pending = deque(enumerate(audios))
    active: Dict[int, TranscriptionStream] = {}
    with _Progress(audios, disable=settings.verbose is not False) as progress:
        while pending or active:
            ready: Dict[int, TranscriptionStream] = {}  # the streams with a window this round
            while True:  # until every place holds a stream with a window, or no audio is left
                started = yield from _load(model, settings, pending, active, batch_size, progress, len(audios) > 1)
                _detect_languages(model, [s for s in started if s.needs_language])
                yield from _next_windows(active, ready, progress)
                if len(ready) == len(active) and (len(active) == batch_size or not pending):
                    break
            if not ready:
                continue
            rows = _rows(ready, batch_size)
            with torch.no_grad():
                features = model.encoder(torch.stack([window.mel_segment for _, _, window, _ in rows]))
            decoded = decode_with_fallback(
                model, features, [s.lookahead_options() if ahead else s.decode_options() for _, s, _, ahead in rows],
                [index for index, _, _, _ in rows], settings, decoder, generators, [ahead for *_, ahead in rows])
            yield from _accept(rows, decoded, active, progress)


def _rows(ready: Dict[int, TranscriptionStream], batch_size: int) -> List[tuple]:
    """(index, stream, window, ahead) of each window to decode this round: every ready stream's own window,
    then, in the places no other audio takes, windows ahead of their turn from the streams that allow it
    (TranscriptionStream.speculates: the windows of one long audio decoded together)."""
    rows = [(index, stream, stream.window, False) for index, stream in ready.items()]
    for index, stream in ready.items():
        free = batch_size - len(rows)
        if free <= 0:
            break
        if stream.speculates:
            rows += [(index, stream, window, True) for window in stream.lookahead(free)]
    return rows


def _accept(rows: List[tuple], decoded: list, active: dict, progress):
    """Hand each stream its results in window order: its own window's, then each window ahead's while that
    window is the one the stream moved to (else the rest are dropped, to be decoded in their turn); yield
    (index, exception) for a stream that fails (e.g. in word alignment), and drop it."""
    by_stream: Dict[int, list] = {}
    for (index, stream, window, ahead), result in zip(rows, decoded):
        by_stream.setdefault(index, []).append((stream, window, ahead, result))
    for index, entries in by_stream.items():
        for stream, window, ahead, result in entries:
            if ahead and (result is None or not stream.matches(window)):
                break
            try:
                stream.accept(result)
            except Exception as exc:  # this audio's own failure
                del active[index]
                progress.finish(index)
                yield index, exc
                break
            progress.advance(index)


def _load(model, settings, pending: deque, active: dict, batch_size: int, progress, labelled: bool):
    """Start streams for pending audios in the free places; yield (index, exception) for each audio that
    cannot be read; return the new streams."""
    started = []
    while len(active) < batch_size and pending:
        index, source = pending.popleft()
        try:
            stream = TranscriptionStream(model, load_audio(source), settings, _label(source, index), labelled)
        except Exception as exc:  # this audio's own failure (unreadable file, bad array, ...)
            progress.drop(index)
            yield index, exc
            continue
        progress.start(index, stream)
        active[index] = stream
        started.append(stream)
    return started


def _next_windows(active: dict, ready: dict, progress):
    """Move each active stream that has no window this round to its next one; yield (index, result dict
    or exception) for each stream that ends instead, and drop it."""
    for index, stream in list(active.items()):
        if index in ready:
            continue
        try:
            window = stream.next_window()
            result = None if window is not None else stream.result()
        except Exception as exc:
            window, result = None, exc
        if window is None:
            del active[index]
            progress.finish(index)
            yield index, result
        else:
            ready[index] = stream


def _detect_languages(model, streams: List[TranscriptionStream]) -> None:
    """whisper.transcribe's language detection (first 30 s of each audio), for several audios at once."""
    if not streams:
        return
    _, probs = model.detect_language(torch.stack([s.language_mel() for s in streams]))
    for stream, p in zip(streams, probs):
        stream.set_language(max(p, key=p.get))


def _label(source, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    return f"audio {index}"


class _Progress:
    """A tqdm bar over the mel frames (1/100 s) of every audio; sizes not known before loading are
    estimated (soundfile's header, an array's length) and corrected when the audio is loaded."""

    def __init__(self, audios: list, disable: bool):
        self.estimates = {i: _estimated_frames(a) for i, a in enumerate(audios)} if not disable else {}
        self.bar = tqdm.tqdm(total=sum(self.estimates.values()), unit="frames", disable=disable)
        self.streams, self.shown = {}, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def _retotal(self, index: int, frames: int) -> None:
        if not self.bar.disable:
            self.bar.total += frames - self.estimates.pop(index, 0)
            self.bar.refresh()

    def drop(self, index: int) -> None:
        self._retotal(index, 0)

    def start(self, index: int, stream: TranscriptionStream) -> None:
        self._retotal(index, stream.content_frames)
        self.streams[index], self.shown[index] = stream, 0

    def advance(self, index: int) -> None:
        done = self.streams[index].done_frames
        if done > self.shown[index]:
            self.bar.update(done - self.shown[index])
            self.shown[index] = done

    def finish(self, index: int) -> None:
        stream, shown = self.streams.pop(index), self.shown.pop(index)
        self.bar.update(stream.content_frames - shown)


def _estimated_frames(source) -> int:
    """Mel frames of an audio (samples // 160 at 16 kHz) from its length or its file header; 0 if unknown."""
    try:
        if isinstance(source, (str, os.PathLike)):
            import soundfile

            info = soundfile.info(os.fsdecode(source))
            samples = -(-info.frames * SAMPLE_RATE // info.samplerate)
        else:
            samples = max(source.shape) if source.ndim == 2 else source.shape[0]
        return int(samples) // HOP_LENGTH
    except Exception:  # an unreadable header: the size is learnt when (if) the audio loads
        return 0
