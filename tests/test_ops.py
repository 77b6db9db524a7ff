"""Each fastwhisper op against a float64 reference on its sample inputs (op_samples.py), torch.library.opcheck on
the same samples, and the encoder ops' particular paths (fused epilogues, strided and unaligned operands)."""

import itertools
import warnings

import pytest
import torch

from conftest import DEVICES, rel_err, requires_cuda
from fastwhisper import ops
from op_samples import (
    LOW_PRECISION,
    OPS,
    REFERENCES,
    attention_args,
    check_linear_cuda,
    conv_stem_args,
    encoder_sample,
    layer_norm_args,
    linear_args,
    reference,
    sample_inputs,
    tolerance,
    torch_low_precision,
    within_torch_error,
)

# (device, dtype): every dtype each device computes in
DEVICE_DTYPES = [("cpu", torch.float32)] + [pytest.param("cuda", dt, marks=[requires_cuda, pytest.mark.gpu],
                                                         id=f"cuda-{str(dt).split('.')[-1]}")
                                            for dt in [torch.float32] + LOW_PRECISION]


def _clone(arg):
    if isinstance(arg, torch.Tensor):
        return arg.clone()
    if isinstance(arg, list):
        return [_clone(a) for a in arg]
    return arg


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("op", list(REFERENCES))
def test_op_matches_float64_reference(op, device, dtype):
    """Every sample of the op, within the tolerance table's bound of its float64 reference."""
    for i, args in enumerate(sample_inputs(op, device, dtype)):
        expected = reference(op, _clone(list(args)))  # before the op: some write their inputs
        out = getattr(torch.ops.fastwhisper, op)(*args)
        assert out.shape == expected.shape and out.device.type == device, (op, i)
        assert rel_err(out, expected) <= tolerance("op", dtype), (op, i, rel_err(out, expected))


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, device, dtype):
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of every op on its samples."""
    for args in sample_inputs(op, device, dtype):
        torch.library.opcheck(getattr(torch.ops.fastwhisper, op), args)


# ---- the encoder's ops on more shapes: float32 on every device, fp16/bf16 within 2x PyTorch's own error ---------

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
    expected = reference(name, args)
    assert out.shape == expected.shape and out.dtype == torch.float32 and out.device.type == device
    assert rel_err(out, expected) <= tolerance("op", torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_layer_norm_accepts_params_in_input_dtype_and_fp32(device):
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    for dtype in dtypes:
        for pdtype in {torch.float32, dtype}:
            args = layer_norm_args((4, 9, 130), device, dtype=dtype, param_dtype=pdtype)
            out = ops.layer_norm(*args)
            assert out.dtype == dtype
            expected = reference("layer_norm", args)
            assert within_torch_error(out, expected, torch_low_precision("layer_norm", args)) or \
                rel_err(out, expected) <= tolerance("op", torch.float32)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("name,case", ALL_CASES)
def test_op_low_precision_within_2x_torch_error(name, case, dtype):
    args = build(name, case, "cuda", dtype=dtype)
    out = getattr(ops, name)(*args)
    assert out.dtype == dtype
    expected = reference(name, args)
    assert within_torch_error(out, expected, torch_low_precision(name, args)), (name, dtype)


@requires_cuda
@pytest.mark.gpu
def test_linear_fp32_and_ops_on_strided_inputs_cuda():
    # q/k/v as column slices of one fused projection (non-contiguous rows)
    qkv = torch.randn(2, 31, 3 * 96, device="cuda")
    q, k, v = qkv.split(96, dim=-1)
    out = ops.attention(q, k, v, 6)
    assert rel_err(out, reference("attention", [q, k, v, 6])) <= tolerance("op", torch.float32)


def test_attention_strided_inputs_cpu():
    qkv = torch.randn(2, 31, 3 * 96)
    q, k, v = qkv.split(96, dim=-1)
    assert rel_err(ops.attention(q, k, v, 6), reference("attention", [q, k, v, 6])) <= tolerance("op", torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_gives_empty_output(device):
    assert ops.layer_norm(*layer_norm_args((0, 16), device)).shape == (0, 16)
    assert ops.linear(*linear_args((0, 3), 8, 5, True, True, True, device)).shape == (0, 3, 5)
    assert ops.attention(*attention_args(0, 4, 4, 2, 8, device)).shape == (0, 4, 16)
    assert ops.conv_stem(*conv_stem_args(0, 5, 9, 8, device)).shape == (0, 5, 8)


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_forward_packed_qkv_matches_separate_projections(device):
    """One GEMM over the packed query|key|value weights gives what the three separate GEMMs give; the
    tensors packed_qkv replaces are not read (zeroing them changes nothing)."""
    dtypes = [torch.float32] if device == "cpu" else [torch.float32] + LOW_PRECISION
    replaced = ["attn.query.weight", "attn.query.bias", "attn.key.weight", "attn.value.weight", "attn.value.bias"]
    for dtype in dtypes:
        args = encoder_sample(device, dtype)
        separate = ops.encoder_forward(*args)
        packed = ops.pack_qkv(args[6])
        layer0 = {name: packed[i] for i, name in enumerate(ops.ENCODER_PACKED_QKV.names)}
        assert tuple(layer0["attn.qkv.weight"].shape) == (96, 32) and tuple(layer0["attn.qkv.bias"].shape) == (96,)
        assert not layer0["attn.qkv.bias"][32:64].any()  # the key has no bias
        blocks = [t.clone() for t in args[6]]
        for base in range(0, len(blocks), len(ops.ENCODER_BLOCK)):
            for name in replaced:
                blocks[base + ops.ENCODER_BLOCK.index(name)].zero_()
        out = ops.encoder_forward(*args[:6], blocks, *args[7:], packed_qkv=packed)
        assert rel_err(out, separate) <= tolerance("paths", dtype), (dtype, rel_err(out, separate))


# ---- CUDA linear: cuBLASLt epilogues (bias, beta=1 residual) and the vectorized fallback epilogue ----------

# (lead, K, N): rows 1, 3 and 1501 take cuBLASLt (K, N multiples of 8); N = 13 and K = 36 take the fallback.
FUSED_LINEAR_SHAPES = [((1,), 64, 48), ((3,), 40, 24), ((1501,), 384, 1536), ((2, 7), 64, 13), ((5,), 36, 16)]
# name: (bias, residual, gelu)
FUSED_LINEAR_EPILOGUES = {"plain": (False, False, False), "bias": (True, False, False),
                          "bias_residual": (True, True, False), "bias_gelu": (True, False, True),
                          "residual": (False, True, False), "all": (True, True, True)}


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
@pytest.mark.parametrize("epilogue", list(FUSED_LINEAR_EPILOGUES))
@pytest.mark.parametrize("shape", FUSED_LINEAR_SHAPES)
def test_linear_fused_epilogue_cuda(shape, epilogue, dtype):
    lead, k, n = shape
    gen = torch.Generator().manual_seed(k * n + len(lead))
    check_linear_cuda(linear_args(lead, k, n, *FUSED_LINEAR_EPILOGUES[epilogue], "cuda", dtype, gen=gen), dtype)


@requires_cuda
@pytest.mark.gpu
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
@pytest.mark.gpu
def test_linear_fp32_follows_tf32_setting_cuda():
    """allow_tf32 on: fp32 may use TF32 (error ~1e-3); off (the test default): full fp32."""
    gen = torch.Generator().manual_seed(3)
    args = linear_args((64,), 256, 128, True, True, False, "cuda", torch.float32, gen=gen)
    expected = reference("linear", args)
    assert rel_err(ops.linear(*args), expected) <= tolerance("op", torch.float32)
    torch.backends.cuda.matmul.allow_tf32 = True  # restored by the _strict_fp32 fixture
    assert rel_err(ops.linear(*args), expected) <= 5e-3


# ---- CUDA LayerNorm: vectorized register kernel and scalar fallback ---------------------------------------

# d: multiples of 8 (vectorized), 33 and 1283 (not: fallback), 4104 (fp16 rows too long for registers)
LN_SHAPES = [(1, 1280), (3, 5, 384), (7, 1024), (2, 2048), (4, 33), (2, 1283), (3, 4104), (1500, 1280)]


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
@pytest.mark.parametrize("shape", LN_SHAPES)
def test_layer_norm_vectorized_and_fallback_cuda(shape, dtype):
    for pdtype in {torch.float32, dtype}:
        gen = torch.Generator().manual_seed(shape[-1])
        args = layer_norm_args(shape, "cuda", dtype=dtype, param_dtype=pdtype, gen=gen)
        out = ops.layer_norm(*args)
        expected = reference("layer_norm", args)
        assert out.dtype == dtype and out.shape == expected.shape
        assert within_torch_error(out, expected, torch_low_precision("layer_norm", args)) or \
            rel_err(out, expected) <= tolerance("op", torch.float32), (shape, dtype, pdtype)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
def test_layer_norm_vectorized_matches_scalar_path_cuda(dtype):
    """The same rows through the register kernel (aligned) and the scalar kernel (x off 16-byte alignment)."""
    x, w, b, eps = layer_norm_args((300, 1280), "cuda", dtype=dtype, gen=torch.Generator().manual_seed(5))
    unaligned = torch.empty(x.numel() + 1, device="cuda", dtype=dtype)[1:].view(x.shape)
    unaligned.copy_(x)
    fast, scalar = ops.layer_norm(x, w, b, eps), ops.layer_norm(unaligned, w, b, eps)
    assert rel_err(fast, scalar) <= tolerance("paths", dtype)


# ---- CUDA attention: cuDNN on Whisper's shape, flash attention elsewhere ------------------------------------


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_attention_whisper_shape_cuda(dtype):
    """Whisper's encoder attention (1500 positions, 20 heads of 64): within 2x PyTorch's own error of the float64
    reference, with no fall-back warning (cuDNN, where ATen says it applies, must not fail on it)."""
    args = attention_args(2, 1500, 1500, 20, 64, "cuda", dtype, gen=torch.Generator().manual_seed(15))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ops.attention(*args)
    assert not [str(w.message) for w in caught if "cuDNN attention failed" in str(w.message)]
    assert out.dtype == dtype
    assert within_torch_error(out, reference("attention", args), torch_low_precision("attention", args))


# ---- CUDA linear: cuBLASLt's algorithm for problems of many rows ---------------------------------------------

# (rows, K, N, bias, residual): large-v3's attention output projection (with the residual) at batch 4, its
# second MLP layer at batch 1 (below the rows whose algorithm is timed), tiny's fused QKV projection at batch 8;
# row counts no other test uses, so each problem meets the algorithm cache for the first time here.
MANY_ROWS = [(6007, 1280, 1280, True, True), (1499, 5120, 1280, True, True), (12007, 384, 1152, True, False)]


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
@pytest.mark.parametrize("problem", MANY_ROWS, ids=lambda p: f"{p[0]}x{p[1]}x{p[2]}")
def test_chosen_gemm_algorithm_matches_reference_and_stays(problem, dtype):
    """From 6000 rows the first eager call times cuBLASLt's candidates (running each several times) and keeps
    the fastest: the timing runs leave no trace in the answer (the residual is added once), and the problem
    keeps one algorithm (a repeated call agrees bit for bit)."""
    rows, k, n, bias, residual = problem
    gen = torch.Generator().manual_seed(rows + k + n)
    args = linear_args((rows,), k, n, bias, residual, False, "cuda", dtype, gen=gen)
    first = ops.linear(*args)  # the call that chooses
    check_linear_cuda(args, dtype)
    assert torch.equal(ops.linear(*args), first)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_gemm_problem_first_met_under_capture(dtype):
    """Under CUDA graph capture nothing can be timed: the heuristic's choice is kept, computed correctly, and
    the eager calls of the problem run the same algorithm afterwards. One eager call of another problem comes
    first, as in any process that captures after it has run (cuBLASLt's handle and workspace are made then; a
    process whose very first CUDA library call is captured fails in cuBLASLt, with or without fastwhisper)."""
    ops.linear(*linear_args((8,), 64, 64, True, True, False, "cuda", dtype, gen=torch.Generator().manual_seed(1)))
    gen = torch.Generator().manual_seed(29)
    args = linear_args((6203,), 768, 768, True, True, False, "cuda", dtype, gen=gen)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # no eager call of this problem: its choice is made while capturing
        captured = ops.linear(*args)
    graph.replay()
    torch.cuda.synchronize()
    check_linear_cuda(args, dtype)
    assert torch.equal(captured, ops.linear(*args))


def test_a_device_mix_inside_a_tensor_list_names_the_element():
    args = list(encoder_sample("cpu", torch.float32))
    blocks = list(args[6])
    blocks[3] = blocks[3].to("meta")
    with pytest.raises(RuntimeError, match=r"encoder_forward: all inputs must be on one device; mel is on cpu but "
                                           r"block_weights\[3\] is on meta"):
        ops.encoder_forward(*args[:6], blocks, *args[7:])


@pytest.mark.parametrize("op", OPS)
def test_device_mix_is_refused_before_dispatch_even_under_fake_tensors(op):
    """A meta tensor among CPU tensors is refused by the op's C++ check at BackendSelect, ahead of any device
    kernel and of the fake (meta) kernel, in inference mode too; the same mix traced under FakeTensorMode is
    refused by the fake."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastwhisper::{op}", "BackendSelect")
    args = list(sample_inputs(op, "cpu", torch.float32)[0])
    slot = max(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))  # the last tensor argument
    mixed = args[:slot] + [args[slot].to("meta")] + args[slot + 1:]
    with pytest.raises(RuntimeError, match=f"fastwhisper.{op}: all inputs must be on one device; .* is on meta"):
        getattr(torch.ops.fastwhisper, op)(*mixed)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="all inputs must be on one device; "):
        getattr(torch.ops.fastwhisper, op)(*mixed)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        faked = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in mixed]
        with pytest.raises(RuntimeError, match="all inputs must be on one device"):
            getattr(torch.ops.fastwhisper, op)(*faked)
