"""FastAudioEncoder: a drop-in for ``whisper.model.AudioEncoder`` that runs through fastwhisper's ops."""

import os
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor
from whisper.model import AudioEncoder, Whisper

from .. import ops
from .graphs import EncoderGraphs

# Tensors that stay in their own dtype (the kernels read fp32 or the input's dtype): LayerNorm
# parameters and the positional embedding. Everything else is cast to the input's dtype, as
# openai-whisper's Linear and Conv1d do on every call.
_KEEP_DTYPE_SLOTS = {0, 1, 9, 10}

# FASTWHISPER_ENCODER_GRAPHS=0 turns off the CUDA-graph replay of the encoder (read on every call).
GRAPHS_ENV = "FASTWHISPER_ENCODER_GRAPHS"
# FASTWHISPER_ENCODER_PACKED_QKV=0: three query/key/value GEMMs per layer on CUDA instead of one over
# packed weights (read when the weights are prepared: on the first call and after a parameter changes).
PACKED_QKV_ENV = "FASTWHISPER_ENCODER_PACKED_QKV"
# Captured graphs kept per encoder (one per batch size / dtype / device); the oldest goes first.
MAX_GRAPHS = 8


class FastAudioEncoder(AudioEncoder):
    """Same constructor, parameters and ``state_dict`` as ``whisper.model.AudioEncoder``.

    ``forward`` runs the whole encoder in one ``torch.ops.fastwhisper.encoder_forward`` call. The
    compute dtype is the input's dtype (float32 on CPU; float32, float16 or bfloat16 on CUDA); when
    the weights have another dtype (openai-whisper keeps fp32 weights and feeds fp16 mels on GPU),
    the cast weights are cached per dtype and refreshed when a parameter changes.

    On CUDA the call is captured once per (batch, n_frames, dtype, device) as a CUDA graph and replayed
    (encoder_graphs.py); the result is always a fresh tensor. Graphs are not used under
    ``torch.compile``, when autograd would record the call (grad enabled and a parameter requiring grad),
    or with ``FASTWHISPER_ENCODER_GRAPHS=0``. On CUDA each block's query, key and value weights are also
    kept packed in one [3 * n_state, n_state] tensor (built once, with the casts), so the attention's input
    projection is one GEMM: for weights already in the compute dtype that copy costs 3 * n_state**2
    elements per layer (``FASTWHISPER_ENCODER_PACKED_QKV=0``: no copy, three GEMMs). A changed parameter
    (in place or reassigned) is picked up: the graph is captured again. Replacing a submodule
    (``enc.blocks[3] = ...``) after the first call is not: build a new encoder instead. Graph replays
    must not run from several threads at once.
    """

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__(n_mels, n_ctx, n_state, n_head, n_layer)
        self._init_fast(n_mels, n_ctx, n_state, n_head)

    def _init_fast(self, n_mels: int, n_ctx: int, n_state: int, n_head: int) -> None:
        if n_state % n_head != 0:
            raise ValueError(f"n_state ({n_state}) must be divisible by n_head ({n_head})")
        self.n_mels, self.n_ctx, self.n_state, self.n_head = n_mels, n_ctx, n_state, n_head
        self._reset_runtime_state()

    def _reset_runtime_state(self) -> None:
        self._cast_cache: Dict[torch.dtype, Tuple[tuple, List[Tensor]]] = {}
        self._weight_slots: Optional[List[Tuple[dict, str]]] = None
        self._graphs = EncoderGraphs(MAX_GRAPHS)

    def __getstate__(self):  # copy.deepcopy / pickle: weights yes, caches and CUDA graphs no
        state = self.__dict__.copy()
        for name in ("_cast_cache", "_weight_slots", "_graphs"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._reset_runtime_state()

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

    def _weight_names(self) -> List[str]:
        """state_dict names of encoder_forward's tensors, in its argument order."""
        names = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "positional_embedding"]
        for i in range(len(self.blocks)):
            names += [f"blocks.{i}.{name}" for name in ops.BLOCK_PARAM_NAMES]
        return names + ["ln_post.weight", "ln_post.bias"]

    def _raw_weights(self) -> List[Tensor]:
        if torch.compiler.is_compiling():  # traced once: plain attribute lookups
            return [self.get_buffer(n) if n == "positional_embedding" else self.get_parameter(n)
                    for n in self._weight_names()]
        # eager: ~500 tensors per call for large models, read straight from their modules' dicts (get_parameter
        # costs milliseconds there); reassigned parameters are seen, replaced submodules are not
        if self._weight_slots is None:
            slots = []
            for name in self._weight_names():
                module_name, _, leaf = name.rpartition(".")
                module = self.get_submodule(module_name) if module_name else self
                slots.append((module._parameters if leaf in module._parameters else module._buffers, leaf))
            self._weight_slots = slots
        return [store[leaf] for store, leaf in self._weight_slots]

    @staticmethod
    def _keeps_dtype(index: int, n_tensors: int) -> bool:
        if index == 4 or index >= n_tensors - 2:  # positional embedding, ln_post
            return True
        return index >= 5 and (index - 5) % len(ops.BLOCK_PARAM_NAMES) in _KEEP_DTYPE_SLOTS

    def _needs_cast(self, raw: List[Tensor], dtype: torch.dtype) -> bool:
        n = len(raw)
        return any(t.dtype != dtype and not self._keeps_dtype(i, n) for i, t in enumerate(raw))

    def _cast_one(self, raw: List[Tensor], i: int, dtype: torch.dtype) -> Tensor:
        t = raw[i]
        return t if (t.dtype == dtype or self._keeps_dtype(i, len(raw))) else t.to(dtype)

    def _cast_weights(self, raw: List[Tensor], dtype: torch.dtype) -> List[Tensor]:
        return [self._cast_one(raw, i, dtype) for i in range(len(raw))]

    def _packed_weights(self, raw: List[Tensor], dtype: torch.dtype) -> List[Tensor]:
        """encoder_forward's tensors in `dtype` followed by packed_qkv (2 per layer). Query/key/value
        tensors that needed a cast are views of the packed ones, so they are not cast twice."""
        packed = ops.pack_qkv(raw[5:-2], dtype)
        n_block = len(ops.BLOCK_PARAM_NAMES)
        n_state = raw[4].shape[1]
        slices = {"attn.query.weight": (0, 0), "attn.key.weight": (0, 1), "attn.value.weight": (0, 2),
                  "attn.query.bias": (1, 0), "attn.value.bias": (1, 2)}  # name -> (weight 0 / bias 1, third)
        by_slot = {ops.BLOCK_PARAM_NAMES.index(name): where for name, where in slices.items()}
        weights = []
        for i, t in enumerate(raw):
            where = by_slot.get((i - 5) % n_block) if 5 <= i < len(raw) - 2 else None
            if where is not None and t.dtype != dtype:
                layer = (i - 5) // n_block
                weights.append(packed[2 * layer + where[0]][where[1] * n_state:(where[1] + 1) * n_state])
            else:
                weights.append(self._cast_one(raw, i, dtype))
        return weights + packed

    def _packs_qkv(self, raw: List[Tensor]) -> bool:
        return raw[0].is_cuda and len(raw) > 7 and os.environ.get(PACKED_QKV_ENV, "1").strip() != "0"

    def _weights_for(self, dtype: torch.dtype) -> Tuple[List[Tensor], bool]:
        """The weights in `dtype` (cast where needed; on CUDA followed by the packed query/key/value
        tensors, see _split) and whether they are stable: the same tensors come back on the next call
        unless a parameter changes (False: fresh casts on every call, nothing packed)."""
        raw = [t.detach() for t in self._raw_weights()]
        # inference tensors have no version counter: no cache, so nothing packed either
        uncached = torch.compiler.is_compiling() or any(t.is_inference() for t in raw)
        packs = not uncached and self._packs_qkv(raw)
        if not packs and not self._needs_cast(raw, dtype):
            return raw, True
        if uncached:
            return self._cast_weights(raw, dtype), False
        signature = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in raw) + (packs,)
        cached = self._cast_cache.get(dtype)
        if cached is None or cached[0] != signature:
            self._cast_cache = {}  # free the old copies before making new ones
            prepared = self._packed_weights(raw, dtype) if packs else self._cast_weights(raw, dtype)
            cached = (signature, prepared)
            self._cast_cache = {dtype: cached}  # one dtype at a time: bounded memory
        return cached[1], True

    def _split(self, weights: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """(encoder_forward's tensors, packed_qkv) of a _weights_for list."""
        n = 7 + len(ops.BLOCK_PARAM_NAMES) * len(self.blocks)
        return weights[:n], weights[n:]

    def _apply(self, fn, *args, **kwargs):  # .to() / .cuda() / .half(): drop cast copies and graphs
        self._reset_runtime_state()
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
        if torch.compiler.is_compiling():
            return self._encode(x, self._cast_weights(self._raw_weights(), x.dtype))
        out = self._graph_forward(x) if x.is_cuda else None
        return out if out is not None else self._encode(x, self._weights_for(x.dtype)[0])

    def _encode(self, x: Tensor, weights: List[Tensor]) -> Tensor:
        weights, packed = self._split(weights)
        conv1_w, conv1_b, conv2_w, conv2_b, pos = weights[:5]
        return ops.encoder_forward(
            x, conv1_w, conv1_b, conv2_w, conv2_b, pos, weights[5:-2], weights[-2], weights[-1], self.n_head, packed
        )

    def _graph_forward(self, x: Tensor) -> Optional[Tensor]:
        """The encoding through a CUDA graph, or None: run eagerly (graphs off, autograd recording,
        weights recast on every call because they are inference tensors, or capturing failed)."""
        if x.requires_grad or self._graphs.capture_failed is not None:
            return None
        if os.environ.get(GRAPHS_ENV, "1").strip() == "0":
            return None
        raw = self._raw_weights()
        if torch.is_grad_enabled() and any(t.requires_grad for t in raw):
            return None
        try:
            signature = tuple((t.data_ptr(), t._version) for t in raw)
        except RuntimeError:  # inference tensors have no version counter: fine only when nothing is cast
            if self._needs_cast(raw, x.dtype):
                return None
            signature = tuple(t.data_ptr() for t in raw)
        if not self._graphs.has(x, signature):
            weights, stable = self._weights_for(x.dtype)
            if not stable or not self._graphs.capture(x, signature, weights, self._encode):
                if self._graphs.capture_failed is not None:
                    warnings.warn(
                        f"fastwhisper: capturing the encoder as a CUDA graph failed ({self._graphs.capture_failed});"
                        f" it runs eagerly from now on (set {GRAPHS_ENV}=0 to skip the attempt)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                return None
        return self._graphs.replay(x)


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
