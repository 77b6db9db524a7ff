"""Decoding audio windows: openai-whisper's decode with a choice of decoder.

decoder="torch": openai-whisper's own DecodingTask (PyTorch decoder) on fastwhisper's encoder output.
decoder="cpp":   the C++ decoding loop (decoder/cpp.py) with a KV cache and cross-attention K/V computed once
                 per window; one DecoderSession per model is kept and reused.
These functions run on the caller's thread: the engine (fastwhisper.engine.decode, model.decode) calls them
on the model's scheduler thread.
"""

import threading
import weakref
from dataclasses import replace
from typing import List, Union

import torch
from whisper.decoding import DecodingOptions, DecodingResult

from ..compat import torch_decode

DECODERS = ("torch", "cpp")

_sessions: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_interrupted: "weakref.WeakSet" = weakref.WeakSet()  # models with an interrupt request standing
_lock = threading.Lock()  # the two above, so a request made while a session is being built reaches it


def check_decoder(decoder: str) -> None:
    """Raise a clear error for a decoder name fastwhisper does not provide."""
    if decoder not in DECODERS:
        raise ValueError(
            f"unknown decoder {decoder!r}: choose 'torch' (openai-whisper's decoder) or 'cpp' (the C++ loop)"
        )


def _session_for(model):
    """The model's DecoderSession, rebuilt when its decoder weights moved (.to(), .half(), load)."""
    from .weights import decoder_session

    weight = model.decoder.token_embedding.weight
    key = (weight.data_ptr(), weight.dtype, weight.device)
    with _lock:
        cached = _sessions.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    session = decoder_session(model.decoder)  # built outside the lock: an interrupt request never waits for it
    with _lock:
        _sessions[model] = (key, session)
        if model in _interrupted:
            session.interrupt()
    return session


def interrupt(model) -> None:
    """Make a decoder="cpp" decode of this model, running on another thread, stop before its next token step;
    that decode raises. The request stands until clear_interrupt(model), also for a session not built yet (a
    round still in its encoder). (The torch decoder is openai-whisper's own loop and is not interrupted: its
    window finishes first.)"""
    with _lock:
        _interrupted.add(model)
        cached = _sessions.get(model)
        if cached is not None:
            cached[1].interrupt()


def clear_interrupt(model) -> None:
    with _lock:
        _interrupted.discard(model)
        cached = _sessions.get(model)
        if cached is not None:
            cached[1].clear_interrupt()


def decode(model, mel: torch.Tensor, options: DecodingOptions = DecodingOptions(), *, decoder: str = "torch",
           **kwargs) -> Union[DecodingResult, List[DecodingResult]]:
    """Decode log-mel segment(s) [n_mels, 3000] or [batch, n_mels, 3000], as `whisper.decode` does."""
    check_decoder(decoder)
    if kwargs:
        options = replace(options, **kwargs)
    if decoder == "cpp":
        from .cpp import decode_cpp

        return decode_cpp(model, mel, options, session=_session_for(model))
    return torch_decode(model, mel, options)
