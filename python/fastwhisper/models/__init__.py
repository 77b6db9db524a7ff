"""Checkpoint formats: each module converts between its layout and openai-whisper's state_dict.

Every reader returns a `Checkpoint` (openai ModelDimensions, an openai-layout state_dict, and the
alignment heads when the format records them); every writer takes the same.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from whisper.model import ModelDimensions


@dataclass
class Checkpoint:
    dims: ModelDimensions
    state_dict: Dict[str, torch.Tensor]
    alignment_heads: Optional[List[Tuple[int, int]]] = None  # (text layer, head) pairs


def count_layers(state_dict: Dict[str, torch.Tensor], prefix: str) -> int:
    """Number of `<prefix><i>.` blocks in a state_dict (0, 1, ... contiguous)."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in state_dict):
        n += 1
    return n


def dims_from_state_dict(state_dict: Dict[str, torch.Tensor], n_audio_head: int, n_text_head: int) -> ModelDimensions:
    """ModelDimensions read off an openai-layout state_dict (head counts are not in the shapes)."""
    conv1 = state_dict["encoder.conv1.weight"]
    audio_pos = state_dict["encoder.positional_embedding"]
    text_pos = state_dict["decoder.positional_embedding"]
    return ModelDimensions(
        n_mels=conv1.shape[1],
        n_audio_ctx=audio_pos.shape[0],
        n_audio_state=audio_pos.shape[1],
        n_audio_head=n_audio_head,
        n_audio_layer=count_layers(state_dict, "encoder.blocks."),
        n_vocab=state_dict["decoder.token_embedding.weight"].shape[0],
        n_text_ctx=text_pos.shape[0],
        n_text_state=text_pos.shape[1],
        n_text_head=n_text_head,
        n_text_layer=count_layers(state_dict, "decoder.blocks."),
    )
