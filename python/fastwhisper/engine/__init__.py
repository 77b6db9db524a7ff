"""The transcription engine: every call is a set of audio streams run by the model's scheduler thread.

    results = fastwhisper.transcribe_batch(model, ["a.flac", "b.wav", waveform], batch_size=8, decoder="cpp")
    result = fastwhisper.transcribe(model, "speech.flac")          # a batch of one

Each audio is a `TranscriptionStream` (stream.py): whisper.transcribe's seek loop as a state machine. A call
becomes a job (job.py) of the model's engine (scheduler.py); the engine's thread runs the rounds of every
job in flight, whichever thread submitted it, and the caller waits for its own results. So several threads may
transcribe with one model at once, each getting what it would get alone.

What is batched: the encoder (every live window of the round), language detection of the audios that start
together, and decoding of the windows whose DecodingOptions are identical (the first windows of audios
without a prompt; every window with condition_on_previous_text=False, or with carry_initial_prompt and no
previous text) at temperature 0. Not batched: windows with different prompts (with
condition_on_previous_text=True, every window after the first carries its audio's previous text), sampling at
temperature > 0 (each audio draws from its own generator state), and word-timestamp alignment.
Windows of one audio: each window starts where the previous window's last complete segment ended (seek), so
in general it is known only once the previous window is decoded. With without_timestamps=True,
condition_on_previous_text=False (and no carry_initial_prompt, no word timestamps) a window almost always
moves the seek by its whole size and the next window's prompt is empty, so places that no other audio of the
call takes are filled with the windows ahead of the current one, decoded at the first temperature with an
empty prompt; each is accepted only if it is exactly the window (and prompt) the audio moves to, and a window
ahead that needs a higher temperature is decoded again in its turn.

Results: for each audio, the dict openai-whisper's `transcribe()` returns for it alone (with the default
generator in the same state). Decoding several windows in one call computes each row with the same
operations, but a matrix product over a different number of rows may sum in another order, so
log-probabilities can differ from the one-by-one run in the last bits (about 1e-7 in fp32); tokens, text and
timestamps stay the same unless two candidates tie to that precision. A clip (clip_timestamps) that reaches
past the end of an audio ends there, where whisper.transcribe would never return.
"""

from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from whisper.decoding import DecodingOptions

from .. import decoder as _decoder
from ..decoder import check_decoder
from .job import END, Job
from .options import check_decode_options, transcribe_options
from .scheduler import engine_for
from .vad import transcribe_batch_with_vad

Result = Union[dict, Exception]

__all__ = ["transcribe", "transcribe_batch", "iter_transcribe_batch", "submit", "Transcription", "decode", "stats",
           "set_batch_wait", "check_batch_wait"]


def transcribe(model, audio, *, decoder: str = "torch", batch_size: int = 1, vad: bool = False,
               **options) -> dict:
    """Transcribe `audio` (a path, or a 16 kHz waveform as numpy array / torch tensor) with `model`.

    decoder: "torch" (openai-whisper's PyTorch decoder) or "cpp" (fastwhisper's C++ decoding loop).
    Takes every option of `whisper.transcribe` (temperature, beam_size, word_timestamps, ...) and returns the
    same dict (text, segments, language). Audio errors raise AudioLoadError.
    batch_size > 1 decodes up to that many windows of the audio together where they cannot depend on each
    other (without_timestamps=True, condition_on_previous_text=False, no carry_initial_prompt or word
    timestamps), with the same result; otherwise it decodes one window at a time as well.
    vad=True cuts the audio at its silences into speech chunks of at most 30 s (Silero VAD, the `vad` extra)
    and decodes them batch_size at a time, with timestamps on the audio's own timeline (see engine/vad.py).
    """
    [result] = transcribe_batch(model, [audio], batch_size=batch_size, decoder=decoder, vad=vad, **options)
    if isinstance(result, Exception):
        raise result
    return result


def transcribe_batch(model, audios: Iterable, *, batch_size: int = 8, decoder: str = "torch",
                     vad: bool = False, **options) -> List[Result]:
    """Transcribe several audios (paths, or 16 kHz waveforms as numpy arrays / torch tensors) together.

    Returns one entry per audio, in order: the dict `transcribe(model, audio, decoder=decoder, **options)`
    returns (text, segments, language), or the exception that audio raised (an AudioLoadError for a missing,
    corrupt or empty file; the other audios are transcribed regardless). batch_size: at most this many audios
    are decoded together. Takes every option of whisper.transcribe; verbose=False shows a progress bar over
    the audio duration, verbose=True prints each segment (prefixed with the audio's name when there are
    several), None (the default) prints nothing. An error that is no single audio's (an unsupported option,
    a failing decode) is raised.
    vad=True: each audio is cut into speech chunks (Silero VAD) and all chunks of all audios are decoded as
    separate audios, batch_size at a time, then merged per audio (engine/vad.py says what differs).
    """
    audios = list(audios)
    if vad:
        return transcribe_batch_with_vad(model, audios, submit, batch_size=batch_size,
                                         decoder=decoder, **options)
    results: List[Optional[Result]] = [None] * len(audios)
    for index, result in iter_transcribe_batch(model, audios, batch_size=batch_size, decoder=decoder, **options):
        results[index] = result
    return results


def iter_transcribe_batch(model, audios: Iterable, *, batch_size: int = 8, decoder: str = "torch",
                          **options) -> Iterator[Tuple[int, Result]]:
    """`transcribe_batch`, yielding (index in `audios`, result or exception) as each audio finishes.
    Closing the iterator early (or an exception in the caller, e.g. Ctrl-C) cancels the rest."""
    transcription = submit(model, audios, batch_size=batch_size, decoder=decoder, **options)
    try:
        yield from transcription.results()
    finally:
        transcription.cancel()


class Transcription:
    """A call in flight on a model's engine (from `submit`)."""

    def __init__(self, job: Optional[Job], engine=None):
        self._job = job
        self._engine = engine

    def results(self) -> Iterator[Tuple[int, Result]]:
        """(index, result dict or the audio's exception) as each audio finishes; blocks until the next one.
        Raises the call's own failure (an error that is no single audio's, e.g. a failing decode)."""
        job = self._job
        while job is not None:
            item = job.results.get()
            if item is END:
                return
            index, result = item
            if index is None:
                raise result
            yield index, result

    def cancel(self) -> None:
        """Drop the call's audios at the next round. A decoder="cpp" decode in flight stops before its next token
        step when no other call shares its round; the torch decoder finishes its window."""
        if self._job is not None:
            self._engine.cancel(self._job)

    @property
    def done(self) -> bool:
        return self._job is None or self._job.ended


def submit(model, audios: Iterable, *, batch_size: int = 8, decoder: str = "torch",
           on_segment: Optional[Callable[[int, dict], None]] = None, **options) -> Transcription:
    """Start transcribing `audios` on the model's engine and return at once. Options are checked here, before
    any work. on_segment(index, segment) is called on the engine's thread as each segment of audio `index`
    is final (for streaming); it must be quick and must not call into the engine."""
    check_decoder(decoder)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    audios = list(audios)
    settings = transcribe_options(model, dict(options))
    if not audios:
        return Transcription(None)
    engine = engine_for(model)
    return Transcription(engine.submit(Job(model, audios, settings, batch_size, decoder, on_segment)), engine)


def stats(model) -> dict:
    """The model's engine now: jobs, live_streams, waiting_audios; and since it was made: rounds, windows,
    audio_seconds, jobs_started, queue_wait_seconds (their total wait from submit to their first round) and
    phase_seconds (the scheduler thread's seconds in each phase of its rounds: hold, prepare, encode, decode,
    finish)."""
    return engine_for(model).stats()


def set_batch_wait(model, fraction: float) -> None:
    """Let each round of the model's engine wait up to `fraction` x the last round's length for as many new jobs
    as the last round ended (clients that send their next request on each answer); 0, the default, never waits.
    For a server under a closed-loop load: fewer, fuller rounds, each request waiting a little before it starts."""
    engine_for(model).batch_wait = check_batch_wait(fraction)


def check_batch_wait(fraction) -> float:
    """`fraction` as a batch_wait (a number from 0 to 10), or a ValueError naming the field."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 10:
        raise ValueError(f"batch_wait must be a number from 0 to 10 (a fraction of a round's length), got {fraction!r}")
    return float(fraction)


def decode(model, mel: torch.Tensor, options: DecodingOptions = DecodingOptions(), *, decoder: str = "torch",
           **kwargs):
    """`whisper.decode` of log-mel segment(s) [n_mels, 3000] or [batch, n_mels, 3000] (or encoded features),
    run on the model's scheduler thread; decoder="torch" or "cpp"."""
    check_decoder(decoder)
    options = check_decode_options(model, options, **kwargs)
    return engine_for(model).call(_decoder.decode, model, mel, options, decoder=decoder)
