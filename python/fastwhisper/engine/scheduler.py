"""The engine of one model: a scheduler thread that owns the model's work, and the calls waiting on it.

Callers (transcribe, transcribe_batch, decode, from any thread) submit work and wait for its results; only the
scheduler thread runs the model. Each round it takes the current window of every live stream of every job,
runs the encoder on them together (one call per compute dtype, at most `max_rows` windows a call), decodes
them with temperature fallback grouped by decoder and identical DecodingOptions, and hands each job its
results. A job that fails (a failing decode call, an out-of-memory error) fails alone; the others go on.
The thread starts with the first job and lives as long as the model: a thread per call would cost memory that
a thread's end does not give back (torch keeps per-thread attention state on CUDA, about 9 MiB a thread). Idle,
it checks every IDLE_CHECK_S that the model still exists, and ends once it is gone. It is a daemon thread, so
work in flight does not keep the interpreter alive; at exit every engine cancels what is left and waits up to
EXIT_JOIN_S for its thread to end (a daemon thread still in C++ as the interpreter finalizes is killed when it
takes back the GIL, which aborts the process with "terminate called without an active exception").

Holding a round (`batch_wait`, set by the server): clients that send their next request when their answer comes
(a closed loop) reach the engine just after the next round has begun, so under load they split into cohorts
that take turns, each round holding a fraction of them. With batch_wait > 0, a round starts once as many new
jobs have come as the last round ended, once the jobs waiting fill a batch, or batch_wait times the last
round's length after it began handing out its results, whichever is first: the cohorts merge into one round,
which on a GPU costs little more than a round of a few.
"""

import atexit
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import decoder as _decoder
from ..encoder import FastAudioEncoder, accelerate
from .fallback import DecodeFailure, Row, decode_with_fallback
from .job import Job, JobRow

PHASES = ("hold", "prepare", "encode", "decode", "finish")  # hold: waiting for returning clients (batch_wait);
# prepare: new streams and their windows (language detection included); encode: the encoder's calls; decode: the
# decoder's calls with temperature fallback; finish: handing the results to the jobs (segments, word timestamps).
# Wall time of the scheduler thread: GPU work is asynchronous, so it counts where the thread waits for it
IDLE_CHECK_S = 1.0  # how often an idle engine thread checks that its model still exists
EXIT_JOIN_S = 3.0  # at interpreter exit, how long each engine's thread may take to end: a C++ decode stops within
# a token step; an encoder call or a torch-decoder window that runs longer is left to finalization, so Ctrl-C
# never waits for it


class Engine:
    def __init__(self, model):
        self._model = weakref.ref(model)
        self._cond = threading.Condition()
        self._jobs: List[Job] = []
        self._calls: deque = deque()  # (function, args, kwargs, Future) to run on the scheduler thread
        self._thread = None
        self._closed = False  # set by shutdown: the thread ends once no work is left
        self._round_jobs: List[Job] = []  # the jobs of the round running now
        self.rounds = 0  # rounds run
        self.windows = 0  # windows encoded and decoded
        self.audio_seconds = 0.0  # audio behind those windows
        self.jobs_started = 0  # jobs that reached their first round
        self.queue_wait_seconds = 0.0  # their total wait from submit to that round's start
        self.batch_wait = 0.0  # the fraction of the last round's length a round may wait for returning clients
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)  # the scheduler thread's time in each phase of its rounds
        _every_engine.add(self)

    # ---- callers' side

    def stats(self) -> dict:
        """What the engine holds now, and what it has done since it was made."""
        with self._cond:
            jobs = [job for job in self._jobs if not job.ended]
        return dict(jobs=len(jobs), live_streams=sum(job.live_streams for job in jobs),
                    waiting_audios=sum(job.waiting_audios for job in jobs), rounds=self.rounds,
                    windows=self.windows, audio_seconds=self.audio_seconds, jobs_started=self.jobs_started,
                    queue_wait_seconds=self.queue_wait_seconds, phase_seconds=dict(self.phase_seconds))

    def submit(self, job: Job) -> Job:
        with self._cond:
            job.submitted_at = time.monotonic()
            self._jobs.append(job)
            self._wake()
        return job

    def cancel(self, job: Job) -> None:
        """Drop the job at the next round. When every job of the round running now is cancelled, its C++ decode
        stops before its next token step (the torch decoder finishes its window)."""
        with self._cond:
            job.cancelled = True
            if self._round_jobs and all(j.cancelled for j in self._round_jobs):
                model = self._model()
                if model is not None:
                    _decoder.interrupt(model)

    def shutdown(self, timeout_s: float) -> None:
        """Cancel every job (so the round in flight is interrupted) and wait up to timeout_s for the scheduler
        thread to end."""
        with self._cond:
            for job in list(self._jobs):
                self.cancel(job)
            self._closed = True
            thread = self._thread
            self._cond.notify()  # an idle wait ends now
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def call(self, function: Callable, *args, **kwargs):
        """function(*args, **kwargs) on the scheduler thread, between rounds; its result or its exception."""
        if threading.current_thread() is self._thread:
            return function(*args, **kwargs)
        future: Future = Future()
        with self._cond:
            self._calls.append((function, args, kwargs, future))
            self._wake()
        return future.result()

    def _wake(self) -> None:  # with self._cond held
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fastwhisper-engine", daemon=True)
            self._thread.start()
        self._cond.notify()

    # ---- the scheduler thread

    def _run(self) -> None:
        last = None  # (jobs the last round ended, its length, when it began handing out its results)
        while True:
            if last is not None and self.batch_wait > 0:
                self._hold(*last)
                last = None
            with self._cond:
                self._jobs = [job for job in self._jobs if not job.ended]
                for job in self._jobs:
                    if job.cancelled:
                        job.end()
                jobs = [job for job in self._jobs if not job.ended]
                calls, self._calls = list(self._calls), deque()
                if not jobs and not calls:
                    if self._closed or self._model() is None:
                        self._thread = None
                        return
                    self._cond.wait(IDLE_CHECK_S)
                    continue
            for function, args, kwargs, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function(*args, **kwargs))
                    except BaseException as exc:  # handed to the caller
                        future.set_exception(exc)
            model = self._model()
            with self._cond:
                jobs = [job for job in jobs if not job.cancelled]
                self._round_jobs = jobs
                now = time.monotonic()
                for job in jobs:
                    if job.first_round_at is None:
                        job.first_round_at = now
                        self.jobs_started += 1
                        self.queue_wait_seconds += now - job.submitted_at
            if jobs:
                started = time.monotonic()
                handed_out = None
                try:
                    with torch.no_grad():
                        handed_out = self._round(model, jobs)
                except BaseException as exc:  # a fault outside any one call's decode: fail the round's jobs
                    for job in jobs:
                        job.fail(exc)
                if handed_out is not None:
                    last = (sum(1 for job in jobs if job.ended), handed_out - started, handed_out)
            with self._cond:  # no interrupt is requested past here, and none is left for the next decode
                self._round_jobs = []
                if model is not None:
                    _decoder.clear_interrupt(model)
            del model

    def _hold(self, returners: int, round_s: float, since: float) -> None:
        """Wait until as many jobs have come since `since` (when the last round began handing out its results) as
        that round ended (`returners`), until the jobs waiting fill a batch, or until batch_wait x round_s after
        it; calls and shutdown end the wait."""
        start = time.monotonic()
        deadline = since + self.batch_wait * round_s
        with self._cond:
            while returners > 0 and not self._calls and not self._closed:
                waiting = [job for job in self._jobs if not job.ended]
                fresh = sum(1 for job in waiting if job.submitted_at >= since)
                full = bool(waiting) and len(waiting) >= max(job.batch_size for job in waiting)
                left = deadline - time.monotonic()
                if fresh >= returners or full or left <= 0:
                    break
                self._cond.wait(left)
        self.phase_seconds["hold"] += time.monotonic() - start

    def _timed(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.phase_seconds[phase] += now - since
        return now

    def _round(self, model, jobs: List[Job]) -> Optional[float]:
        """Encode and decode the current windows of `jobs` and hand each job its results; returns when the handing
        out began (None when no job had a window)."""
        t = time.monotonic()
        rows: List[JobRow] = []
        for job in jobs:
            try:
                ready = job.prepare(model)
            except Exception as exc:  # e.g. language detection failed
                job.fail(exc)
                continue
            if job.finished:
                job.end()
                continue
            rows += job.rows(ready)
        t = self._timed("prepare", t)
        if not rows:
            return None
        max_rows = max(job.batch_size for job in jobs)
        decoded: List[object] = [None] * len(rows)
        by_dtype: Dict[torch.dtype, List[int]] = {}
        for i, row in enumerate(rows):
            by_dtype.setdefault(row.job.settings.dtype, []).append(i)
        for members in by_dtype.values():
            self._encode_and_decode(model, rows, members, max_rows, decoded)
        t = time.monotonic()
        self.rounds += 1
        for row, result in zip(rows, decoded):
            if result is not None and not isinstance(result, DecodeFailure):
                self.windows += 1
                self.audio_seconds += row.window.duration
        by_job: Dict[int, Tuple[Job, list, list]] = {}
        for row, result in zip(rows, decoded):
            entry = by_job.setdefault(id(row.job), (row.job, [], []))
            entry[1].append(row)
            entry[2].append(result)
        for job, job_rows, job_results in by_job.values():
            failure = next((r for r in job_results if isinstance(r, DecodeFailure)), None)
            if failure is not None:
                job.fail(failure.error)
            else:
                job.accept(job_rows, job_results)
                job.report_done()
        self._timed("finish", t)
        return t

    def _encode_and_decode(self, model, rows: List[JobRow], members: List[int], max_rows: int, decoded: list):
        """Encode rows `members` (one dtype) in calls of at most max_rows windows (encoder_call_sizes), then decode
        them."""
        t = time.monotonic()
        features = []
        start = 0
        for size in encoder_call_sizes(len(members), max_rows, _replays_graphs(model.encoder)):
            chunk = members[start:start + size]
            start += size
            try:
                features.append(model.encoder(torch.stack([rows[i].window.mel_segment for i in chunk])))
            except Exception as exc:  # the chunk's jobs fail (e.g. out of memory); the others go on
                for i in chunk:
                    decoded[i] = DecodeFailure(exc)
                features.append(None)
        kept = [i for i in members if decoded[i] is None]
        if kept:
            self._decode(model, rows, kept, features, max_rows, decoded, self._timed("encode", t))

    def _decode(self, model, rows: List[JobRow], kept: List[int], features: list, max_rows: int, decoded: list,
                t: float) -> None:
        stacked = torch.cat([f for f in features if f is not None])
        decode_rows = [Row(feature=k, options=_options(rows[i]), settings=rows[i].job.settings,
                           decoder=rows[i].job.decoder, generators=rows[i].job.generators,
                           key=rows[i].index, ahead=rows[i].ahead) for k, i in enumerate(kept)]
        for i, result in zip(kept, decode_with_fallback(model, stacked, decode_rows, max_rows)):
            decoded[i] = result
        self._timed("decode", t)


def encoder_call_sizes(windows: int, max_rows: int, powers_of_two: bool) -> List[int]:
    """How many windows each encoder call of a round takes: max_rows at a time, or, for an encoder that replays
    CUDA graphs (powers_of_two), powers of two (42 windows: 32 + 8 + 2). Such an encoder captures a graph per
    batch size, and a capture costs more than the encoding itself (a warm-up run, then the capture); in powers of
    two the sizes repeat from round to round and every graph is kept (at most log2(max_rows) + 1 of them), however
    the round's window count varies."""
    sizes = []
    while windows > 0:
        size = min(windows, max_rows)
        if powers_of_two:
            size = 1 << (size.bit_length() - 1)
        sizes.append(size)
        windows -= size
    return sizes


def _replays_graphs(encoder) -> bool:
    return isinstance(encoder, FastAudioEncoder) and encoder.cuda_graphs and encoder.conv1.weight.is_cuda


def _options(row: JobRow) -> dict:
    return row.stream.lookahead_options() if row.ahead else row.stream.decode_options()


_engines: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_every_engine: "weakref.WeakSet" = weakref.WeakSet()  # also those whose model is gone and whose thread still runs
_engines_lock = threading.Lock()


def engine_for(model) -> Engine:
    """The model's engine (made on first use; a plain whisper model gets fastwhisper's encoder first)."""
    with _engines_lock:
        engine = _engines.get(model)
        if engine is None:
            if not isinstance(model.encoder, FastAudioEncoder):
                accelerate(model)
            engine = _engines[model] = Engine(model)
        return engine


@atexit.register
def _shut_down_engines() -> None:
    for engine in list(_every_engine):
        engine.shutdown(EXIT_JOIN_S)
