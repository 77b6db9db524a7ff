"""One call to the engine: its audios, its options and its live streams; results go back through a queue.

A job keeps at most `batch_size` streams live. Its next audios are loaded and turned into log-mel spectrograms
ahead of time on a small pool of loader threads (from the job's submission on: enough to fill its places, then
LOOKAHEAD more), so the scheduler thread, which also drives the GPU, finds them ready instead of computing them
one after another between rounds. Each round the scheduler asks every job for its rows (`prepare`, then
`rows`), encodes and decodes the rows of all jobs together, and hands each job its results (`accept`). The
caller's thread reads (index, result) pairs from `results` as the audios finish; `END` closes the queue.
"""

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Dict, List, Optional, Tuple

import torch
from whisper.audio import N_SAMPLES, log_mel_spectrogram

from ..audio import load_audio
from .errors import describe_failure
from .fallback import StreamGenerators
from .options import TranscribeOptions
from .progress import Progress
from .stream import TranscriptionStream, Window

END = object()  # the last item of a job's result queue
LOOKAHEAD = 2  # audios prepared beyond a job's free places: each holds its whole log-mel in memory
LOADER_THREADS = 4  # decoding and the log-mel's STFT release the GIL, so loaders run beside the scheduler

_loaders: Optional[ThreadPoolExecutor] = None
_loaders_lock = threading.Lock()


def _loader_pool() -> ThreadPoolExecutor:
    global _loaders
    with _loaders_lock:
        if _loaders is None:
            _loaders = ThreadPoolExecutor(LOADER_THREADS, thread_name_prefix="fastwhisper-loader")
        return _loaders


def audio_mel(source, n_mels: int) -> torch.Tensor:
    """The log-mel spectrogram a stream reads: the audio (path, array or tensor) loaded, with whisper's 30 s
    of silence padded for slicing (as whisper.transcribe computes it, on the CPU)."""
    return log_mel_spectrogram(load_audio(source), n_mels, padding=N_SAMPLES)


class JobRow:
    """A window of a job's stream to encode and decode this round (ahead: before its stream's turn)."""

    def __init__(self, job: "Job", index: int, stream: TranscriptionStream, window: Window, ahead: bool):
        self.job, self.index, self.stream, self.window, self.ahead = job, index, stream, window, ahead


class Job:
    def __init__(self, model, audios: list, settings: TranscribeOptions, batch_size: int, decoder: str,
                 on_segment: Optional[Callable[[int, dict], None]] = None):
        self.settings, self.batch_size, self.decoder = settings, batch_size, decoder
        self.on_segment = on_segment  # called on the scheduler thread with (index, segment) as segments finish
        self.generators = StreamGenerators(model.device)  # the default generators' state at the call
        self.n_mels = model.dims.n_mels
        self.pending = deque(enumerate(audios))
        self.loading: Deque[Tuple[int, object, Future]] = deque()  # (index, source, its log-mel to come)
        self.active: Dict[int, TranscriptionStream] = {}
        self.labelled = len(audios) > 1
        self.progress = Progress(audios, disable=settings.verbose is not False)
        self.results: "queue.Queue" = queue.Queue()
        self.cancelled = False  # set by the caller's thread: the job is dropped at the next round
        self.ended = False
        self.submitted_at = 0.0  # time.monotonic() when the engine took the job
        self.first_round_at: Optional[float] = None  # and when its first round started
        self._load_ahead()

    # ---- reporting to the caller

    def _report(self, index: Optional[int], result) -> None:
        self.results.put((index, result))

    def fail(self, error: BaseException) -> None:
        """The job's own failure (no single audio's): the caller raises it."""
        if not self.ended:
            self._report(None, describe_failure(error, self.batch_size))
            self.end()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            for _, _, future in self.loading:
                future.cancel()
            self.loading.clear()
            self.progress.close()
            self.results.put(END)

    @property
    def finished(self) -> bool:
        return self.finished_loading and not self.active

    @property
    def live_streams(self) -> int:
        return len(self.active)

    @property
    def waiting_audios(self) -> int:
        return len(self.pending) + len(self.loading)

    # ---- a round

    def prepare(self, model) -> Dict[int, TranscriptionStream]:
        """Fill the free places with new streams and move every stream without a window to its next one;
        report the audios that finish or fail. Returns the streams with a window this round."""
        ready: Dict[int, TranscriptionStream] = {}
        while True:  # until every place holds a stream with a window, or no audio is left
            started = self._load(model)
            _detect_languages(model, [s for s in started if s.needs_language])
            self._next_windows(ready)
            if len(ready) == len(self.active) and (len(self.active) == self.batch_size or self.finished_loading):
                return ready

    def rows(self, ready: Dict[int, TranscriptionStream]) -> List[JobRow]:
        """Every ready stream's own window, then, in the places no other audio of this job takes, windows
        ahead of their turn from the streams that allow it (TranscriptionStream.speculates)."""
        rows = [JobRow(self, index, stream, stream.window, False) for index, stream in ready.items()]
        for index, stream in ready.items():
            free = self.batch_size - len(rows)
            if free <= 0:
                break
            if stream.speculates:
                rows += [JobRow(self, index, stream, window, True) for window in stream.lookahead(free)]
        return rows

    def accept(self, rows: List[JobRow], decoded: list) -> None:
        """Hand each stream its results in window order: its own window's, then each window ahead's while that
        window is the one the stream moved to (else the rest are dropped, to be decoded in their turn); report
        a stream that fails (e.g. in word alignment), and drop it."""
        by_stream: Dict[int, list] = {}
        for row, result in zip(rows, decoded):
            by_stream.setdefault(row.index, []).append((row, result))
        for index, entries in by_stream.items():
            for row, result in entries:
                if row.ahead and (result is None or not row.stream.matches(row.window)):
                    break
                try:
                    before = len(row.stream.all_segments)
                    row.stream.accept(result)
                    if self.on_segment is not None:
                        for segment in row.stream.all_segments[before:]:
                            self.on_segment(index, segment)
                except Exception as exc:  # this audio's own failure
                    del self.active[index]
                    self.progress.finish(index)
                    self._report(index, exc)
                    break
                self.progress.advance(index)

    def report_done(self) -> None:
        """After a round: report every audio that has no window left, so its caller has its result now and not
        at the next round's start, and end the job when nothing is left."""
        self._next_windows({}, done_only=True)
        if self.finished:
            self.end()

    @property
    def finished_loading(self) -> bool:
        return not self.pending and not self.loading

    def _load_ahead(self) -> None:
        """Start loading audios until the free places and LOOKAHEAD more are covered."""
        while self.pending and len(self.loading) < self.batch_size - len(self.active) + LOOKAHEAD:
            index, source = self.pending.popleft()
            self.loading.append((index, source, _loader_pool().submit(audio_mel, source, self.n_mels)))

    def _load(self, model) -> List[TranscriptionStream]:
        started = []
        while len(self.active) < self.batch_size and not self.finished_loading:
            self._load_ahead()
            index, source, future = self.loading.popleft()
            try:
                stream = TranscriptionStream(model, future.result(), self.settings, _label(source, index),
                                             self.labelled)
            except Exception as exc:  # this audio's own failure (unreadable file, bad array, ...)
                self.progress.drop(index)
                self._report(index, exc)
                continue
            self.progress.start(index, stream)
            self.active[index] = stream
            started.append(stream)
        self._load_ahead()
        return started

    def _next_windows(self, ready: dict, done_only: bool = False) -> None:
        """Move each stream not in `ready` to its next window and add it there; report and drop the streams whose
        audio is done. done_only: only report and drop those (no window is built)."""
        for index, stream in list(self.active.items()):
            if index in ready or (done_only and not stream.at_end()):
                continue
            try:
                window = stream.next_window()
                result = None if window is not None else stream.result()
            except Exception as exc:
                window, result = None, exc
            if window is None:
                del self.active[index]
                self.progress.finish(index)
                self._report(index, result)
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
