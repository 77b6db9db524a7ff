"""Each fastwhisper op against a float64 PyTorch reference, on awkward shapes, plus opcheck."""

import itertools
import math

import pytest
import torch

import reference as ref
from conftest import DEVICES, rel_err, requires_cuda
from fastwhisper import ops

FP32_TOL = 1e-5
LOW_PRECISION = [torch.float16, torch.bfloat16]


def randn(*shape, device, dtype=torch.float32, scale=1.0, gen=None):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


# ---- input builders: (args for the op, the reference function) -----------------------------


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


def reference_of(name, args):
    """The float64 reference output for op `name` on `args`."""
    a64 = [x.double() if isinstance(x, torch.Tensor) else x for x in args]
    return getattr(ref, name)(*a64)


def torch_low_precision(name, args):
    """PyTorch's own result in the args' low precision (the yardstick for fp16/bf16 error)."""
    if name == "layer_norm":  # openai-whisper's LayerNorm: fp32 inside, cast back
        x, w, b, eps = args
        return ref.layer_norm(x.float(), w.float(), b.float(), eps).to(x.dtype)
    if name == "attention":
        q, k, v, n_head = args
        b, tq, d = q.shape
        split = lambda t: t.reshape(b, t.shape[1], n_head, d // n_head).transpose(1, 2)  # noqa: E731
        o = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
        return o.transpose(1, 2).reshape(b, tq, d)
    if name == "conv_stem":
        mel, w1, b1, w2, b2, pos = args
        return ref.conv_stem(mel, w1, b1, w2, b2, torch.zeros_like(pos, dtype=mel.dtype)).float().add(pos).to(mel.dtype)
    return getattr(ref, name)(*args)


CASES = {
    "conv_stem": [dict(batch=1, n_mels=7, frames=11, d=10), dict(batch=3, n_mels=80, frames=50, d=24),
                  dict(batch=2, n_mels=128, frames=64, d=40)],
    "layer_norm": [dict(shape=(5, 33)), dict(shape=(3, 7, 384)), dict(shape=(1, 1, 1280))],
    "linear": [dict(lead=lead, k=k, n=n, bias=b, residual=r, gelu=g)
               for (lead, k, n), (b, r, g) in itertools.product(
                   [((3, 17), 40, 24), ((1, 5), 384, 1536)], itertools.product([False, True], repeat=3))],
    "attention": [dict(batch=1, n_q=7, n_kv=7, n_head=1, head_dim=8), dict(batch=3, n_q=33, n_kv=33, n_head=6, head_dim=64),
                  dict(batch=2, n_q=5, n_kv=19, n_head=3, head_dim=16), dict(batch=3, n_q=50, n_kv=50, n_head=20, head_dim=64),
                  dict(batch=1, n_q=17, n_kv=17, n_head=2, head_dim=5)],
}
BUILDERS = {"conv_stem": conv_stem_args, "layer_norm": layer_norm_args, "linear": linear_args,
            "attention": attention_args}
ALL_CASES = [(name, i) for name, cases in CASES.items() for i in range(len(cases))]


def build(name, i, device, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(1000 * seed + i)
    return BUILDERS[name](**CASES[name][i], device=device, dtype=dtype, gen=gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,case", ALL_CASES)
def test_op_fp32_matches_float64_reference(name, case, device):
    args = build(name, case, device)
    out = getattr(ops, name)(*args)
    expected = reference_of(name, args)
    assert out.shape == expected.shape and out.dtype == torch.float32 and out.device.type == device
    assert rel_err(out, expected) <= FP32_TOL


@pytest.mark.parametrize("device", DEVICES)
def test_layer_norm_accepts_params_in_input_dtype_and_fp32(device):
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    for dtype in dtypes:
        for pdtype in {torch.float32, dtype}:
            args = layer_norm_args((4, 9, 130), device, dtype=dtype, param_dtype=pdtype)
            out = ops.layer_norm(*args)
            assert out.dtype == dtype
            err, torch_err = rel_err(out, reference_of("layer_norm", args)), rel_err(
                torch_low_precision("layer_norm", args), reference_of("layer_norm", args))
            assert err <= max(2 * torch_err, FP32_TOL)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("name,case", ALL_CASES)
def test_op_low_precision_within_2x_torch_error(name, case, dtype):
    args = build(name, case, "cuda", dtype=dtype)
    out = getattr(ops, name)(*args)
    assert out.dtype == dtype
    expected = reference_of(name, args)
    err = rel_err(out, expected)
    torch_err = rel_err(torch_low_precision(name, args), expected)
    assert err <= 2 * torch_err + 1e-6, f"{name} {dtype}: ours {err:.3e} vs torch {torch_err:.3e}"


@requires_cuda
@pytest.mark.cuda
def test_linear_fp32_and_ops_on_strided_inputs_cuda():
    # q/k/v as column slices of one fused projection (non-contiguous rows)
    qkv = torch.randn(2, 31, 3 * 96, device="cuda")
    q, k, v = qkv.split(96, dim=-1)
    out = ops.attention(q, k, v, 6)
    assert rel_err(out, ref.attention(q.double(), k.double(), v.double(), 6)) <= FP32_TOL


def test_attention_strided_inputs_cpu():
    qkv = torch.randn(2, 31, 3 * 96)
    q, k, v = qkv.split(96, dim=-1)
    assert rel_err(ops.attention(q, k, v, 6), ref.attention(q.double(), k.double(), v.double(), 6)) <= FP32_TOL


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_gives_empty_output(device):
    assert ops.layer_norm(*layer_norm_args((0, 16), device)).shape == (0, 16)
    assert ops.linear(*linear_args((0, 3), 8, 5, True, True, True, device)).shape == (0, 3, 5)
    assert ops.attention(*attention_args(0, 4, 4, 2, 8, device)).shape == (0, 4, 16)
    assert ops.conv_stem(*conv_stem_args(0, 5, 9, 8, device)).shape == (0, 5, 8)


# ---- opcheck: schema, fake tensor, AOT dispatch ----------------------------------------------

OPCHECK_SAMPLES = {
    "conv_stem": lambda dev, dt: conv_stem_args(2, 16, 21, 12, dev, dt),
    "layer_norm": lambda dev, dt: layer_norm_args((3, 5, 48), dev, dt),
    "linear": lambda dev, dt: linear_args((2, 7), 32, 20, True, True, True, dev, dt),
    "attention": lambda dev, dt: attention_args(2, 9, 9, 4, 16, dev, dt),
}


def encoder_sample(device, dtype, n_layer=2):
    torch.manual_seed(0)
    d, n_mels, frames = 32, 16, 40
    stem = conv_stem_args(2, n_mels, frames, d, device, dtype)
    blocks = []
    for _ in range(n_layer):
        blocks += [torch.ones(d, device=device), torch.zeros(d, device=device)]
        blocks += [randn(d, d, device=device, dtype=dtype, scale=0.2), randn(d, device=device, dtype=dtype),
                   randn(d, d, device=device, dtype=dtype, scale=0.2), randn(d, d, device=device, dtype=dtype, scale=0.2),
                   randn(d, device=device, dtype=dtype), randn(d, d, device=device, dtype=dtype, scale=0.2),
                   randn(d, device=device, dtype=dtype)]
        blocks += [torch.ones(d, device=device), torch.zeros(d, device=device)]
        blocks += [randn(4 * d, d, device=device, dtype=dtype, scale=0.2), randn(4 * d, device=device, dtype=dtype),
                   randn(d, 4 * d, device=device, dtype=dtype, scale=0.1), randn(d, device=device, dtype=dtype)]
    return stem + [blocks, torch.ones(d, device=device), torch.zeros(d, device=device), 4]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["conv_stem", "layer_norm", "linear", "attention", "encoder_forward"])
def test_opcheck(name, device):
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    for dtype in dtypes:
        args = encoder_sample(device, dtype) if name == "encoder_forward" else OPCHECK_SAMPLES[name](device, dtype)
        torch.library.opcheck(getattr(torch.ops.fastwhisper, name), tuple(args))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_encoder_forward_packed_qkv(device):
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    for dtype in dtypes:
        args = encoder_sample(device, dtype)
        torch.library.opcheck(torch.ops.fastwhisper.encoder_forward, tuple(args) + (ops.pack_qkv(args[6]),))


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_forward_packed_qkv_matches_separate_projections(device):
    """One GEMM over the packed query|key|value weights gives what the three separate GEMMs give; the
    tensors packed_qkv replaces are not read (zeroing them changes nothing)."""
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    for dtype in dtypes:
        args = encoder_sample(device, dtype)
        separate = ops.encoder_forward(*args)
        packed = ops.pack_qkv(args[6])
        assert [tuple(t.shape) for t in packed[:2]] == [(96, 32), (96,)] and not packed[1][32:64].any()
        blocks = [t.clone() for t in args[6]]
        for base in range(0, len(blocks), len(ops.BLOCK_PARAM_NAMES)):
            for slot in (2, 3, 4, 5, 6):  # query weight/bias, key weight, value weight/bias
                blocks[base + slot].zero_()
        out = ops.encoder_forward(*args[:6], blocks, *args[7:], packed_qkv=packed)
        tol = {torch.float32: FP32_TOL, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}[dtype]
        assert rel_err(out, separate) <= tol, (dtype, rel_err(out, separate))


# ---- CUDA linear: cuBLASLt epilogues (bias, beta=1 residual) and the vectorized fallback epilogue ----------

# (lead, K, N): rows 1, 3 and 1501 take cuBLASLt (K, N multiples of 8); N = 13 and K = 36 take the fallback.
FUSED_LINEAR_SHAPES = [((1,), 64, 48), ((3,), 40, 24), ((1501,), 384, 1536), ((2, 7), 64, 13), ((5,), 36, 16)]
# name: (bias, residual, gelu)
FUSED_LINEAR_EPILOGUES = {"plain": (False, False, False), "bias": (True, False, False),
                          "bias_residual": (True, True, False), "bias_gelu": (True, False, True),
                          "residual": (False, True, False), "all": (True, True, True)}


def check_linear_cuda(args, dtype):
    out = ops.linear(*args)
    expected = reference_of("linear", args)
    assert out.dtype == dtype and out.shape == expected.shape
    if dtype == torch.float32:
        assert rel_err(out, expected) <= FP32_TOL
    else:  # one rounding (fused) instead of torch's two: within 2x torch's own error
        err, torch_err = rel_err(out, expected), rel_err(torch_low_precision("linear", args), expected)
        assert err <= 2 * torch_err + 1e-6, f"{dtype}: ours {err:.3e} vs torch {torch_err:.3e}"


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
@pytest.mark.parametrize("epilogue", list(FUSED_LINEAR_EPILOGUES))
@pytest.mark.parametrize("shape", FUSED_LINEAR_SHAPES)
def test_linear_fused_epilogue_cuda(shape, epilogue, dtype):
    lead, k, n = shape
    gen = torch.Generator().manual_seed(k * n + len(lead))
    check_linear_cuda(linear_args(lead, k, n, *FUSED_LINEAR_EPILOGUES[epilogue], "cuda", dtype, gen=gen), dtype)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
def test_linear_unaligned_and_strided_operands_cuda(dtype):
    """Pointers off 16-byte alignment and non-contiguous rows: cuBLASLt declines, the fallback (scalar
    epilogue) gives the same answer."""
    gen = torch.Generator().manual_seed(7)
    x, w, b, r, _ = linear_args((9,), 64, 40, True, True, True, "cuda", dtype, gen=gen)
    x_strided = torch.zeros(9, 72, device="cuda", dtype=dtype)[:, 3:67]
    x_strided.copy_(x)
    r_unaligned = torch.zeros(9 * 40 + 1, device="cuda", dtype=dtype)[1:].view(9, 40)
    r_unaligned.copy_(r)
    b_unaligned = torch.zeros(41, device="cuda", dtype=dtype)[1:]
    b_unaligned.copy_(b)
    for args in ([x_strided, w, b, r, True], [x, w, b_unaligned, r_unaligned, True], [x, w, b, r_unaligned, False],
                 [x_strided, w, None, r_unaligned, False]):
        check_linear_cuda(args, dtype)


@requires_cuda
@pytest.mark.cuda
def test_linear_fp32_follows_tf32_setting_cuda():
    """allow_tf32 on: fp32 may use TF32 (error ~1e-3); off (the test default): full fp32."""
    gen = torch.Generator().manual_seed(3)
    args = linear_args((64,), 256, 128, True, True, False, "cuda", torch.float32, gen=gen)
    expected = reference_of("linear", args)
    assert rel_err(ops.linear(*args), expected) <= FP32_TOL
    torch.backends.cuda.matmul.allow_tf32 = True  # restored by the _strict_fp32 fixture
    assert rel_err(ops.linear(*args), expected) <= 5e-3


# (variable, wrong word, the message's list of words, gelu): read when the op issues a GEMM; the GEMM-algorithm
# switch with a problem below the rows whose algorithm is timed, where it must be refused all the same
LINEAR_SWITCHES = [("FASTWHISPER_GELU_GEMM", "tanh", "cutlass or cublaslt", True),
                   ("FASTWHISPER_GEMM_ALGO", "fastest", "timed or heuristic", False)]


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("variable, word, words, gelu", LINEAR_SWITCHES)
def test_linear_switches_reject_unknown_words(variable, word, words, gelu, monkeypatch):
    monkeypatch.setenv(variable, word)
    x, w, b, _, _ = linear_args((600,), 64, 64, True, False, gelu, "cuda", torch.float16)
    with pytest.raises(RuntimeError, match=f"{variable} must be {words}"):
        ops.linear(x, w, b, None, gelu)


# ---- CUDA LayerNorm: vectorized register kernel and scalar fallback ---------------------------------------

# d: multiples of 8 (vectorized), 33 and 1283 (not: fallback), 4104 (fp16 rows too long for registers)
LN_SHAPES = [(1, 1280), (3, 5, 384), (7, 1024), (2, 2048), (4, 33), (2, 1283), (3, 4104), (1500, 1280)]


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
@pytest.mark.parametrize("shape", LN_SHAPES)
def test_layer_norm_vectorized_and_fallback_cuda(shape, dtype):
    for pdtype in {torch.float32, dtype}:
        gen = torch.Generator().manual_seed(shape[-1])
        args = layer_norm_args(shape, "cuda", dtype=dtype, param_dtype=pdtype, gen=gen)
        out = ops.layer_norm(*args)
        expected = reference_of("layer_norm", args)
        err, torch_err = rel_err(out, expected), rel_err(torch_low_precision("layer_norm", args), expected)
        assert out.dtype == dtype and out.shape == expected.shape
        assert err <= max(2 * torch_err, FP32_TOL), f"{shape} {dtype}/{pdtype}: {err:.3e} vs torch {torch_err:.3e}"


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
def test_layer_norm_vectorized_matches_scalar_path_cuda(dtype):
    """The same rows through the register kernel (aligned) and the scalar kernel (x off 16-byte alignment)."""
    x, w, b, eps = layer_norm_args((300, 1280), "cuda", dtype=dtype, gen=torch.Generator().manual_seed(5))
    unaligned = torch.empty(x.numel() + 1, device="cuda", dtype=dtype)[1:].view(x.shape)
    unaligned.copy_(x)
    fast, scalar = ops.layer_norm(x, w, b, eps), ops.layer_norm(unaligned, w, b, eps)
    tol = 1e-6 if dtype == torch.float32 else (1e-3 if dtype == torch.float16 else 8e-3)
    assert rel_err(fast, scalar) <= tol
