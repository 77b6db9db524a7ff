import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastwhisper  # noqa: F401  (registers torch.ops.fastwhisper)

HAS_CUDA = torch.cuda.is_available() and fastwhisper.WITH_CUDA

# Whisper audio-encoder dims: n_mels, n_ctx, n_state, n_head, n_layer
ENCODER_DIMS = {
    "tiny": (80, 1500, 384, 6, 4),
    "base": (80, 1500, 512, 8, 6),
    "small": (80, 1500, 768, 12, 12),
    "medium": (80, 1500, 1024, 16, 24),
    "large-v3": (128, 1500, 1280, 20, 32),
    "turbo": (128, 1500, 1280, 20, 32),
}

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build of fastwhisper")

DEVICES = ["cpu", pytest.param("cuda", marks=[requires_cuda, pytest.mark.cuda])]


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_python_with_env(code: str, timeout: float = 600, **variables: str) -> subprocess.CompletedProcess:
    """`code` (dedented) in a fresh Python process with the tests' folder importable and `variables` set in its
    environment: for the switches fastwhisper reads once per process."""
    env = dict(os.environ, **variables)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [TESTS_DIR, env.get("PYTHONPATH", "")] if p)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|, computed in float64; NaN anywhere gives inf."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    return ((out64 - ref64).abs().max() / ref64.abs().max().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def _strict_fp32():
    """fp32 means fp32: no TF32 in cuBLAS or cuDNN while tests run."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
