"""Builders of the fastwhisper ops' arguments and their float64 references, shared by the op tests through
op_samples.py (which re-exports them): random arguments of given shapes for each op, small random encoders and
mels, and the decoder step ops' cases."""

import math

import torch
import torch.nn.functional as F
from whisper.model import AudioEncoder

import fastwhisper
import reference as ref
from fastwhisper import ops


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
