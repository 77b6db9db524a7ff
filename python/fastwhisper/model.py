"""FastWhisper: openai-whisper's Whisper model with the fast encoder and `decoder=` on transcribe/decode."""

from typing import Optional

import torch
from whisper.decoding import DecodingOptions
from whisper.model import Whisper

from .encoder import FastAudioEncoder

class FastWhisper(Whisper):
    """A `whisper.model.Whisper` whose encoder is a FastAudioEncoder.

    `transcribe` and `decode` take everything openai-whisper's do, plus `decoder=`: "torch" (the
    stock PyTorch decoder on fastwhisper's encoder output) or "cpp" (the C++ decoding loop).
    `transcribe_batch` transcribes several audios together (fastwhisper.batch_transcribe).
    """

    def __init__(self, dims):
        super().__init__(dims)
        self.encoder = FastAudioEncoder.from_audio_encoder(self.encoder)

    def transcribe(self, audio, *, decoder: str = "torch", batch_size: int = 1, **options):
        from .engine.single import transcribe

        return transcribe(self, audio, decoder=decoder, batch_size=batch_size, **options)

    def transcribe_batch(self, audios, *, batch_size: int = 8, decoder: str = "torch", **options):
        from .engine.batch import transcribe_batch

        return transcribe_batch(self, audios, batch_size=batch_size, decoder=decoder, **options)

    def decode(self, mel: torch.Tensor, options: Optional[DecodingOptions] = None, *, decoder: str = "torch", **kw):
        from .decoder import decode

        return decode(self, mel, options if options is not None else DecodingOptions(), decoder=decoder, **kw)
