"""FastWhisper: openai-whisper's Whisper model with the fast encoder, run by fastwhisper's engine."""

from typing import Optional

import torch
from whisper.decoding import DecodingOptions
from whisper.model import Whisper

from . import engine
from .encoder import FastAudioEncoder


class FastWhisper(Whisper):
    """A `whisper.model.Whisper` whose encoder is a FastAudioEncoder.

    `transcribe` and `decode` take everything openai-whisper's do, plus `decoder=`: "torch" (the stock
    PyTorch decoder on fastwhisper's encoder output) or "cpp" (the C++ decoding loop). `transcribe_batch`
    transcribes several audios together. All three run on the model's engine thread, so several threads
    may call them on one model at once.
    """

    def __init__(self, dims):
        super().__init__(dims)
        self.encoder = FastAudioEncoder.from_audio_encoder(self.encoder)

    def transcribe(self, audio, *, decoder: str = "torch", batch_size: int = 1, **options):
        return engine.transcribe(self, audio, decoder=decoder, batch_size=batch_size, **options)

    def transcribe_batch(self, audios, *, batch_size: int = 8, decoder: str = "torch", **options):
        return engine.transcribe_batch(self, audios, batch_size=batch_size, decoder=decoder, **options)

    def decode(self, mel: torch.Tensor, options: Optional[DecodingOptions] = None, *, decoder: str = "torch", **kw):
        return engine.decode(self, mel, options if options is not None else DecodingOptions(), decoder=decoder, **kw)
