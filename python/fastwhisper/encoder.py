"""FastAudioEncoder: a drop-in for ``whisper.model.AudioEncoder`` that runs through fastwhisper's ops."""

from typing import Dict, List, Tuple

import torch
from torch import Tensor
from whisper.model import AudioEncoder, Whisper

from . import ops

# Tensors that stay in their own dtype (the kernels read fp32 or the input's dtype): LayerNorm
# parameters and the positional embedding. Everything else is cast to the input's dtype, as
# openai-whisper's Linear and Conv1d do on every call.
_KEEP_DTYPE_SLOTS = {0, 1, 9, 10}


class FastAudioEncoder(AudioEncoder):
    """Same constructor, parameters and ``state_dict`` as ``whisper.model.AudioEncoder``.

    ``forward`` runs the whole encoder in one ``torch.ops.fastwhisper.encoder_forward`` call. The
    compute dtype is the input's dtype (float32 on CPU; float32, float16 or bfloat16 on CUDA); when
    the weights have another dtype (openai-whisper keeps fp32 weights and feeds fp16 mels on GPU),
    the cast weights are cached per dtype and refreshed when a parameter changes.
    """

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__(n_mels, n_ctx, n_state, n_head, n_layer)
        self._init_fast(n_mels, n_ctx, n_state, n_head)

    def _init_fast(self, n_mels: int, n_ctx: int, n_state: int, n_head: int) -> None:
        if n_state % n_head != 0:
            raise ValueError(f"n_state ({n_state}) must be divisible by n_head ({n_head})")
        self.n_mels, self.n_ctx, self.n_state, self.n_head = n_mels, n_ctx, n_state, n_head
        self._cast_cache: Dict[torch.dtype, Tuple[tuple, List[Tensor]]] = {}

    @classmethod
    def from_audio_encoder(cls, encoder: AudioEncoder) -> "FastAudioEncoder":
        """A FastAudioEncoder sharing ``encoder``'s parameters and buffers (no copies)."""
        if not isinstance(encoder, AudioEncoder):
            raise TypeError(f"expected a whisper.model.AudioEncoder, got {type(encoder).__name__}")
        if isinstance(encoder, FastAudioEncoder):
            return encoder
        fast = cls.__new__(cls)
        torch.nn.Module.__init__(fast)
        fast.conv1 = encoder.conv1
        fast.conv2 = encoder.conv2
        fast.register_buffer("positional_embedding", encoder.positional_embedding)
        fast.blocks = encoder.blocks
        fast.ln_post = encoder.ln_post
        fast.train(encoder.training)
        n_ctx, n_state = encoder.positional_embedding.shape
        n_head = encoder.blocks[0].attn.n_head if len(encoder.blocks) else 1
        fast._init_fast(encoder.conv1.in_channels, n_ctx, n_state, n_head)
        return fast

    # -- weights -----------------------------------------------------------------------------

    def _raw_weights(self) -> List[Tensor]:
        tensors = [
            self.conv1.weight,
            self.conv1.bias,
            self.conv2.weight,
            self.conv2.bias,
            self.positional_embedding,
        ]
        for block in self.blocks:
            tensors += [block.get_parameter(name) for name in ops.BLOCK_PARAM_NAMES]
        tensors += [self.ln_post.weight, self.ln_post.bias]
        return tensors

    @staticmethod
    def _keeps_dtype(index: int, n_tensors: int) -> bool:
        if index == 4 or index >= n_tensors - 2:  # positional embedding, ln_post
            return True
        return index >= 5 and (index - 5) % len(ops.BLOCK_PARAM_NAMES) in _KEEP_DTYPE_SLOTS

    def _cast_weights(self, raw: List[Tensor], dtype: torch.dtype) -> List[Tensor]:
        n = len(raw)
        return [
            t if (t.dtype == dtype or self._keeps_dtype(i, n)) else t.to(dtype) for i, t in enumerate(raw)
        ]

    def _weights_for(self, dtype: torch.dtype) -> List[Tensor]:
        raw = [t.detach() for t in self._raw_weights()]
        if (
            torch.compiler.is_compiling()
            or all(t.dtype == dtype for t in raw)
            or any(t.is_inference() for t in raw)  # inference tensors have no version counter: no cache
        ):
            return self._cast_weights(raw, dtype)
        signature = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in raw)
        cached = self._cast_cache.get(dtype)
        if cached is None or cached[0] != signature:
            cached = (signature, self._cast_weights(raw, dtype))
            self._cast_cache = {dtype: cached}  # one dtype at a time: bounded memory
        return cached[1]

    def _apply(self, fn, *args, **kwargs):  # .to() / .cuda() / .half(): drop cast copies
        self._cast_cache = {}
        return super()._apply(fn, *args, **kwargs)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """x: [batch, n_mels, 2 * n_ctx] log-mel spectrogram -> [batch, n_ctx, n_state]."""
        if not isinstance(x, Tensor):
            raise TypeError(f"FastAudioEncoder expects a torch.Tensor mel spectrogram, got {type(x).__name__}")
        expected = (self.n_mels, 2 * self.n_ctx)
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"incorrect audio shape: FastAudioEncoder expects a mel of shape [batch, {expected[0]}, "
                f"{expected[1]}], got {list(x.shape)}"
            )
        raw = self._raw_weights()
        weights = self._weights_for(x.dtype) if not torch.compiler.is_compiling() else self._cast_weights(raw, x.dtype)
        conv1_w, conv1_b, conv2_w, conv2_b, pos = weights[:5]
        return ops.encoder_forward(
            x, conv1_w, conv1_b, conv2_w, conv2_b, pos, weights[5:-2], weights[-2], weights[-1], self.n_head
        )


def accelerate(model: Whisper) -> Whisper:
    """Swap ``model.encoder`` for a FastAudioEncoder in place, sharing its weights, device and dtype.

    ``model.transcribe()`` and ``whisper.decode()`` then run the fast encoder with openai-whisper's
    own PyTorch decoder (hybrid mode). Returns the same model object.
    """
    if not isinstance(getattr(model, "encoder", None), AudioEncoder):
        raise TypeError(
            f"fastwhisper.accelerate expects an openai-whisper model (whisper.model.Whisper) with an "
            f"AudioEncoder at .encoder, got {type(model).__name__}"
        )
    model.encoder = FastAudioEncoder.from_audio_encoder(model.encoder)
    return model
