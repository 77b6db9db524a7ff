"""Sample inputs of every fastwhisper op, their float64 references, their bad inputs, and the tolerance table.

In the style of pytorch/extension-cpp's tests: for each op, ``sample_inputs(op, device, dtype)`` gives argument
tuples of awkward shapes; they feed the correctness test against the float64 ``reference`` (test_ops.py),
``torch.library.opcheck`` (test_ops.py) and, through ``bad_inputs(op, device)``, the bad-input tests
(test_bad_input.py). The argument builders (op_builders.py) are re-exported here: the op tests import what they
share from this module, so no test file imports another.
"""

import torch

import reference as ref
from conftest import rel_err
from fastwhisper import ops
from op_builders import (  # noqa: F401  (re-exported: the op tests import every builder from here)
    attention_args,
    block_tensor,
    conv_stem_args,
    cross_case,
    cross_query_case,
    cross_query_reference,
    cross_reference,
    decoder_linear_reference,
    dims_of,
    embedding_case,
    encoder_forward_reference,
    encoder_sample,
    EOT,
    fast_copy,
    greedy_case,
    greedy_reference,
    layer_norm_args,
    linear_args,
    linear_case,
    linear_case_on,
    LINEAR_CASES,
    NO_TS,
    randn,
    random_encoder,
    random_mel,
    self_attention_case,
    self_attention_reference,
    TB,
    timestamp_case,
    TIMESTAMP_CASES,
    torch_low_precision,
    V,
    whisper_embedding,
)

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
            "linear": [((lin[0].cpu(),) + tuple(lin[1:]),
                        "all inputs must be on one device; x is on cpu but weight is on cuda")],
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
