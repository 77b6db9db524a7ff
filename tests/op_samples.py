"""Sample inputs of every fastwhisper op, their float64 references, their bad inputs, and the tolerance table.

In the style of pytorch/extension-cpp's tests: for each op, ``sample_inputs(op, device, dtype)`` gives argument
tuples of awkward shapes; they feed the correctness test against the float64 ``reference`` (test_ops.py),
``torch.library.opcheck`` (test_ops.py) and, through ``bad_inputs(op, device)``, the bad-input tests
(test_bad_input.py). The builders here are also what the op-specific tests use, so no test file imports
another.
"""

import math

import torch
import torch.nn.functional as F
from whisper.model import AudioEncoder

import fastwhisper
import reference as ref
from conftest import rel_err
from fastwhisper import ops

# ---- tolerances: one table for every op and encoder test ------------------------------------------------

# Bounds of rel_err (max |out - expected| / max |expected|) per kind of comparison and dtype.
TOLERANCE = {
    # an op's (or a decoder step's) output against its float64 reference
    "op": {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2},
    # two kernels of one computation against each other (e.g. packed vs separate projections, vector vs scalar)
    "paths": {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2},
    # a fastwhisper encoder against openai-whisper's own run in the same precision
    "whisper": {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2},
    # the C++ decoder's step kernels against its ATen step, over tens of steps (the rounding accumulates)
    "steps": {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 6e-2},
}
# fp16/bf16 against the float64 reference: at most this many times PyTorch's own error in that dtype.
LOW_PRECISION_FACTOR = 2
# torch.compile's trace against the eager call.
COMPILED = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-3}


def tolerance(kind: str, dtype: torch.dtype) -> float:
    return TOLERANCE[kind][dtype]


def within_torch_error(out, expected, torch_out) -> bool:
    """fp16/bf16: ours no worse than LOW_PRECISION_FACTOR x PyTorch's own error against the float64 reference."""
    return rel_err(out, expected) <= LOW_PRECISION_FACTOR * rel_err(torch_out, expected) + 1e-6


LOW_PRECISION = [torch.float16, torch.bfloat16]


def dtypes_on(device: str):
    """The dtypes an op computes in on `device`: float32 on the CPU; float32, float16, bfloat16 on CUDA."""
    return [torch.float32] if device == "cpu" else [torch.float32] + LOW_PRECISION


def randn(*shape, device, dtype=torch.float32, scale=1.0, gen=None):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


# ---- the encoder's ops: argument builders ---------------------------------------------------------------


def conv_stem_args(batch, n_mels, frames, d, device, dtype=torch.float32, gen=None):
    r = lambda *s, scale=1.0: randn(*s, device=device, dtype=dtype, scale=scale, gen=gen)  # noqa: E731
    mel = r(batch, n_mels, frames)
    n_out = (frames - 1) // 2 + 1
    return [mel, r(d, n_mels, 3, scale=1 / math.sqrt(3 * n_mels)), r(d, scale=0.1),
            r(d, d, 3, scale=1 / math.sqrt(3 * d)), r(d, scale=0.1),
            randn(n_out, d, device=device, gen=gen)]  # positional embedding stays fp32, as in whisper


def layer_norm_args(shape, device, dtype=torch.float32, param_dtype=torch.float32, gen=None):
    d = shape[-1]
    x = randn(*shape, device=device, dtype=dtype, scale=3.0, gen=gen) + 1.5
    return [x, randn(d, device=device, dtype=param_dtype, gen=gen) + 1, randn(d, device=device, dtype=param_dtype, gen=gen),
            1e-5]


def linear_args(lead, k, n, bias, residual, gelu, device, dtype=torch.float32, gen=None):
    r = lambda *s, scale=1.0: randn(*s, device=device, dtype=dtype, scale=scale, gen=gen)  # noqa: E731
    return [r(*lead, k), r(n, k, scale=1 / math.sqrt(k)), r(n) if bias else None,
            r(*lead, n) if residual else None, gelu]


def attention_args(batch, n_q, n_kv, n_head, head_dim, device, dtype=torch.float32, gen=None):
    d = n_head * head_dim
    r = lambda *s: randn(*s, device=device, dtype=dtype, gen=gen)  # noqa: E731
    return [r(batch, n_q, d), r(batch, n_kv, d), r(batch, n_kv, d), n_head]


def block_tensor(name, d, device, dtype, gen=None):
    """A random tensor for one encoder block's tensor `name` (ops.ENCODER_BLOCK), its shape from its name:
    LayerNorm parameters in float32, the rest in dtype."""
    if "ln" in name.split(".")[0]:  # attn_ln, mlp_ln, ln_post
        base = torch.ones(d) if name.endswith("weight") else torch.zeros(d)
        return (base + 0.1 * torch.randn(d, generator=gen, dtype=torch.float64).float()).to(device)
    shapes = {"mlp.0.weight": (4 * d, d), "mlp.0.bias": (4 * d,), "mlp.2.weight": (d, 4 * d)}
    shape = shapes.get(name, (d, d) if name.endswith("weight") else (d,))
    return randn(*shape, device=device, dtype=dtype, scale=0.2 if len(shape) == 2 else 1.0, gen=gen)


def encoder_sample(device, dtype, n_layer=2, d=32, n_mels=16, frames=40, n_head=4, batch=2, seed=0):
    """encoder_forward's arguments (without packed_qkv): a small random encoder."""
    gen = torch.Generator().manual_seed(seed)
    stem = conv_stem_args(batch, n_mels, frames, d, device, dtype, gen=gen)
    blocks = [block_tensor(name, d, device, dtype, gen) for _ in range(n_layer) for name in ops.ENCODER_BLOCK.names]
    return stem + [blocks, block_tensor("ln_post.weight", d, device, dtype, gen),
                   block_tensor("ln_post.bias", d, device, dtype, gen), n_head]


def encoder_forward_reference(mel, w1, b1, w2, b2, pos, blocks, ln_w, ln_b, n_head, packed_qkv=None):
    """encoder_forward in float64 from its arguments (block tensors looked up by name)."""
    d64 = lambda t: t.double()  # noqa: E731
    x = ref.conv_stem(d64(mel), d64(w1), d64(b1), d64(w2), d64(b2), d64(pos))
    n = len(ops.ENCODER_BLOCK)
    for base in range(0, len(blocks), n):
        g = lambda name: d64(blocks[base + ops.ENCODER_BLOCK.index(name)])  # noqa: E731
        h = ref.layer_norm(x, g("attn_ln.weight"), g("attn_ln.bias"))
        a = ref.attention(ref.linear(h, g("attn.query.weight"), g("attn.query.bias")), ref.linear(h, g("attn.key.weight")),
                          ref.linear(h, g("attn.value.weight"), g("attn.value.bias")), n_head)
        x = ref.linear(a, g("attn.out.weight"), g("attn.out.bias"), residual=x)
        h = ref.layer_norm(x, g("mlp_ln.weight"), g("mlp_ln.bias"))
        x = ref.linear(ref.linear(h, g("mlp.0.weight"), g("mlp.0.bias"), gelu=True), g("mlp.2.weight"),
                       g("mlp.2.bias"), residual=x)
    return ref.layer_norm(x, d64(ln_w), d64(ln_b))


def torch_low_precision(name, args):
    """PyTorch's own result in the args' low precision (the yardstick for fp16/bf16 error)."""
    if name == "layer_norm":  # openai-whisper's LayerNorm: fp32 inside, cast back
        x, w, b, eps = args
        return ref.layer_norm(x.float(), w.float(), b.float(), eps).to(x.dtype)
    if name == "attention":
        q, k, v, n_head = args
        b, tq, d = q.shape
        split = lambda t: t.reshape(b, t.shape[1], n_head, d // n_head).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return o.transpose(1, 2).reshape(b, tq, d)
    if name == "conv_stem":
        mel, w1, b1, w2, b2, pos = args
        return ref.conv_stem(mel, w1, b1, w2, b2, torch.zeros_like(pos, dtype=mel.dtype)).float().add(pos).to(mel.dtype)
    return getattr(ref, name)(*args)


def check_linear_cuda(args, dtype):
    """ops.linear on CUDA: float32 within TOLERANCE of the float64 reference, fp16/bf16 (one rounding, fused,
    instead of torch's two) within LOW_PRECISION_FACTOR x torch's own error."""
    out = ops.linear(*args)
    expected = reference("linear", args)
    assert out.dtype == dtype and out.shape == expected.shape
    if dtype == torch.float32:
        assert rel_err(out, expected) <= tolerance("op", dtype)
    else:
        assert within_torch_error(out, expected, torch_low_precision("linear", args)), dtype


# ---- whole encoders ---------------------------------------------------------------------------------------


def random_encoder(dims, seed=0, cls=AudioEncoder):
    """An encoder with random weights of real dims (LayerNorm parameters perturbed too)."""
    torch.manual_seed(seed)
    enc = cls(*dims)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return enc.eval()


def random_mel(batch, n_mels, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, n_mels, 3000, generator=g) * 0.5).to(device)


def dims_of(enc):
    n_ctx, n_state = enc.positional_embedding.shape
    return (enc.conv1.in_channels, n_ctx, n_state, enc.blocks[0].attn.n_head, len(enc.blocks))


def fast_copy(enc):
    fast = fastwhisper.FastAudioEncoder(*dims_of(enc))
    fast.load_state_dict(enc.state_dict())
    return fast.eval().to(next(enc.parameters()).device)


# ---- the decoder step's ops: builders and float64 references --------------------------------------------


def linear_case(rows, k, outs, biases, ln, residual, seed=0):
    """decoder_linear's tensors on the CPU in float32: x, weights, biases, ln_w, ln_b, residual."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    weights = [torch.randn(n, k, generator=g) / k**0.5 for n in outs]
    bs = [torch.randn(n, generator=g) if b else None for n, b in zip(outs, biases)]
    ln_w = ln_b = None
    if ln:
        ln_w, ln_b = 1 + 0.1 * torch.randn(k, generator=g), 0.1 * torch.randn(k, generator=g)
    res = torch.randn(rows, sum(outs), generator=g) if residual else None
    return x, weights, bs, ln_w, ln_b, res


def decoder_linear_reference(x, ln_w, ln_b, weights, biases, residual, gelu, float_output=False):
    """decoder_linear in float64, with the op's argument order."""
    h = x.double()
    if ln_w is not None:
        h = F.layer_norm(h, (h.shape[1],), ln_w.double(), ln_b.double(), 1e-5)
    y = torch.cat([F.linear(h, w.double(), None if b is None else b.double()) for w, b in zip(weights, biases)], 1)
    if gelu:
        y = F.gelu(y)
    return y if residual is None else y + residual.double()


# name: (rows, K, output features per weight, bias per weight, LayerNorm, residual, GELU)
LINEAR_CASES = {
    "qkv-ln-1row": (1, 64, [64, 64, 64], [True, False, True], True, False, False),
    "out-residual-3rows": (3, 96, [40], [True], False, True, False),
    "mlp0-ln-gelu-5rows": (5, 64, [256], [True], True, False, True),
    "mlp2-residual-8rows": (8, 256, [64], [True], False, True, False),
    "logits-no-bias-2rows": (2, 64, [1001], [False], True, False, False),
    "two-segments-odd-n": (4, 32, [7, 9], [False, True], False, True, True),
    # long rows: split over several warps (fp16 above 2048 features, fp32 above 1024)
    "mlp2-split-k-2rows": (2, 5120, [48], [True], False, True, False),
    "split-k-ln-1row": (1, 2560, [24, 8], [True, False], True, False, False),
    # the vocabulary projection's kernel (several columns per warp from 16384 columns)
    "vocab-columns-3rows": (3, 64, [16500], [False], True, False, False),
    # one input row with several whole weight rows per slot, summed together: tiny's vocabulary projection (4 rows
    # per slot, a warp's last slot holding 1), bias + GELU + residual with 2 rows per slot and warps left with 1,
    # and slots that straddle two weights
    "tiny-vocab-1row": (1, 384, [51866], [False], True, False, False),
    "rows-together-gelu-residual-1row": (1, 96, [3001], [True], True, True, True),
    "rows-together-two-segments-1row": (1, 64, [2501, 1700], [True, False], False, False, False),
    # one input row with one whole weight row per slot and at least eight rows per warp (N >= 16896 on 132 SMs):
    # eight slots' rows reduced together -- large-v3's vocabulary projection (fp16/bf16; fp32 splits its rows),
    # small's (fp32; fp16/bf16 hold two rows per slot), and bias + GELU + residual across two weights with a
    # warp's last group short; eight rows of large-v3's vocabulary take the row-at-a-time loop
    "large-v3-vocab-1row": (1, 1280, [51866], [False], True, False, False),
    "small-vocab-1row": (1, 768, [51866], [False], True, False, False),
    "rows-grouped-gelu-residual-1row": (1, 1024, [12000, 8001], [True, False], True, True, True),
    "large-v3-vocab-8rows": (8, 1280, [51866], [False], True, False, False),
    # 8 rows of 3072 fp16 features fill the default 48 KiB of shared memory (small's MLP, batch 8)
    "rows8-k3072-smem-limit": (8, 3072, [96], [True], False, True, False),
    # the tensor-core kernel (4-16 fp16/bf16 rows): q, k and v; an octet of weight rows across two segments;
    # a last octet cut short by N; octets cut along K into items whose sums meet in shared memory
    "qkv-ln-gelu-8rows": (8, 128, [128, 128, 128], [True, False, True], True, False, True),
    "octet-across-segments-6rows": (6, 64, [20, 12], [True, False], False, True, False),
    "partial-octet-5rows": (5, 192, [1003], [False], True, False, False),
    "mlp2-k5120-pieces-8rows": (8, 5120, [1280], [True], False, True, False),
    # 9-16 rows (batched windows): the mma's rows 8-15, partly used; and 16 rows of 5120 features (fp16: cuBLASLt,
    # above the tensor-core kernel's 2048 features; fp32: too many for the CUDA-core kernel's shared memory, the
    # same GEMM path)
    "qkv-ln-gelu-16rows": (16, 128, [128, 128, 128], [True, False, True], True, False, True),
    "octets-11rows-two-segments": (11, 192, [40, 1003], [True, False], True, True, False),
    # K of 5 units of 32 features (not a multiple of 64): items of one unit, five partial sums per octet
    "odd-units-12rows": (12, 160, [200], [True], True, True, False),
    "mlp2-k5120-16rows": (16, 5120, [256], [True], False, True, False),
}


def linear_case_on(case, device, dtype):
    """LINEAR_CASES[case] on `device`: decoder_linear's positional arguments as ops.decoder_linear takes them
    (x, weights, biases in dtype; the LayerNorm parameters stay fp32), the residual in dtype, the GELU flag, and
    the float64 reference."""
    rows, k, outs, biases, ln, residual, gelu = LINEAR_CASES[case]
    x, weights, bs, ln_w, ln_b, res = linear_case(rows, k, outs, biases, ln, residual)
    expected = decoder_linear_reference(x, ln_w, ln_b, weights, bs, res, gelu)
    cast = lambda t: None if t is None else t.to(device, dtype)  # noqa: E731
    args = (cast(x), [cast(w) for w in weights], [cast(b) for b in bs],
            *[None if t is None else t.to(device) for t in (ln_w, ln_b)])
    return args, cast(res), gelu, expected


def self_attention_case(rows, n_ctx, d, position, seed=1):
    """decoder_self_attention's tensors on the CPU in float32: qkv [rows, 3d], the caches, the position."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(rows, 3 * d, generator=g)
    k_cache = torch.randn(rows, n_ctx, d, generator=g)
    v_cache = torch.randn(rows, n_ctx, d, generator=g)
    return qkv, k_cache, v_cache, torch.tensor([position])


def self_attention_reference(qkv, k_cache, v_cache, position, n_head):
    """decoder_self_attention in float64 (the caches are not written): attention over positions 0..p with this
    position's k and v in the cache."""
    rows, d = qkv.shape[0], qkv.shape[1] // 3
    p = int(position[0])
    keys, values = k_cache.double().cpu().clone(), v_cache.double().cpu().clone()
    q64 = qkv.double().cpu()
    keys[:, p], values[:, p] = q64[:, d:2 * d], q64[:, 2 * d:]
    heads = lambda t: t.reshape(rows, t.shape[1], n_head, d // n_head).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(heads(q64[:, :d].reshape(rows, 1, d)), heads(keys[:, :p + 1]),
                                         heads(values[:, :p + 1]))
    return out.transpose(1, 2).reshape(rows, d)


def embedding_case(rows=3, n_vocab=50, n_ctx=12, d=40, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(n_vocab, d, generator=g).to(dtype)
    positions = torch.randn(n_ctx, d, generator=g).to(dtype)
    tokens = torch.randint(0, n_vocab, (rows, 1), generator=g)
    return table, positions, tokens


def whisper_embedding(table, positions, tokens, p, dtype):
    """whisper's TextDecoder: token_embedding(x) + positional_embedding[offset : offset + 1], then .to(dtype)."""
    return (F.embedding(tokens, table) + positions[p:p + 1]).to(dtype).view(tokens.shape[0], -1)


def cross_case(windows, group, n_keys, d, seed=2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(windows * group, d, generator=g)
    k = torch.randn(windows, n_keys, d, generator=g)
    v = torch.randn(windows, n_keys, d, generator=g)
    return q, k, v


def cross_reference(q, k, v, n_head):
    """Each row against its own window's K/V, one row at a time, in float64."""
    q, k, v = q.cpu(), k.cpu(), v.cpu()
    windows, n_keys, d = k.shape
    group = q.shape[0] // windows
    heads = lambda t: t.reshape(t.shape[0], n_head, d // n_head).transpose(0, 1)  # noqa: E731  [L, d] -> [H, L, Dh]
    rows = []
    for r in range(q.shape[0]):
        w = r // group
        a = F.scaled_dot_product_attention(heads(q[r : r + 1].double()), heads(k[w].double()), heads(v[w].double()))
        rows.append(a.transpose(0, 1).reshape(d))
    return torch.stack(rows)


def cross_query_case(windows, group, n_keys, d, seed=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(windows * group, d, generator=g)
    ln_w, ln_b = 1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g)
    q_weight = torch.randn(d, d, generator=g) / d**0.5
    q_bias = torch.randn(d, generator=g)
    k = torch.randn(windows, n_keys, d, generator=g)
    v = torch.randn(windows, n_keys, d, generator=g)
    return x, ln_w, ln_b, q_weight, q_bias, k, v


def cross_query_reference(x, ln_w, ln_b, q_weight, q_bias, k, v, n_head):
    """whisper's cross_attn_ln, query projection and attention, in float64."""
    h = F.layer_norm(x.double().cpu(), (x.shape[1],), ln_w.double().cpu(), ln_b.double().cpu(), 1e-5)
    q = F.linear(h, q_weight.double().cpu(), None if q_bias is None else q_bias.double().cpu())
    return cross_reference(q, k, v, n_head)


def greedy_case(rows, n_vocab, eot, length, finished_rows, seed=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, n_vocab, generator=g) * 3
    tokens = torch.randint(0, n_vocab, (rows, length + 4), generator=g)
    tokens[tokens == eot] = 0
    for r in finished_rows:
        tokens[r, length - 1] = eot
    sums = torch.randn(rows, generator=g)
    return logits, tokens, sums


def greedy_reference(logits, tokens, sums, length, eot):
    """whisper's GreedyDecoder.update at temperature 0, in float64 for the sum."""
    next_tokens = logits.argmax(-1)
    current = F.log_softmax(logits.double(), -1).gather(1, next_tokens[:, None])[:, 0]
    ended = tokens[:, length - 1] == eot
    new_sums = sums.double() + current * (~ended)
    next_tokens = torch.where(ended, torch.full_like(next_tokens, eot), next_tokens)
    out = tokens.clone()
    out[:, length] = next_tokens
    return out, new_sums, bool((next_tokens == eot).all())


# whisper's multilingual token ids: timestamp_begin, eot, <|notimestamps|>, vocabulary
TB, EOT, NO_TS, V = 50364, 50257, 50363, 51865


def timestamp_case(sampled, seed):
    """3 rows of logits, and token rows of 3 initial tokens followed by `sampled` (one list per row)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, V, generator=g) * 2
    logits[1, TB:] += 4  # row 1: the timestamps' total probability beats every text token
    tokens = torch.tensor([[50258, 50259, 50359] + s for s in sampled])
    return logits, tokens


TIMESTAMP_CASES = {
    "first-token": [[], [], []],
    "text-then-lone-timestamp": [[TB + 3, 440, TB + 10], [TB, 100, TB + 2], [TB + 5, 200, 300]],
    "closed-pair": [[TB + 3, 440, TB + 10, TB + 10], [440, 441, TB + 1, TB + 1], [500, 501, TB + 7, TB + 7]],
    "lone-first-timestamp": [[TB + 50], [TB], [TB + 1499]],
}


# ---- per-op sample inputs ---------------------------------------------------------------------------------


def _on(device, dtype, *tensors):
    return [None if t is None else t.to(device, dtype) for t in tensors]


def _decoder_linear_samples(device, dtype):
    samples = []
    for rows, k, outs, biases, ln, residual, gelu, float_output in [
            (1, 64, [64, 64, 64], [True, False, True], True, False, False, False),  # qkv of one row
            (3, 96, [40], [True], False, True, False, False),  # an odd output width, the residual
            (5, 64, [200], [True], True, False, True, False),  # GELU, 5 rows (CUDA fp16/bf16: tensor cores)
            (2, 32, [7, 9], [False, True], False, True, True, True)]:  # two odd segments, fp32 output
        x, weights, bs, ln_w, ln_b, res = linear_case(rows, k, outs, biases, ln, residual, seed=rows)
        ln_w, ln_b = (None if t is None else t.to(device) for t in (ln_w, ln_b))
        samples.append((*_on(device, dtype, x), ln_w, ln_b, _on(device, dtype, *weights), _on(device, dtype, *bs),
                        *_on(device, dtype, res), gelu, float_output))
    return samples


def _decoder_embedding_samples(device, dtype):
    samples = []
    for rows, d, p, table_dtype in [(1, 40, 0, torch.float32), (5, 24, 11, dtype)]:
        table, positions, tokens = (t.to(device) for t in embedding_case(rows, d=d, dtype=table_dtype, seed=rows))
        samples.append((table, positions, tokens, torch.tensor([p], device=device), dtype))
    return samples


def _self_attention_samples(device, dtype):
    samples = []
    for rows, n_head, position, n_ctx in [(1, 2, 0, 64), (3, 4, 37, 64), (2, 1, 127, 200)]:
        qkv, k_cache, v_cache, pos = self_attention_case(rows, n_ctx, 64, position)
        samples.append((*_on(device, dtype, qkv, k_cache, v_cache), pos.to(device), n_head))
    return samples


def _cross_attention_samples(device, dtype):
    # one row per window, beams, fewer keys than the CUDA kernel's key chunks, more rows than its cluster keeps
    return [(*_on(device, dtype, *cross_case(w, g, n, 64 * h)), h)
            for w, g, n, h in [(1, 1, 300, 4), (2, 5, 37, 2), (2, 3, 5, 2), (2, 9, 40, 2)]]


def _cross_query_samples(device, dtype):
    samples = []
    for windows, group, n_keys, n_head, bias in [(1, 1, 300, 4, True), (2, 4, 37, 2, True), (1, 3, 5, 2, False)]:
        x, ln_w, ln_b, q_weight, q_bias, k, v = cross_query_case(windows, group, n_keys, 64 * n_head)
        samples.append((*_on(device, dtype, x), ln_w.to(device), ln_b.to(device),
                        *_on(device, dtype, q_weight, q_bias if bias else None, k, v), n_head))
    return samples


def _greedy_samples(device, dtype):
    samples = []
    for rows, n_vocab, finished, masked in [(3, 500, [1], False), (3, 500, [], True), (1, 10, [], False)]:
        logits, tokens, sums = greedy_case(rows, n_vocab, 7, 4, finished)
        suppress = None
        if masked:
            suppress = torch.zeros(n_vocab, dtype=torch.bool, device=device)
            suppress[::7] = True
        samples.append((logits.to(device), tokens.to(device), sums.to(device),
                        ops.decoder_greedy_workspace(rows, device), 4, 7, suppress))
    return samples


def _timestamp_samples(device, dtype):
    samples = []
    for case, max_initial in [("first-token", 50), ("closed-pair", -1), ("text-then-lone-timestamp", -1)]:
        logits, tokens = timestamp_case(TIMESTAMP_CASES[case], seed=len(case))
        samples.append((logits.to(device), tokens.to(device), 3, TB, EOT, NO_TS, max_initial))
    return samples


def _gen(seed):
    return torch.Generator().manual_seed(seed)


SAMPLES = {
    "conv_stem": lambda dev, dt: [tuple(conv_stem_args(b, m, f, d, dev, dt, gen=_gen(f)))
                                  for b, m, f, d in [(1, 7, 11, 10), (3, 80, 50, 24), (2, 16, 21, 12)]],
    "layer_norm": lambda dev, dt: [tuple(layer_norm_args(s, dev, dt, gen=_gen(s[-1])))
                                   for s in [(5, 33), (3, 7, 48), (1, 1, 1280)]],
    "linear": lambda dev, dt: [tuple(linear_args(lead, k, n, b, r, g, dev, dt, gen=_gen(k + n)))
                               for lead, k, n, b, r, g in [((3, 17), 40, 24, True, True, True), ((5,), 36, 13, False, False, False),
                                                           ((2, 7), 32, 20, True, False, True), ((1, 5), 64, 48, False, True, False)]],
    "attention": lambda dev, dt: [tuple(attention_args(b, q, k, h, hd, dev, dt, gen=_gen(q * h)))
                                  for b, q, k, h, hd in [(1, 7, 7, 1, 8), (2, 9, 9, 4, 16), (2, 5, 19, 3, 16)]],
    "encoder_forward": lambda dev, dt: [tuple(encoder_sample(dev, dt)), tuple(encoder_sample(dev, dt, n_layer=1, seed=1))
                                        + (ops.pack_qkv(encoder_sample(dev, dt, n_layer=1, seed=1)[6]),)],
    "decoder_linear": _decoder_linear_samples,
    "decoder_embedding": _decoder_embedding_samples,
    "decoder_self_attention": _self_attention_samples,
    "decoder_cross_attention": _cross_attention_samples,
    "decoder_cross_query_attention": _cross_query_samples,
    "decoder_greedy_update": _greedy_samples,
    "decoder_timestamp_rules": _timestamp_samples,
}
OPS = list(SAMPLES)


def sample_inputs(op, device, dtype):
    """Argument tuples of torch.ops.fastwhisper.<op> on `device` computing in `dtype`, awkward shapes included."""
    return SAMPLES[op](device, dtype)


def _decoder_embedding_reference(table, positions, tokens, position, dtype):
    return whisper_embedding(table, positions, tokens, int(position[0]), dtype)


# float64 references of the ops that return their result (the others, which write their inputs in place, are
# checked against whisper's own ops in their tests), with the op's argument order
REFERENCES = {
    "conv_stem": ref.conv_stem,
    "layer_norm": ref.layer_norm,
    "linear": ref.linear,
    "attention": ref.attention,
    "encoder_forward": encoder_forward_reference,
    "decoder_linear": decoder_linear_reference,
    "decoder_embedding": _decoder_embedding_reference,
    "decoder_self_attention": self_attention_reference,
    "decoder_cross_attention": cross_reference,
    "decoder_cross_query_attention": cross_query_reference,
}


def reference(op, args):
    """The float64 reference output of `op` on `args` (tensors taken in float64, except the embedding tables,
    whose own dtypes are part of the op's result)."""
    if op == "decoder_embedding":
        return REFERENCES[op](*args)
    a64 = [x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in args]
    return REFERENCES[op](*a64)


# ---- per-op bad inputs: (args, message fragment) ------------------------------------------------------------


def _with(args, index, value):
    args = list(args)
    args[index] = value
    return tuple(args)


def _encoder_op_bad(op, device):
    stem = conv_stem_args(2, 8, 20, 16, device)
    ln = layer_norm_args((3, 32), device)
    lin = linear_args((2, 5), 12, 7, True, True, True, device)
    att = attention_args(2, 6, 6, 2, 8, device)
    f64 = lambda t: t.double()  # noqa: E731
    cases = {
        "conv_stem": [(_with(stem, 0, stem[0][0]), "mel must be 3-D"),
                      (_with(stem, 1, stem[1][:, :4]), "conv1_weight must have shape"),
                      (_with(stem, 5, stem[5][:-1]), "incorrect audio shape"),
                      (_with(stem, 3, stem[3][:, :, :2]), "conv2_weight must have shape"),
                      (_with(stem, 0, stem[0][:, :, :0]), "no frames"),
                      (_with(stem, 0, stem[0].to(torch.int32)), "dtype")],
        "layer_norm": [(_with(ln, 1, ln[1][:-1]), "weight must have shape"),
                       (_with(ln, 3, 0.0), "eps must be positive"),
                       (_with(ln, 0, ln[0].long()), "dtype")],
        "linear": [(_with(lin, 1, lin[1][:, :-1]), "features"),
                   (_with(lin, 1, lin[1][0]), "weight must be 2-D"),
                   (_with(lin, 2, lin[2][:-1]), "bias must have shape"),
                   (_with(lin, 3, lin[3][:, :-1]), "residual must have shape"),
                   (_with(lin, 1, lin[1].half()), "dtype")],
        "attention": [(_with(att, 3, 3), "not divisible by n_head"),
                      (_with(att, 3, 0), "n_head must be positive"),
                      (_with(att, 0, att[0][0]), "q must be 3-D"),
                      (_with(att, 1, att[1][:1]), "k must have shape"),
                      (_with(att, 2, att[2][:, :-1]), "v must have shape")],
    }[op]
    if device == "cpu":
        cases += {
            "conv_stem": [(tuple(t.half() for t in stem), "float32 only")],
            "layer_norm": [((f64(ln[0]),) + tuple(ln[1:]), "float32 only")],
            "linear": [((f64(lin[0]), f64(lin[1]), f64(lin[2]), f64(lin[3]), True), "float32 only")],
            "attention": [(tuple(f64(t) for t in att[:3]) + (2,), "float32 only")],
        }[op]
    else:
        cases += {
            "conv_stem": [(tuple(stem[:5]) + (stem[5].cpu(),), "one device")],
            "layer_norm": [((ln[0], ln[1].cpu(), ln[2], 1e-5), "one device")],
            "linear": [((lin[0].cpu(),) + tuple(lin[1:]), "expected x on cuda")],
            "attention": [(tuple(f64(t) for t in att[:3]) + (2,), "float32, float16 and bfloat16")],
        }[op]
    return cases


def _encoder_forward_bad(device):
    args = tuple(encoder_sample(device, torch.float32))
    blocks, n = args[6], len(ops.ENCODER_BLOCK)
    bad = list(blocks)
    query = n + ops.ENCODER_BLOCK.index("attn.query.weight")  # layer 1's query weight
    bad[query] = bad[query][:, :-1]
    packed = ops.pack_qkv(blocks)
    n_packed = len(ops.ENCODER_PACKED_QKV)
    bad_packed = list(packed)
    packed_weight = n_packed + ops.ENCODER_PACKED_QKV.index("attn.qkv.weight")  # layer 1's packed weight
    bad_packed[packed_weight] = bad_packed[packed_weight][:-1]
    return [
        (_with(args, 6, blocks[:-1]), f"{n} tensors per layer"),
        (_with(args, 6, bad), r"blocks\.1\.attn\.query\.weight must have shape"),
        (_with(args, 9, 5), "not divisible by n_head"),
        (args + (packed[:-1],), f"packed_qkv must be empty or hold {n_packed} tensors per layer"),
        (args + (bad_packed,), rf"packed_qkv\[{packed_weight}\] \(blocks\.1\.attn\.qkv\.weight\) must have shape"),
    ]


def _decoder_linear_bad(device):
    x, weights, bs, ln_w, ln_b, res = (t for t in linear_case(2, 64, [32], [True], True, True))
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    x, ln_w, ln_b = to(x), to(ln_w), to(ln_b)
    weights, bs = [to(w) for w in weights], [to(b) for b in bs]
    cases = [
        ((to(torch.randn(17, 64)), None, None, weights, bs, None, False, False), "1 to 16 rows"),
        ((x, None, None, [to(torch.randn(32, 63))], bs, None, False, False),
         r"weights\[0\] must be contiguous \[out_features, 64\]"),
        ((x, None, None, weights, [], None, False, False), r"one entry \(or None\) per weight"),
        ((x, ln_w, None, weights, bs, None, False, False), "both ln_weight and ln_bias"),
        ((x, ln_w.double(), ln_b, weights, bs, None, False, False), "must be contiguous float32"),
        ((x, None, None, weights, bs, to(torch.randn(2, 33)), False, False), "residual must have shape"),
    ]
    if device == "cpu":
        cases.append(((x.half(), None, None, [w.half() for w in weights], [None], None, False, False), "float32"))
    return cases


def _decoder_embedding_bad(device):
    table, positions, tokens = (t.to(device) for t in embedding_case())
    p = torch.tensor([3], device=device)
    cases = [
        ((table, positions, tokens.view(-1), p, torch.float32), r"tokens must be an int64 tensor of shape \[rows, 1\]"),
        ((table, positions[:, :39], tokens, p, torch.float32), r"positional_embedding must be 2-D \[n_ctx, 40\]"),
        ((table, positions, tokens, p, torch.float64), "dtype must be float32, float16 or bfloat16"),
        ((table, positions, tokens, p.int(), torch.float32), "one-element int64 tensor"),
    ]
    if device == "cpu":  # the CUDA kernel reads tokens and position on the device: NaN rows there (test_decoder_step_ops)
        cases += [
            ((table, positions, torch.cat([tokens, torch.tensor([[-1]])]), p, torch.float32),
             r"tokens must be in \[0, 50\), got values in \[-1"),
            ((table, positions, tokens, torch.tensor([12]), torch.float32), r"position must be in \[0, 12\), got 12"),
        ]
    return cases


def _self_attention_bad(device):
    qkv, k_cache, v_cache, pos = (t.to(device) for t in self_attention_case(2, 16, 64, 5))
    cases = [
        ((qkv, k_cache, v_cache, pos.int(), 4), "one-element int64 tensor"),
        ((qkv[:, :100].contiguous(), k_cache, v_cache, pos, 4), "qkv must have shape"),
        ((qkv, k_cache, v_cache, pos, 5), "not divisible by n_head"),
    ]
    if device == "cpu":  # CUDA reads the position on the device
        cases.append(((qkv, k_cache, v_cache, torch.tensor([16]), 4), r"position must be in \[0, 16\)"))
    return cases


def _cross_attention_bad(device):
    q, k, v = (t.to(device) for t in cross_case(2, 3, 40, 128))
    return [
        ((q[:5].contiguous(), k, v, 2), "multiple of the 2 audio windows"),
        ((q, k[0], v, 2), "k must be 3-D"),
        ((q, k, v, 3), "not divisible by n_head"),
        ((q, k, v[:, :10].contiguous(), 2), "v must have shape"),
    ]


def _cross_query_bad(device):
    x, ln_w, ln_b, q_weight, q_bias, k, v = (t.to(device) for t in cross_query_case(1, 2, 20, 128))
    return [
        ((x, ln_w, ln_b, q_weight[:64], q_bias[:64], k, v, 2), r"q_weight must be \[128, 128\]"),
        ((x, ln_w, ln_b, q_weight, q_bias, k, v, 3), "not divisible by n_head"),
        ((x, ln_w, ln_b, q_weight, q_bias, k[0], v, 2), "k must be 3-D"),
        ((x, ln_w[:64], ln_b, q_weight, q_bias, k, v, 2), "ln_weight"),
    ]


def _greedy_bad(device):
    logits, tokens, sums = (t.to(device) for t in greedy_case(3, 500, 11, 4, []))
    ws = ops.decoder_greedy_workspace(3, device)
    mask = torch.zeros(500, dtype=torch.bool, device=device)
    cases = [
        ((logits, tokens, sums, ws, 8, 11, None), r"length must be in \[1, 8\)"),
        ((logits.double(), tokens, sums, ws, 4, 11, None), "2-D float32"),
        ((logits, tokens.int(), sums, ws, 4, 11, None), "contiguous int64"),
        ((logits, tokens, sums[:2], ws, 4, 11, None), "sum_logprobs must be a contiguous float32"),
        ((logits, tokens, sums, ws, 4, 500, None), r"eot must be a token id in \[0, 500\)"),
        ((logits, tokens, sums, ops.decoder_greedy_workspace(2, device), 4, 11, None),
         f"workspace must be a contiguous int32 tensor of at least {ws.numel()} elements"),
        ((logits, tokens, sums, ws.long(), 4, 11, None), "workspace must be a contiguous int32"),
        ((logits, tokens, sums, ws, 4, 11, mask[:499]), r"suppress must be a contiguous bool tensor \[500\]"),
        ((logits, tokens, sums, ws, 4, 11, mask.int()), r"suppress must be a contiguous bool tensor \[500\]"),
    ]
    if device == "cuda":
        cases.append(((logits, tokens, sums, ws, 4, 11, mask.cpu()), "all inputs must be on one device.*suppress"))
    return cases


def _timestamp_bad(device):
    logits, tokens = timestamp_case(TIMESTAMP_CASES["closed-pair"], seed=0)
    logits, tokens = logits.to(device), tokens[:, :5].to(device)
    return [
        ((logits, tokens, 3, EOT, TB, NO_TS, -1), "eot < timestamp_begin"),
        ((logits, tokens, 6, TB, EOT, NO_TS, -1), r"sample_begin 6 must be in \[0, 5\]"),
        ((logits, tokens[:2], 3, TB, EOT, NO_TS, -1), "tokens must be an int64"),
        ((logits.half(), tokens, 3, TB, EOT, NO_TS, -1), "2-D float32"),
    ]


BAD_INPUTS = {
    "conv_stem": lambda dev: _encoder_op_bad("conv_stem", dev),
    "layer_norm": lambda dev: _encoder_op_bad("layer_norm", dev),
    "linear": lambda dev: _encoder_op_bad("linear", dev),
    "attention": lambda dev: _encoder_op_bad("attention", dev),
    "encoder_forward": _encoder_forward_bad,
    "decoder_linear": _decoder_linear_bad,
    "decoder_embedding": _decoder_embedding_bad,
    "decoder_self_attention": _self_attention_bad,
    "decoder_cross_attention": _cross_attention_bad,
    "decoder_cross_query_attention": _cross_query_bad,
    "decoder_greedy_update": _greedy_bad,
    "decoder_timestamp_rules": _timestamp_bad,
}
assert set(BAD_INPUTS) == set(SAMPLES), "every op has sample inputs and bad inputs"


def bad_inputs(op, device):
    """(argument tuple, fragment of the expected error message) pairs: wrong shapes, dtypes and devices."""
    return BAD_INPUTS[op](device)
