"""The weight layouts of ``encoder_forward`` and ``DecoderSession``, read from the C++ extension.

Each layout is defined once, in C++ (csrc/encoder/layout.h, csrc/decoder/layout.h), and exported by
``fastwhisper._C.weight_layouts()``: the tensors' state_dict names in the order the op or class takes them
(relative to ``blocks.<i>.`` inside a block), and each one's role. Code looks a tensor up by name, never by
its position.
"""

from dataclasses import dataclass
from typing import Dict, Tuple

from .. import _library


@dataclass(frozen=True)
class WeightLayout:
    """An ordered list of tensors: their names and roles ("weight": used in the compute dtype; "layer_norm"
    and "positional": kept in their own dtype, float32 or the compute dtype)."""

    names: Tuple[str, ...]
    roles: Tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The position of the tensor called `name` (ValueError when the layout has none)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no tensor {name!r} in this layout ({', '.join(self.names)})") from None

    def keeps_dtype(self, name: str) -> bool:
        """Whether the tensor stays in its own dtype rather than being cast to the compute dtype."""
        return self.roles[self.index(name)] != "weight"


def _read_layouts() -> Dict[str, WeightLayout]:
    return {
        key: WeightLayout(tuple(name for name, _ in entries), tuple(role for _, role in entries))
        for key, entries in _library._C.weight_layouts().items()
    }


_LAYOUTS = _read_layouts()

# encoder_forward: the tensors before block_weights (its first arguments), one block of block_weights, the
# tensors after it, and one layer of packed_qkv.
ENCODER_BEFORE_BLOCKS = _LAYOUTS["encoder.before_blocks"]
ENCODER_BLOCK = _LAYOUTS["encoder.block"]
ENCODER_AFTER_BLOCKS = _LAYOUTS["encoder.after_blocks"]
ENCODER_PACKED_QKV = _LAYOUTS["encoder.block.packed_qkv"]
# DecoderSession's weight list: DECODER_BEFORE_BLOCKS, DECODER_BLOCK per layer, DECODER_AFTER_BLOCKS.
DECODER_BEFORE_BLOCKS = _LAYOUTS["decoder.before_blocks"]
DECODER_BLOCK = _LAYOUTS["decoder.block"]
DECODER_AFTER_BLOCKS = _LAYOUTS["decoder.after_blocks"]
