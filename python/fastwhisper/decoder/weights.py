"""The decoder's weights as DecoderSession takes them: names, order, and the session built from them.

The order is the C++ layout (csrc/decoder/layout.h, read through fastwhisper.ops.layouts):
DECODER_BEFORE_BLOCKS, DECODER_BLOCK per block, DECODER_AFTER_BLOCKS."""

from typing import List

import torch
from torch import Tensor
from whisper.model import TextDecoder

from .. import _library  # noqa: F401  (registers torch.classes.fastwhisper)
from ..ops import DECODER_AFTER_BLOCKS, DECODER_BEFORE_BLOCKS, DECODER_BLOCK

# Names of the tensors of one decoder block, in DecoderSession's weight-list order
# (keys relative to ``blocks.<i>.`` in whisper.model.TextDecoder's state_dict).
DECODER_BLOCK_PARAM_NAMES = DECODER_BLOCK.names


def decoder_weight_names(n_layer: int) -> List[str]:
    """state_dict names of DecoderSession's weight list for a decoder of n_layer blocks, in its order."""
    names = list(DECODER_BEFORE_BLOCKS.names)
    names += [f"blocks.{i}.{n}" for i in range(n_layer) for n in DECODER_BLOCK.names]
    return names + list(DECODER_AFTER_BLOCKS.names)


def decoder_weights(decoder: TextDecoder) -> List[Tensor]:
    """The TextDecoder's own tensors (detached views, same storage) in DecoderSession order
    (decoder_weight_names)."""
    if not isinstance(decoder, TextDecoder):
        raise TypeError(f"expected a whisper.model.TextDecoder, got {type(decoder).__name__}")
    tensors = dict(decoder.named_parameters())
    tensors.update(decoder.named_buffers())
    return [tensors[n].detach() for n in decoder_weight_names(len(decoder.blocks))]


def decoder_session(decoder: TextDecoder):
    """A torch.classes.fastwhisper.DecoderSession holding ``decoder``'s weights by reference (no copies)."""
    weights = decoder_weights(decoder)
    n_head = decoder.blocks[0].attn.n_head if len(decoder.blocks) else 1
    n_text_ctx = decoder.positional_embedding.shape[0]
    return torch.classes.fastwhisper.DecoderSession(weights, n_head, n_text_ctx)
