"""The decoder's weights as DecoderSession takes them: names, order, and the session built from them."""

from typing import List

import torch
from torch import Tensor
from whisper.model import TextDecoder

from .. import _library  # noqa: F401  (registers torch.classes.fastwhisper)
from ..ops import MLP_PARAM_NAMES, attention_param_names, layer_norm_param_names

# Names of the tensors of one decoder block, in DecoderSession's weight-list order
# (keys relative to ``blocks.<i>.`` in whisper.model.TextDecoder's state_dict).
DECODER_BLOCK_PARAM_NAMES = (
    layer_norm_param_names("attn_ln") + attention_param_names("attn")
    + layer_norm_param_names("cross_attn_ln") + attention_param_names("cross_attn")
    + layer_norm_param_names("mlp_ln") + MLP_PARAM_NAMES
)


def decoder_weights(decoder: TextDecoder) -> List[Tensor]:
    """The TextDecoder's own tensors (detached views, same storage) in DecoderSession order:
    token_embedding.weight, positional_embedding, DECODER_BLOCK_PARAM_NAMES per block, ln.weight, ln.bias."""
    if not isinstance(decoder, TextDecoder):
        raise TypeError(f"expected a whisper.model.TextDecoder, got {type(decoder).__name__}")
    params = dict(decoder.named_parameters())
    names = ["token_embedding.weight", "positional_embedding"]
    names += [f"blocks.{i}.{n}" for i in range(len(decoder.blocks)) for n in DECODER_BLOCK_PARAM_NAMES]
    names += ["ln.weight", "ln.bias"]
    return [params[n].detach() for n in names]


def decoder_session(decoder: TextDecoder):
    """A torch.classes.fastwhisper.DecoderSession holding ``decoder``'s weights by reference (no copies)."""
    weights = decoder_weights(decoder)
    n_head = decoder.blocks[0].attn.n_head if len(decoder.blocks) else 1
    n_text_ctx = decoder.positional_embedding.shape[0]
    return torch.classes.fastwhisper.DecoderSession(weights, n_head, n_text_ctx)
