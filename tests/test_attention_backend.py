"""FASTWHISPER_ENCODER_ATTENTION (flash | cudnn | auto): parsing, and each backend's results on CUDA.

The variable is read once per process, so every case runs in a fresh Python process."""

import subprocess

import pytest

from conftest import requires_cuda, run_python_with_env


def run_python(code: str, backend: str) -> subprocess.CompletedProcess:
    return run_python_with_env(code, FASTWHISPER_ENCODER_ATTENTION=backend)


@pytest.mark.parametrize("value,expected", [("", "auto"), ("auto", "auto"), ("flash", "flash"), ("cudnn", "cudnn")])
def test_backend_variable_is_parsed(value, expected):
    proc = run_python("import fastwhisper._C as C; print(C.encoder_attention_backend())", value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_bad_backend_value_is_a_clear_error():
    proc = run_python(
        """
        import fastwhisper._C as C
        for _ in range(2):  # raised again on a later call, not cached as something else
            try:
                C.encoder_attention_backend()
            except ValueError as exc:
                print(exc)
        """,
        "flashy",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("FASTWHISPER_ENCODER_ATTENTION must be flash, cudnn or auto" in line and "'flashy'" in line
               for line in lines)


# Runs in the child: attention vs the float64 reference (within 2x torch's own error) for odd shapes and
# Whisper's (1500 positions, 20 heads of 64); prints the CUDA kernel names of the Whisper-shape call.
CHILD = """
import warnings
import torch
import fastwhisper
import reference as ref
from conftest import rel_err
from fastwhisper import ops

def check(batch, n_q, n_kv, n_head, head_dim, dtype):
    g = torch.Generator().manual_seed(n_q * 31 + head_dim)
    d = n_head * head_dim
    q, k, v = (torch.randn(batch, n, d, generator=g, dtype=torch.float64).to("cuda", dtype) for n in (n_q, n_kv, n_kv))
    out = ops.attention(q, k, v, n_head)
    expected = ref.attention(q.double(), k.double(), v.double(), n_head)
    split = lambda t: t.reshape(batch, t.shape[1], n_head, head_dim).transpose(1, 2)
    torch_out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    torch_out = torch_out.transpose(1, 2).reshape(batch, n_q, d)
    err, torch_err = rel_err(out, expected), rel_err(torch_out, expected)
    assert out.dtype == dtype and out.shape == (batch, n_q, d)
    tol = 2 * torch_err + (1e-5 if dtype == torch.float32 else 1e-6)
    assert err <= tol, (batch, n_q, n_kv, n_head, head_dim, dtype, err, torch_err)

for dtype in (torch.float16, torch.bfloat16):
    for shape in [(1, 7, 7, 1, 8), (3, 33, 33, 6, 64), (2, 5, 19, 3, 16), (2, 50, 50, 20, 64), (1, 17, 17, 2, 5)]:
        check(*shape, dtype)
    check(1, 33, 33, 2, 32, torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check(2, 1500, 1500, 20, 64, dtype)
    fallbacks = [str(w.message) for w in caught if "cuDNN attention failed" in str(w.message)]
    assert not fallbacks, fallbacks  # cuDNN must not fail on Whisper's shape
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        check(2, 1500, 1500, 20, 64, dtype)
        torch.cuda.synchronize()
    for name in sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}):
        print("KERNEL", name)
print("OK")
"""


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["flash", "cudnn", "auto"])
def test_attention_backend_cuda(backend):
    proc = run_python(CHILD, backend)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("OK")
    kernels = [line[len("KERNEL "):] for line in proc.stdout.splitlines() if line.startswith("KERNEL ")]
    flash_ran = any("flash_fwd" in name for name in kernels)
    if kernels and backend == "flash":
        assert flash_ran, kernels
    if kernels and backend == "cudnn":
        assert not flash_ran, kernels  # cuDNN ran on Whisper's shape, no fallback to flash
