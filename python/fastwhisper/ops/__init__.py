"""Python entry points and fake (meta) implementations of the ``torch.ops.fastwhisper`` ops.

The schemas live in csrc/module.cpp; the CPU and CUDA kernels in csrc/ops/cpu and csrc/ops/cuda. The fakes
here give torch.compile and ``torch.library.opcheck`` the output shape and dtype of each op. The weight
layouts (which tensors encoder_forward and DecoderSession take, in which order) come from the C++ side
(layouts.py).
"""

from typing import List, Optional

import torch
from torch import Tensor

from .. import _library  # noqa: F401  (registers the ops)
from .layouts import (  # noqa: F401  (re-exported)
    DECODER_AFTER_BLOCKS,
    DECODER_BEFORE_BLOCKS,
    DECODER_BLOCK,
    ENCODER_AFTER_BLOCKS,
    ENCODER_BEFORE_BLOCKS,
    ENCODER_BLOCK,
    ENCODER_PACKED_QKV,
    WeightLayout,
)

_ops = torch.ops.fastwhisper

# One encoder block, in encoder_forward's block_weights order.
BLOCK_PARAM_NAMES = ENCODER_BLOCK.names


def conv_stem(
    mel: Tensor,
    conv1_weight: Tensor,
    conv1_bias: Tensor,
    conv2_weight: Tensor,
    conv2_bias: Tensor,
    positional_embedding: Tensor,
) -> Tensor:
    """mel [B, n_mels, T] -> gelu(conv2(gelu(conv1(mel)))) as [B, ceil(T/2), d] + positional_embedding."""
    return _ops.conv_stem(mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias, positional_embedding)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dim with fp32 statistics; output in x's dtype."""
    return _ops.layer_norm(x, weight, bias, eps)


def linear(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    residual: Optional[Tensor] = None,
    gelu: bool = False,
) -> Tensor:
    """(GELU)(x @ weight.T + bias) (+ residual)."""
    return _ops.linear(x, weight, bias, residual, gelu)


def attention(q: Tensor, k: Tensor, v: Tensor, n_head: int) -> Tensor:
    """Non-causal multi-head attention; q [B, Tq, D], k/v [B, Tk, D] -> [B, Tq, D]."""
    return _ops.attention(q, k, v, n_head)


def encoder_forward(
    mel: Tensor,
    conv1_weight: Tensor,
    conv1_bias: Tensor,
    conv2_weight: Tensor,
    conv2_bias: Tensor,
    positional_embedding: Tensor,
    block_weights: List[Tensor],
    ln_post_weight: Tensor,
    ln_post_bias: Tensor,
    n_head: int,
    packed_qkv: Optional[List[Tensor]] = None,
) -> Tensor:
    """The whole audio encoder in one call; block_weights: the ENCODER_BLOCK tensors of each layer.

    packed_qkv (optional): the ENCODER_PACKED_QKV tensors of each layer, the query|key|value weights as one
    [3d, d] tensor and their biases as one [3d] tensor (zeros for the key, which has none); the attention's
    input projection then runs as one GEMM. pack_qkv() builds them."""
    return _ops.encoder_forward(
        mel,
        conv1_weight,
        conv1_bias,
        conv2_weight,
        conv2_bias,
        positional_embedding,
        block_weights,
        ln_post_weight,
        ln_post_bias,
        n_head,
        packed_qkv,
    )


def pack_qkv(block_weights: List[Tensor], dtype: Optional[torch.dtype] = None) -> List[Tensor]:
    """encoder_forward's packed_qkv for block_weights (the ENCODER_BLOCK tensors of each layer), in `dtype`
    (default: the query weight's): per layer, in ENCODER_PACKED_QKV order, cat(query, key, value) weights
    [3d, d] and cat(query bias, zeros, value bias) [3d]."""
    n = len(ENCODER_BLOCK)
    if len(block_weights) % n:
        raise ValueError(f"block_weights must hold {n} tensors per layer, got {len(block_weights)}")
    packed = []
    for base in range(0, len(block_weights), n):
        block = {name: block_weights[base + i] for i, name in enumerate(ENCODER_BLOCK.names)}
        q, k, v = (block[f"attn.{p}.weight"] for p in ("query", "key", "value"))
        d = q.shape[0]
        weight = torch.empty((3 * d,) + tuple(q.shape[1:]), dtype=dtype or q.dtype, device=q.device)
        bias = torch.zeros(3 * d, dtype=weight.dtype, device=q.device)
        for i, w in enumerate((q, k, v)):
            weight[i * d:(i + 1) * d].copy_(w)
        bias[:d].copy_(block["attn.query.bias"])
        bias[2 * d:].copy_(block["attn.value.bias"])
        layer = {"attn.qkv.weight": weight, "attn.qkv.bias": bias}
        packed += [layer[name] for name in ENCODER_PACKED_QKV.names]
    return packed


def decoder_linear(
    x: Tensor,
    weights: List[Tensor],
    biases: List[Optional[Tensor]],
    ln_weight: Optional[Tensor] = None,
    ln_bias: Optional[Tensor] = None,
    residual: Optional[Tensor] = None,
    gelu: bool = False,
    float_output: bool = False,
) -> Tensor:
    """Decoder step linear for at most 16 rows: (GELU)(LayerNorm(x) @ cat(weights).T + cat(biases)) (+ residual).
    x [M, K]; weights[i] [N_i, K]; ln_weight/ln_bias fp32 [K] or None (no LayerNorm)."""
    return _ops.decoder_linear(x, ln_weight, ln_bias, weights, biases, residual, gelu, float_output)


def decoder_embedding(
    token_embedding: Tensor, positional_embedding: Tensor, tokens: Tensor, position: Tensor, dtype: torch.dtype
) -> Tensor:
    """[R, d] in dtype: token_embedding[tokens[r, 0]] + positional_embedding[position[0]] (tokens [R, 1] and
    position [1] int64), added in the tables' promoted dtype, then cast. On CUDA an out-of-range token or
    position gives a row of NaN (the kernel reads them on the device, without a host sync)."""
    return _ops.decoder_embedding(token_embedding, positional_embedding, tokens, position, dtype)


def decoder_self_attention(qkv: Tensor, k_cache: Tensor, v_cache: Tensor, position: Tensor, n_head: int) -> Tensor:
    """Writes qkv's k/v [R, 3d] into the caches [R, n_ctx, d] at position[0]; returns attention over 0..position."""
    return _ops.decoder_self_attention(qkv, k_cache, v_cache, position, n_head)


def decoder_cross_attention(q: Tensor, k: Tensor, v: Tensor, n_head: int) -> Tensor:
    """One query per row q [R, d] against the cached audio K/V [W, T, d] (R = W * rows per window) -> [R, d]."""
    return _ops.decoder_cross_attention(q, k, v, n_head)


def decoder_cross_query_attention(x: Tensor, ln_weight: Tensor, ln_bias: Tensor, q_weight: Tensor,
                                  q_bias: Optional[Tensor], k: Tensor, v: Tensor, n_head: int) -> Tensor:
    """decoder_linear(x, [q_weight], [q_bias], ln_weight, ln_bias) then decoder_cross_attention with k/v [W, T, d]
    -> [R, d]; one kernel on CUDA."""
    return _ops.decoder_cross_query_attention(x, ln_weight, ln_bias, q_weight, q_bias, k, v, n_head)


def decoder_greedy_workspace(rows: int, device) -> Tensor:
    """The zeroed int32 workspace decoder_greedy_update needs for `rows` rows (its size from
    csrc/ops/greedy_workspace.h); every call resets its counters."""
    return torch.zeros(_library._C.greedy_workspace_numel(rows), dtype=torch.int32, device=device)


def decoder_greedy_update(logits: Tensor, tokens: Tensor, sum_logprobs: Tensor, length: int, eot: int,
                          workspace: Tensor | None = None, suppress: Tensor | None = None) -> Tensor:
    """whisper's GreedyDecoder.update at temperature 0, in place: tokens[:, length] <- argmax (EOT for rows that
    ended), sum_logprobs += its log-probability; returns whether every row now ends in EOT (0-dim bool).
    workspace: from decoder_greedy_workspace (made here when not given; pass one to reuse it across calls).
    suppress: [n_vocab] bool, tokens taken as -inf first (whisper's SuppressTokens / SuppressBlank); the logits
    are left unchanged."""
    if workspace is None:
        workspace = decoder_greedy_workspace(logits.shape[0], logits.device)
    return _ops.decoder_greedy_update(logits, tokens, sum_logprobs, workspace, length, eot, suppress)


def decoder_timestamp_rules(
    logits: Tensor, tokens: Tensor, sample_begin: int, timestamp_begin: int, eot: int,
    no_timestamps: int = -1, max_initial_timestamp_index: int = -1,
) -> None:
    """whisper's ApplyTimestampRules on logits [N, V] float32, in place; tokens [N, L] the sequences so far."""
    _ops.decoder_timestamp_rules(logits, tokens, sample_begin, timestamp_begin, eot, no_timestamps,
                                 max_initial_timestamp_index)


# ---- fake (meta) implementations: shapes and dtypes only -------------------------------------


def _check_one_device(op: str, args) -> None:
    """The device check of csrc/ops/device_check.cpp, for fake tensors: FakeTensorMode (torch.compile) runs the
    fake from its Python dispatch key, above the BackendSelect key where real tensors are checked."""
    devices = set()
    for arg in args:
        if isinstance(arg, Tensor):
            devices.add(arg.device)
        elif isinstance(arg, (list, tuple)):
            devices.update(t.device for t in arg if isinstance(t, Tensor))
    if len(devices) > 1:
        raise RuntimeError(f"fastwhisper.{op}: all inputs must be on one device, got tensors on "
                           f"{', '.join(sorted(str(d) for d in devices))}")


def _register_fake(op: str):
    """torch.library.register_fake for fastwhisper::op, with the fake tensors' device check first."""
    def register(fake):
        def checked(*args, **kwargs):
            _check_one_device(op, list(args) + list(kwargs.values()))
            return fake(*args, **kwargs)

        checked.__name__ = fake.__name__
        torch.library.register_fake(f"fastwhisper::{op}")(checked)
        return fake

    return register


def _stem_out_frames(mel: Tensor) -> int:
    torch._check(mel.dim() == 3, lambda: f"fastwhisper.conv_stem: mel must be 3-D, got {tuple(mel.shape)}")
    return (mel.shape[2] - 1) // 2 + 1


@_register_fake("conv_stem")
def _conv_stem_fake(mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias, positional_embedding):
    n_out = _stem_out_frames(mel)
    torch._check(positional_embedding.shape[0] == n_out, lambda: "fastwhisper.conv_stem: incorrect audio shape")
    return mel.new_empty((mel.shape[0], n_out, conv1_weight.shape[0]))


@_register_fake("layer_norm")
def _layer_norm_fake(x, weight, bias, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_register_fake("linear")
def _linear_fake(x, weight, bias, residual, gelu):
    torch._check(x.shape[-1] == weight.shape[1], lambda: "fastwhisper.linear: in_features mismatch")
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@_register_fake("attention")
def _attention_fake(q, k, v, n_head):
    return q.new_empty(q.shape)


@_register_fake("encoder_forward")
def _encoder_forward_fake(
    mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias, positional_embedding, block_weights,
    ln_post_weight, ln_post_bias, n_head, packed_qkv=None,
):
    n_out = _stem_out_frames(mel)
    torch._check(positional_embedding.shape[0] == n_out, lambda: "fastwhisper.encoder_forward: incorrect audio shape")
    return mel.new_empty((mel.shape[0], n_out, conv1_weight.shape[0]))


@_register_fake("decoder_linear")
def _decoder_linear_fake(x, ln_weight, ln_bias, weights, biases, residual, gelu, float_output):
    torch._check(x.dim() == 2, lambda: "fastwhisper.decoder_linear: x must be 2-D")
    n = sum(w.shape[0] for w in weights)
    return x.new_empty((x.shape[0], n), dtype=torch.float32 if float_output else x.dtype)


@_register_fake("decoder_embedding")
def _decoder_embedding_fake(token_embedding, positional_embedding, tokens, position, dtype):
    torch._check(tokens.dim() == 2, lambda: "fastwhisper.decoder_embedding: tokens must have shape [rows, 1]")
    return token_embedding.new_empty((tokens.shape[0], token_embedding.shape[1]), dtype=dtype)


@_register_fake("decoder_self_attention")
def _decoder_self_attention_fake(qkv, k_cache, v_cache, position, n_head):
    return qkv.new_empty((k_cache.shape[0], k_cache.shape[2]))


@_register_fake("decoder_cross_attention")
def _decoder_cross_attention_fake(q, k, v, n_head):
    return q.new_empty(q.shape)


@_register_fake("decoder_cross_query_attention")
def _decoder_cross_query_attention_fake(x, ln_weight, ln_bias, q_weight, q_bias, k, v, n_head):
    return x.new_empty(x.shape)


@_register_fake("decoder_greedy_update")
def _decoder_greedy_update_fake(logits, tokens, sum_logprobs, workspace, length, eot, suppress=None):
    return logits.new_empty((), dtype=torch.bool)


@_register_fake("decoder_timestamp_rules")
def _decoder_timestamp_rules_fake(logits, tokens, sample_begin, timestamp_begin, eot, no_timestamps,
                                  max_initial_timestamp_index):
    return None
