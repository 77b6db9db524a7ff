"""fastwhisper.decode: openai-whisper's decode with a choice of decoder."""

from typing import List, Union

import torch
import whisper
from whisper.decoding import DecodingOptions, DecodingResult

from .model import check_decoder


def decode(model, mel: torch.Tensor, options: DecodingOptions = DecodingOptions(), *, decoder: str = "torch",
           **kwargs) -> Union[DecodingResult, List[DecodingResult]]:
    """Decode log-mel segment(s) [n_mels, 3000] or [batch, n_mels, 3000], as `whisper.decode` does."""
    check_decoder(decoder)
    return whisper.decoding.decode(model, mel, options, **kwargs)
