"""The encoder MLP's first layer on an H100: one CUTLASS GEMM with the bias and exact-erf GELU in its
epilogue (FASTWHISPER_GELU_GEMM=cutlass, the default) against the float64 reference and against cuBLASLt
plus the GELU pass (FASTWHISPER_GELU_GEMM=cublaslt); which kernels ran is read from the profiler."""

import pytest
import torch

from conftest import rel_err, requires_cuda
import fastwhisper
from fastwhisper import _build_info, ops
from test_ops import check_linear_cuda, linear_args

GELU_PASS = "bias_gelu_residual_kernel"


def is_hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def kernels_of(fn):
    """(the result of fn(), names of the CUDA kernels it ran)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = fn()
        torch.cuda.synchronize()
    return out, [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def ran_cutlass(names):
    return any("cutlass" in name and "GemmUniversal" in name for name in names)


# (rows, K, N): large-v3 at batch 1 (1500 frames), tiny at batch 8, M = 3001 (no multiple of the tile).
FUSED_SHAPES = [(1500, 1280, 5120), (12000, 384, 1536), (3001, 512, 2048)]


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", FUSED_SHAPES)
def test_gelu_gemm_matches_reference_and_takes_cutlass(shape, dtype, monkeypatch):
    if not (_build_info.CUTLASS_GELU_GEMM and is_hopper()):
        pytest.skip("the fused GELU GEMM needs an H100 (sm_90) and a build with CUTLASS")
    rows, k, n = shape
    gen = torch.Generator().manual_seed(rows + k + n)
    args = linear_args((rows,), k, n, True, False, True, "cuda", dtype, gen=gen)
    monkeypatch.delenv("FASTWHISPER_GELU_GEMM", raising=False)
    fused, names = kernels_of(lambda: ops.linear(*args))
    assert ran_cutlass(names) and not any(GELU_PASS in name for name in names), names
    check_linear_cuda(args, dtype)  # within 2x torch's own low-precision error of the float64 reference

    monkeypatch.setenv("FASTWHISPER_GELU_GEMM", "cublaslt")
    two_pass, names = kernels_of(lambda: ops.linear(*args))
    assert not ran_cutlass(names) and any(GELU_PASS in name for name in names), names
    # the two paths differ only in the rounding of x @ w^T + b before the GELU
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert 0 < rel_err(fused, two_pass) <= tol


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gelu_gemm_declines_small_or_unfit_problems(dtype, monkeypatch):
    """Fewer tiles than SMs (decoding rows, tiny at batch 1), a residual, no bias, unaligned rows: the
    cuBLASLt path, with the same answer."""
    monkeypatch.delenv("FASTWHISPER_GELU_GEMM", raising=False)
    gen = torch.Generator().manual_seed(11)
    cases = [linear_args((5,), 1280, 5120, True, False, True, "cuda", dtype, gen=gen),
             linear_args((1500,), 384, 1536, True, False, True, "cuda", dtype, gen=gen),
             linear_args((1500,), 1280, 5120, True, True, True, "cuda", dtype, gen=gen),
             linear_args((1500,), 1280, 5120, False, False, True, "cuda", dtype, gen=gen)]
    x, w, b, _, _ = linear_args((1500,), 1280, 5120, True, False, True, "cuda", dtype, gen=gen)
    x_unaligned = torch.zeros(1500 * 1280 + 1, device="cuda", dtype=dtype)[1:].view(1500, 1280)
    x_unaligned.copy_(x)
    cases.append([x_unaligned, w, b, None, True])
    for args in cases:
        _, names = kernels_of(lambda: ops.linear(*args))
        assert not ran_cutlass(names), (args[0].shape, names)
        check_linear_cuda(args, dtype)


@requires_cuda
@pytest.mark.cuda
def test_gelu_gemm_in_a_cuda_graph(monkeypatch):
    """Captured and replayed (the encoder runs as a CUDA graph): replays give the eager result."""
    monkeypatch.delenv("FASTWHISPER_GELU_GEMM", raising=False)
    gen = torch.Generator().manual_seed(5)
    x, w, b, _, _ = linear_args((1500,), 1280, 5120, True, False, True, "cuda", torch.float16, gen=gen)
    x0 = x.clone()
    eager = ops.linear(x, w, b, None, True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.linear(x, w, b, None, True)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.linear(x, w, b, None, True)
    for scale in (1.0, -0.5):
        x.mul_(scale)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, ops.linear(x, w, b, None, True))
    x.copy_(x0)
    graph.replay()
    assert torch.equal(captured, eager)


def test_gelu_gemm_switch_rejects_unknown_words(monkeypatch):
    if not (torch.cuda.is_available() and fastwhisper.WITH_CUDA):
        pytest.skip("the switch is read by the CUDA linear op")
    monkeypatch.setenv("FASTWHISPER_GELU_GEMM", "tanh")
    x, w, b, _, _ = linear_args((4,), 8, 8, True, False, True, "cuda", torch.float16)
    with pytest.raises(RuntimeError, match="FASTWHISPER_GELU_GEMM must be cutlass or cublaslt"):
        ops.linear(x, w, b, None, True)
