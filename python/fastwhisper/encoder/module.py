"""FastAudioEncoder: a drop-in for ``whisper.model.AudioEncoder`` that runs through fastwhisper's ops."""

import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor
from whisper.model import AudioEncoder, Whisper

from .. import ops
from .graphs import EncoderGraphs

# Captured graphs kept per encoder (one per batch size / dtype / device); the oldest goes first. The engine's
# encoder calls take powers of two up to its batch size: 8 graphs hold every size up to 128 windows.
MAX_GRAPHS = 8


class FastAudioEncoder(AudioEncoder):
    """Same constructor, parameters and ``state_dict`` as ``whisper.model.AudioEncoder``.

    ``forward`` runs the whole encoder in one ``torch.ops.fastwhisper.encoder_forward`` call. The
    compute dtype is the input's dtype (float32 on CPU; float32, float16 or bfloat16 on CUDA); when
    the weights have another dtype (openai-whisper keeps fp32 weights and feeds fp16 mels on GPU),
    the cast weights are cached per dtype and refreshed when a parameter changes.

    On CUDA the call is captured once per (batch, n_frames, dtype, device) as a CUDA graph and replayed
    (graphs.py); the result is always a fresh tensor. Graphs are not used under ``torch.compile``, when
    autograd would record the call (grad enabled and a parameter requiring grad), or with
    ``cuda_graphs = False`` (an attribute of the encoder; True by default). On CUDA each block's query, key
    and value weights are also kept packed in one [3 * n_state, n_state] tensor (built once, with the
    casts), so the attention's input projection is one GEMM: for weights already in the compute dtype that
    copy costs 3 * n_state**2 elements per layer. A changed parameter
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
        self.cuda_graphs = True  # capture and replay CUDA graphs on CUDA (False: every call runs eagerly)
        self._reset_runtime_state()

    def _reset_runtime_state(self) -> None:
        self._cast_cache: Dict[torch.dtype, Tuple[tuple, List[Tensor]]] = {}
        self._weight_slots: Optional[List[Tuple[dict, str]]] = None
        # per tensor of _weight_names: stays in its own dtype (see _keeps_dtype)
        layouts = [ops.ENCODER_BEFORE_BLOCKS] + [ops.ENCODER_BLOCK] * len(self.blocks) + [ops.ENCODER_AFTER_BLOCKS]
        self._kept_dtype = [role != "weight" for layout in layouts for role in layout.roles]
        self._graphs = EncoderGraphs(MAX_GRAPHS)

    def __getstate__(self):  # copy.deepcopy / pickle: weights yes, caches and CUDA graphs no
        state = self.__dict__.copy()
        for name in ("_cast_cache", "_weight_slots", "_kept_dtype", "_graphs"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("cuda_graphs", True)
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
        """state_dict names of encoder_forward's tensors, in its argument order (the C++ layouts)."""
        names = list(ops.ENCODER_BEFORE_BLOCKS.names)
        for i in range(len(self.blocks)):
            names += [f"blocks.{i}.{name}" for name in ops.ENCODER_BLOCK.names]
        return names + list(ops.ENCODER_AFTER_BLOCKS.names)

    def _keeps_dtype(self, index: int) -> bool:
        """Whether tensor `index` of _weight_names stays in its own dtype (LayerNorm parameters and the
        positional embedding: the kernels read float32 or the input's dtype); everything else is cast to the
        input's dtype, as openai-whisper's Linear and Conv1d do on every call."""
        return self._kept_dtype[index]

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

    def _needs_cast(self, raw: List[Tensor], dtype: torch.dtype) -> bool:
        return any(t.dtype != dtype and not self._keeps_dtype(i) for i, t in enumerate(raw))

    def _cast_one(self, raw: List[Tensor], i: int, dtype: torch.dtype) -> Tensor:
        t = raw[i]
        return t if (t.dtype == dtype or self._keeps_dtype(i)) else t.to(dtype)

    def _cast_weights(self, raw: List[Tensor], dtype: torch.dtype) -> List[Tensor]:
        return [self._cast_one(raw, i, dtype) for i in range(len(raw))]

    def _packed_weights(self, raw: List[Tensor], dtype: torch.dtype) -> List[Tensor]:
        """encoder_forward's tensors in `dtype` followed by packed_qkv (2 per layer). Query/key/value
        tensors that needed a cast are views of the packed ones, so they are not cast twice."""
        first, n_block = len(ops.ENCODER_BEFORE_BLOCKS), len(ops.ENCODER_BLOCK)
        n_layer = len(self.blocks)
        packed = ops.pack_qkv(raw[first:first + n_layer * n_block], dtype)
        n_packed = len(ops.ENCODER_PACKED_QKV)
        # block tensor -> (packed tensor, which third of it)
        slices = {"attn.query.weight": ("attn.qkv.weight", 0), "attn.key.weight": ("attn.qkv.weight", 1),
                  "attn.value.weight": ("attn.qkv.weight", 2), "attn.query.bias": ("attn.qkv.bias", 0),
                  "attn.value.bias": ("attn.qkv.bias", 2)}
        weights = [self._cast_one(raw, i, dtype) for i in range(len(raw))]
        for layer in range(n_layer):
            for name, (packed_name, third) in slices.items():
                i = first + layer * n_block + ops.ENCODER_BLOCK.index(name)
                if raw[i].dtype != dtype:  # a view of the packed copy instead of a second cast
                    whole = packed[layer * n_packed + ops.ENCODER_PACKED_QKV.index(packed_name)]
                    weights[i] = whole[third * self.n_state:(third + 1) * self.n_state]
        return weights + packed

    def _packs_qkv(self, raw: List[Tensor]) -> bool:
        return raw[0].is_cuda and len(self.blocks) > 0

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
        n = len(ops.ENCODER_BEFORE_BLOCKS) + len(ops.ENCODER_BLOCK) * len(self.blocks) + len(ops.ENCODER_AFTER_BLOCKS)
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
        first, last = len(ops.ENCODER_BEFORE_BLOCKS), len(weights) - len(ops.ENCODER_AFTER_BLOCKS)
        # encoder_forward's arguments before and after block_weights are these layouts' tensors, in order
        return ops.encoder_forward(x, *weights[:first], weights[first:last], *weights[last:], self.n_head, packed)

    def _graph_forward(self, x: Tensor) -> Optional[Tensor]:
        """The encoding through a CUDA graph, or None: run eagerly (graphs off, autograd recording,
        weights recast on every call because they are inference tensors, or capturing failed)."""
        if x.requires_grad or self._graphs.capture_failed is not None:
            return None
        if not self.cuda_graphs:
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
                        " it runs eagerly from now on (set the encoder's cuda_graphs = False to skip the attempt)",
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
