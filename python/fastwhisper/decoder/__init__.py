"""fastwhisper.decode: openai-whisper's decode with a choice of decoder.

decoder="torch": openai-whisper's own DecodingTask (PyTorch decoder) on fastwhisper's encoder output.
decoder="cpp":   the C++ decoding loop (fastwhisper.decoder.cpp) with a KV cache and cross-attention
                 K/V computed once per window; one DecoderSession per model is kept and reused.
Several audios with beam search or best-of-n sampling decode with "torch" too (openai-whisper's own
decode fails on them since 20240930, see _GroupedBatchTask).
"""

import functools
import inspect
import weakref
from dataclasses import replace
from typing import List, Union

import torch
import whisper
from whisper.decoding import DecodingOptions, DecodingResult, DecodingTask

DECODERS = ("torch", "cpp")


def check_decoder(decoder: str) -> None:
    """Raise a clear error for a decoder name fastwhisper does not provide."""
    if decoder not in DECODERS:
        raise ValueError(
            f"unknown decoder {decoder!r}: choose 'torch' (openai-whisper's decoder) or 'cpp' (the C++ loop)"
        )

_sessions: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _session_for(model):
    """The model's DecoderSession, rebuilt when its decoder weights moved (.to(), .half(), load)."""
    from .cpp import decoder_session

    weight = model.decoder.token_embedding.weight
    key = (weight.data_ptr(), weight.dtype, weight.device)
    cached = _sessions.get(model)
    if cached is None or cached[0] != key:
        cached = (key, decoder_session(model.decoder))
        _sessions[model] = cached
    return cached[1]


class _GroupedBatchTask(DecodingTask):
    """whisper's DecodingTask for several audios with beam search or best-of-n sampling (n_group > 1).

    openai-whisper >= 20240930 repeats the tokens n_group times per audio but no longer the audio features,
    so the cross-attention of several audios fails on mismatched batch sizes (one audio broadcasts). This
    repeats the features as the task's run() expects (it takes every n_group-th row back afterwards).
    """

    def _get_audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        return super()._get_audio_features(mel).repeat_interleave(self.n_group, dim=0)

    def _detect_language(self, audio_features: torch.Tensor, tokens: torch.Tensor):
        return super()._detect_language(audio_features[:: self.n_group], tokens)


@functools.lru_cache(maxsize=None)
def _whisper_repeats_features() -> bool:
    """Whether the installed whisper's DecodingTask.run repeats the audio features itself."""
    return "audio_features.repeat_interleave" in inspect.getsource(DecodingTask.run)


def decode(model, mel: torch.Tensor, options: DecodingOptions = DecodingOptions(), *, decoder: str = "torch",
           **kwargs) -> Union[DecodingResult, List[DecodingResult]]:
    """Decode log-mel segment(s) [n_mels, 3000] or [batch, n_mels, 3000], as `whisper.decode` does."""
    check_decoder(decoder)
    if kwargs:
        options = replace(options, **kwargs)
    if decoder == "cpp":
        from .cpp import decode_cpp

        return decode_cpp(model, mel, options, session=_session_for(model))
    n_group = options.beam_size or options.best_of or 1  # as DecodingTask counts it
    if mel.ndim == 3 and mel.shape[0] > 1 and n_group > 1 and not _whisper_repeats_features():
        with torch.no_grad():
            return _GroupedBatchTask(model, options).run(mel)
    return whisper.decoding.decode(model, mel, options)
