"""Voice activity detection with Silero VAD: where a waveform has speech, packed into chunks of at most 30 s.

    waveform = fastwhisper.load_audio("talk.flac")
    chunks = speech_chunks(waveform)     # [(start_sample, end_sample), ...]: speech, with short pauses kept
    windows = speech_windows(waveform)   # [[(start, end), ...], ...]: the chunks packed into 30-s windows

The Silero model is the TorchScript file the `silero-vad` package carries (silero_vad/data/silero_vad.jit),
loaded with torch.jit.load: no download, no hub, no torchaudio. Install it with `pip install fastwhisper[vad]`
(or `pip install --no-deps silero-vad`; it needs only torch). The model keeps a recurrent state between
its 32 ms windows, so one lock serialises its use across threads.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import List, Tuple, Union

import numpy as np
import torch

from ..errors import FastWhisperError
from .silero_steps import run_steps

__all__ = ["VADUnavailableError", "speech_windows", "speech_chunks", "speech_regions", "load_vad_model"]

SAMPLE_RATE = 16000
WINDOW = 512  # Silero's window at 16 kHz
WARMUP_WINDOWS = 32  # 1 s of audio read before each stream's own windows
MIN_STREAM_WINDOWS = 256  # about 8 s
MAX_STREAMS = 256
PADDING_S = 0.2  # silence kept on each side of a speech region, seconds
FRAME_SAMPLES = 160  # one mel frame (10 ms): chunk starts are aligned to it, so offsets are whole frames


class VADUnavailableError(FastWhisperError, ImportError):
    """vad=True without the silero-vad package installed."""


_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def load_vad_model(device: str = "cpu"):
    """The Silero VAD TorchScript model from the installed silero-vad package (loaded once per device)."""
    threads = torch.get_num_threads()
    try:
        # silero_vad's import calls torch.set_num_threads(1) for the whole process; it is undone below.
        from importlib import resources

        import silero_vad  # noqa: F401
        from silero_vad.utils_vad import get_speech_timestamps_from_probs  # noqa: F401
    except ImportError as exc:
        raise VADUnavailableError(
            "vad=True needs Silero VAD: pip install fastwhisper[vad] "
            "(or: pip install --no-deps silero-vad)") from exc
    finally:
        torch.set_num_threads(threads)
    path = resources.files("silero_vad.data").joinpath("silero_vad.jit")
    with resources.as_file(path) as file, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+ deprecates TorchScript; it still loads
        model = torch.jit.load(str(file), map_location=device)
    return model.eval()


def speech_probabilities(audio: torch.Tensor, device: Union[str, torch.device] = "cpu") -> List[float]:
    """Silero's speech probability of each 32 ms window (512 samples) of a 16 kHz waveform.

    The model is recurrent, so one pass over a long audio is thousands of tiny sequential calls. The audio is
    cut instead into up to MAX_STREAMS consecutive streams run as one batch in lock step; each stream first
    reads WARMUP_WINDOWS windows of the audio before it (zeros for the first), so that its state has settled
    when its own windows begin. On the CPU the pass runs on one thread of the caller (the OpenMP thread count
    is the calling thread's own): its operations are too small to gain from more, and several times slower.
    On a GPU the steps replay as CUDA graphs (see silero_steps).
    """
    model = load_vad_model(str(device))
    n_windows = -(-audio.numel() // WINDOW)
    length = max(MIN_STREAM_WINDOWS, -(-n_windows // MAX_STREAMS))
    n_streams = -(-n_windows // length)
    padded = torch.zeros((WARMUP_WINDOWS + n_streams * length) * WINDOW)
    padded[WARMUP_WINDOWS * WINDOW:WARMUP_WINDOWS * WINDOW + audio.numel()] = audio
    windows = padded.view(-1, WINDOW).to(device)
    steps = WARMUP_WINDOWS + length
    starts = torch.arange(n_streams, device=windows.device) * length
    threads = torch.get_num_threads()
    with _lock, torch.inference_mode():
        torch.set_num_threads(1)
        try:
            out = run_steps(model, windows, starts, steps)  # [n_streams, steps]
        finally:
            torch.set_num_threads(threads)
    return out[:, WARMUP_WINDOWS:].reshape(-1)[:n_windows].cpu().tolist()


def speech_regions(waveform: np.ndarray, *, threshold: float = 0.5, min_silence_s: float = 0.3,
                   min_speech_s: float = 0.25, padding_s: float = PADDING_S,
                   max_region_s: float = 30.0, device: Union[str, torch.device] = "cpu") -> List[Tuple[int, int]]:
    """Silero's speech regions of a 16 kHz mono waveform as (start_sample, end_sample), each padded by
    padding_s on both sides (not past the audio or into the next region) and at most max_region_s long.
    device: where the Silero model runs ("cpu", or "cuda" for long batches of audio)."""
    load_vad_model(str(device))  # raises VADUnavailableError without silero-vad
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    audio = torch.as_tensor(np.ascontiguousarray(waveform, dtype=np.float32))
    if audio.ndim != 1:
        raise ValueError(f"speech_regions takes a 1-D waveform, got shape {tuple(audio.shape)}")
    if audio.numel() == 0:
        return []
    pad = int(padding_s * SAMPLE_RATE)
    # Silero splits a region longer than this at its longest pause, so that padded regions still fit.
    longest = max(1.0, max_region_s - 2 * padding_s - 0.1)
    probs = speech_probabilities(audio, device)
    stamps = get_speech_timestamps_from_probs(
        probs, sampling_rate=SAMPLE_RATE, threshold=threshold,
        min_speech_duration_ms=int(min_speech_s * 1000), max_speech_duration_s=longest,
        min_silence_duration_ms=int(min_silence_s * 1000), speech_pad_ms=pad * 1000 // SAMPLE_RATE,
        audio_length_samples=audio.numel())
    total = audio.numel()
    regions = [(max(0, int(s["start"])), min(total, int(s["end"]))) for s in stamps]
    return [r for r in _split_long(regions, int(max_region_s * SAMPLE_RATE)) if r[1] > r[0]]


def _split_long(regions, limit: int):
    for start, end in regions:
        while end - start > limit:
            yield start, start + limit
            start += limit
        yield start, end


def speech_chunks(waveform: np.ndarray, max_seconds: float = 30.0, padding_s: float = PADDING_S,
                  max_gap_s: float = 1.0, **vad_options) -> List[Tuple[int, int]]:
    """Chunks of `waveform` (16 kHz mono float32) to transcribe, as (start_sample, end_sample), in order.

    Speech regions (see speech_regions; vad_options go there) padded by padding_s are packed greedily: the
    next region joins the current chunk when the pause between them is at most max_gap_s and the chunk
    stays within max_seconds; otherwise it starts a new chunk. So longer silences are left out of every
    chunk, and no chunk is longer than max_seconds (30 s, whisper's window). Starts are aligned down to a
    10 ms mel frame. An audio without speech gives [].
    """
    if not 0 < max_seconds <= 30:
        raise ValueError(f"max_seconds must be in (0, 30], got {max_seconds!r}")
    limit = int(max_seconds * SAMPLE_RATE)
    regions = speech_regions(waveform, padding_s=padding_s, max_region_s=max_seconds - 0.01, **vad_options)
    gap = int(max_gap_s * SAMPLE_RATE)
    chunks: List[Tuple[int, int]] = []
    for start, end in regions:
        start -= start % FRAME_SAMPLES
        if chunks and start - chunks[-1][1] <= gap and end - chunks[-1][0] <= limit:
            chunks[-1] = (chunks[-1][0], end)
        else:
            chunks.append((start, min(end, start + limit)))
    return chunks


def speech_windows(waveform: np.ndarray, max_seconds: float = 30.0, **chunk_options) -> List[List[Tuple[int, int]]]:
    """speech_chunks packed into windows to decode: each window is a list of chunks (start_sample, end_sample)
    whose audio, joined end to end with the silence between them left out, is at most max_seconds long.
    Consecutive chunks join the current window while it has room, so a window holds as much speech as
    whisper's 30-s window can (short utterances between long pauses would otherwise each take a window).
    chunk_options go to speech_chunks (padding_s, max_gap_s) and speech_regions. An audio without speech
    gives []."""
    limit = int(max_seconds * SAMPLE_RATE)
    windows: List[List[Tuple[int, int]]] = []
    filled = 0
    for start, end in speech_chunks(waveform, max_seconds=max_seconds, **chunk_options):
        if windows and filled + (end - start) <= limit:
            windows[-1].append((start, end))
            filled += end - start
        else:
            windows.append([(start, end)])
            filled = end - start
    return windows
