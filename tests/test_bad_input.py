"""Bad input raises a Python exception with a useful message: every op on its bad inputs (op_samples.py), and the
encoder module."""

import pytest
import torch

import fastwhisper
from conftest import DEVICES, ENCODER_DIMS, requires_cuda
from fastwhisper import ops
from op_samples import OPS, bad_inputs, encoder_sample


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_op_rejects_bad_input(op, device):
    """Wrong shapes, dtypes and devices: a RuntimeError whose message names the problem, never a crash."""
    cases = bad_inputs(op, device)
    assert cases
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            getattr(torch.ops.fastwhisper, op)(*args)


def test_pack_qkv_rejects_a_partial_layer():
    blocks = encoder_sample("cpu", torch.float32)[6]
    with pytest.raises(ValueError, match=f"{len(ops.ENCODER_BLOCK)} tensors per layer"):
        ops.pack_qkv(blocks[:-1])


def test_fast_audio_encoder_rejects_bad_input():
    enc = fastwhisper.FastAudioEncoder(*ENCODER_DIMS["tiny"]).eval()
    with torch.no_grad():
        with pytest.raises(ValueError, match="incorrect audio shape"):
            enc(torch.randn(1, 80, 2999))
        with pytest.raises(ValueError, match="incorrect audio shape"):
            enc(torch.randn(1, 128, 3000))
        with pytest.raises(ValueError, match="incorrect audio shape"):
            enc(torch.randn(80, 3000))
        with pytest.raises(TypeError, match="torch.Tensor"):
            enc([[0.0] * 3000] * 80)
        with pytest.raises(RuntimeError, match="float32 only"):
            enc(torch.randn(1, 80, 3000, dtype=torch.float64))
        with pytest.raises(ValueError, match="divisible"):
            fastwhisper.FastAudioEncoder(80, 1500, 384, 7, 4)


@requires_cuda
def test_fast_audio_encoder_rejects_a_mel_on_another_device():
    enc = fastwhisper.FastAudioEncoder(*ENCODER_DIMS["tiny"]).eval()
    with torch.no_grad(), pytest.raises(RuntimeError, match="device"):
        enc(torch.randn(1, 80, 3000, device="cuda"))
