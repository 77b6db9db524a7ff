"""fastwhisper.decode: openai-whisper's decode with a choice of decoder.

decoder="torch": openai-whisper's own DecodingTask (PyTorch decoder) on fastwhisper's encoder output.
decoder="cpp":   the C++ decoding loop (fastwhisper.cpp_decoding) with a KV cache and cross-attention
                 K/V computed once per window; one DecoderSession per model is kept and reused.
"""

import weakref
from typing import List, Union

import torch
import whisper
from whisper.decoding import DecodingOptions, DecodingResult

from .model import check_decoder

_sessions: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _session_for(model):
    """The model's DecoderSession, rebuilt when its decoder weights moved (.to(), .half(), load)."""
    from .cpp_decoding import decoder_session

    weight = model.decoder.token_embedding.weight
    key = (weight.data_ptr(), weight.dtype, weight.device)
    cached = _sessions.get(model)
    if cached is None or cached[0] != key:
        cached = (key, decoder_session(model.decoder))
        _sessions[model] = cached
    return cached[1]


def decode(model, mel: torch.Tensor, options: DecodingOptions = DecodingOptions(), *, decoder: str = "torch",
           **kwargs) -> Union[DecodingResult, List[DecodingResult]]:
    """Decode log-mel segment(s) [n_mels, 3000] or [batch, n_mels, 3000], as `whisper.decode` does."""
    check_decoder(decoder)
    if decoder == "cpp":
        from .cpp_decoding import decode_cpp

        if kwargs:
            options = options.__class__(**{**options.__dict__, **kwargs})
        return decode_cpp(model, mel, options, session=_session_for(model))
    return whisper.decoding.decode(model, mel, options, **kwargs)
