"""The server's side of the engine: admission (queue limit, draining), decoding uploads, and running each
request as a job of the model's engine, cancelled when its client goes away.

Every request becomes one `fastwhisper.engine.submit` job on the one model, so the engine's scheduler thread
encodes and decodes the windows of all requests in flight together: a new request joins the running batch at
the next round. The engine reports through blocking queues; a thread of `_waiters` per request in flight moves
its items onto the event loop (`loop.call_soon_threadsafe`), so the loop itself never blocks.
"""

import asyncio
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Awaitable, Callable, Tuple

import numpy as np
import torch
from starlette.datastructures import UploadFile

from .. import engine
from ..audio import SAMPLE_RATE, load_audio
from .config import ServerConfig
from .errors import SERVER_ERROR, APIError
from .fields import AudioRequest

POLL_S = 0.25  # how often a waiting request checks that its client is still connected
_SUFFIX_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789")


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready; its job was cancelled."""


class TranscriptionService:
    def __init__(self, model, config: ServerConfig):
        self.model, self.config = model, config
        threads = config.decode_threads or min(8, os.cpu_count() or 1)
        self._decoders = ThreadPoolExecutor(threads, thread_name_prefix="fastwhisper-serve-audio")
        self._waiters = ThreadPoolExecutor(config.max_queue, thread_name_prefix="fastwhisper-serve-wait")
        self.in_flight = 0  # requests admitted and not yet answered (changed on the event loop's thread only)
        self.draining = False  # set when shutdown begins: new requests get 503

    # ---- admission

    def admit(self) -> None:
        """Count a new request in, or refuse it (503 while shutting down, 429 when the queue is full)."""
        if self.draining:
            raise APIError(503, "the server is shutting down; retry on another instance or later",
                           code="shutting_down", type=SERVER_ERROR)
        if self.in_flight >= self.config.max_queue:
            raise APIError(429, f"the server's queue is full ({self.config.max_queue} requests in flight); retry "
                           "later", code="queue_full", type="requests")
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    # ---- audio

    async def load(self, upload: UploadFile) -> np.ndarray:
        """The upload as 16 kHz mono samples (any format fastwhisper.load_audio reads); 400 for audio that cannot be
        decoded, 413 for audio over the duration limit."""
        loop = asyncio.get_running_loop()
        try:
            audio = await loop.run_in_executor(self._decoders, _decode_upload, upload)
        except Exception as exc:  # any failure to decode is the upload's fault: a 400, never a 500
            name = upload.filename or "the upload"
            raise APIError(400, f"could not decode the audio file {name!r}: {exc}", param="file",
                           code="invalid_audio") from exc
        seconds = audio.shape[0] / SAMPLE_RATE
        if seconds > self.config.max_audio_seconds:
            raise APIError(413, f"the audio is {seconds:.1f} s long, over this server's limit of "
                           f"{self.config.max_audio_seconds:g} s", param="file", code="audio_too_long")
        return audio

    # ---- transcription

    def _submit(self, audio: np.ndarray, request: AudioRequest, on_segment=None) -> engine.Transcription:
        options = dict(request.options)
        if self.model.device.type == "cpu":
            options.setdefault("fp16", False)  # whisper computes in fp32 on the CPU anyway, with a warning each time
        try:
            return engine.submit(self.model, [audio], batch_size=self.config.batch_size, decoder=self.config.decoder,
                                 on_segment=on_segment, **options)
        except (ValueError, TypeError) as exc:  # options the engine refuses
            raise APIError(400, f"invalid transcription options: {exc}", code="invalid_options") from exc

    async def transcribe(self, audio: np.ndarray, request: AudioRequest,
                         disconnected: Callable[[], Awaitable[bool]]) -> dict:
        """The result dict of `audio` (what model.transcribe(audio, **request.options) returns)."""
        async for kind, item in self._run(audio, request, disconnected, stream=False):
            if kind == "result":
                return item
        raise APIError(500, "the transcription ended without a result", code="no_result", type=SERVER_ERROR)

    def stream(self, audio: np.ndarray, request: AudioRequest,
               disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[Tuple[str, object]]:
        """("segment", segment dict) as each segment is final, then ("result", result dict)."""
        return self._run(audio, request, disconnected, stream=True)

    async def _run(self, audio, request, disconnected, stream: bool):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item):
            loop.call_soon_threadsafe(queue.put_nowait, item)

        on_segment = (lambda index, segment: put(("segment", segment))) if stream else None
        transcription = self._submit(audio, request, on_segment)
        loop.run_in_executor(self._waiters, _pump, transcription, put)
        finished = False
        try:
            while True:
                try:
                    kind, item = await asyncio.wait_for(queue.get(), POLL_S)
                except asyncio.TimeoutError:
                    if await disconnected():
                        raise ClientDisconnected() from None
                    continue
                if kind == "segment":
                    yield kind, item
                elif kind == "result":
                    finished = True
                    yield kind, _result(item)
                    return
                else:  # "failed": the job's own failure
                    finished = True
                    raise _failure(item)
        finally:
            if not finished:
                transcription.cancel()

    def close(self) -> None:
        self._decoders.shutdown(wait=False, cancel_futures=True)
        self._waiters.shutdown(wait=False, cancel_futures=True)


def _pump(transcription: engine.Transcription, put: Callable[[tuple], None]) -> None:
    """On a waiter thread: hand the job's result (or failure) to the event loop."""
    try:
        for _, result in transcription.results():
            put(("result", result))
            return
        put(("failed", RuntimeError("the transcription was cancelled")))
    except BaseException as exc:  # the job's own failure, handed to its request
        put(("failed", exc))


def _result(result) -> dict:
    if isinstance(result, Exception):
        raise _failure(result)
    return result


def _failure(exc: BaseException) -> APIError:
    """A job's failure as the request's error: out of memory is a 503 (the server is overloaded), any other a 500."""
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return APIError(503, f"the server ran out of memory transcribing this request: {exc}", code="out_of_memory",
                        type=SERVER_ERROR)
    if isinstance(exc, ValueError):  # an audio the engine could not use
        return APIError(400, f"could not transcribe the audio: {exc}", param="file", code="invalid_audio")
    return APIError(500, f"the transcription failed: {type(exc).__name__}: {exc}", code="transcription_failed",
                    type=SERVER_ERROR)


def _decode_upload(upload: UploadFile) -> np.ndarray:
    """Copy the upload to a temporary file named with its extension (ffmpeg and libsndfile go by it) and decode."""
    suffix = os.path.splitext(upload.filename or "")[1].lower()
    if len(suffix) > 8 or not set(suffix[1:]) <= _SUFFIX_CHARS:
        suffix = ""
    upload.file.seek(0)
    with tempfile.NamedTemporaryFile(prefix="fastwhisper-serve-", suffix=suffix) as tmp:
        shutil.copyfileobj(upload.file, tmp)
        tmp.flush()
        return load_audio(tmp.name)
