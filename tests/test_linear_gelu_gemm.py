"""The encoder MLP's first layer on an H100: one CUTLASS GEMM with the bias and exact-erf GELU in its
epilogue, against the float64 reference, where it applies; cuBLASLt plus the GELU pass elsewhere. Which
kernels ran is read from the profiler."""

import pytest
import torch

import fastwhisper
from conftest import ENCODER_DIMS, requires_cuda
from fastwhisper import _build_info, ops
from op_samples import check_linear_cuda, linear_args, random_encoder, random_mel, within_torch_error
from reference import encoder_reference

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


# (rows, K, N): fc1 of large-v3 and tiny at batch 8 (1500 frames per window), small at batch 6 with one row
# more (no multiple of the tile): each at least four waves of 128x256 tiles on an H100.
FUSED_SHAPES = [(12000, 1280, 5120), (12000, 384, 1536), (9001, 768, 3072)]


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", FUSED_SHAPES)
def test_gelu_gemm_matches_reference_and_takes_cutlass(shape, dtype):
    if not (_build_info.CUTLASS_GELU_GEMM and is_hopper()):
        pytest.skip("the fused GELU GEMM needs an H100 (sm_90) and a build with CUTLASS")
    rows, k, n = shape
    gen = torch.Generator().manual_seed(rows + k + n)
    args = linear_args((rows,), k, n, True, False, True, "cuda", dtype, gen=gen)
    _, names = kernels_of(lambda: ops.linear(*args))
    assert ran_cutlass(names) and not any(GELU_PASS in name for name in names), names
    check_linear_cuda(args, dtype)  # within 2x torch's own low-precision error of the float64 reference


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gelu_gemm_declines_small_or_unfit_problems(dtype):
    """Fewer than four waves of tiles (decoding rows; large-v3 and tiny at batch 1), a residual, no bias,
    unaligned rows: the cuBLASLt path, with the same answer."""
    gen = torch.Generator().manual_seed(11)
    cases = [linear_args((5,), 1280, 5120, True, False, True, "cuda", dtype, gen=gen),
             linear_args((1500,), 1280, 5120, True, False, True, "cuda", dtype, gen=gen),
             linear_args((1500,), 384, 1536, True, False, True, "cuda", dtype, gen=gen),
             linear_args((12000,), 384, 1536, True, True, True, "cuda", dtype, gen=gen),
             linear_args((12000,), 384, 1536, False, False, True, "cuda", dtype, gen=gen)]
    x, w, b, _, _ = linear_args((12000,), 384, 1536, True, False, True, "cuda", dtype, gen=gen)
    x_unaligned = torch.zeros(12000 * 384 + 1, device="cuda", dtype=dtype)[1:].view(12000, 384)
    x_unaligned.copy_(x)
    cases.append([x_unaligned, w, b, None, True])
    for args in cases:
        _, names = kernels_of(lambda: ops.linear(*args))
        assert not ran_cutlass(names), (args[0].shape, names)
        check_linear_cuda(args, dtype)


@requires_cuda
@pytest.mark.gpu
def test_gelu_gemm_in_a_cuda_graph():
    """Captured and replayed (the encoder runs as a CUDA graph): replays give the eager result."""
    gen = torch.Generator().manual_seed(5)
    x, w, b, _, _ = linear_args((12000,), 384, 1536, True, False, True, "cuda", torch.float16, gen=gen)
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


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_encoder_at_batch_8_with_the_gelu_gemm(dtype):
    """tiny's encoder at batch 8 (its CUDA graph) takes the fused GEMM for every MLP, and its output stays within
    2x openai-whisper's own error in that dtype of the float64 reference."""
    if not (_build_info.CUTLASS_GELU_GEMM and is_hopper()):
        pytest.skip("the fused GELU GEMM needs an H100 (sm_90) and a build with CUTLASS")
    enc = random_encoder(ENCODER_DIMS["tiny"]).cuda()
    fast = fastwhisper.FastAudioEncoder.from_audio_encoder(enc)
    mel = random_mel(8, enc.conv1.in_channels, device="cuda")
    with torch.no_grad():
        fast(mel.to(dtype))  # captures the graph
        out, names = kernels_of(lambda: fast(mel.to(dtype)))  # one replay
        assert sum(ran_cutlass([name]) for name in names) == len(enc.blocks), names
        expected64 = encoder_reference(enc, mel)
        assert within_torch_error(out, expected64, enc(mel.to(dtype))), dtype
