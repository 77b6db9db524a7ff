"""Bad input raises a Python exception with a useful message, from every op and from the encoder."""

import pytest
import torch

import fastwhisper
from conftest import ENCODER_DIMS, HAS_CUDA, requires_cuda
from fastwhisper import ops
from test_ops import attention_args, conv_stem_args, encoder_sample, layer_norm_args, linear_args

CPU = "cpu"


def with_arg(args, index, value):
    args = list(args)
    args[index] = value
    return args


# (op name, args, expected message fragment)
def bad_cases(device):
    stem = conv_stem_args(2, 8, 20, 16, device)
    ln = layer_norm_args((3, 32), device)
    lin = linear_args((2, 5), 12, 7, True, True, True, device)
    att = attention_args(2, 6, 6, 2, 8, device)
    f64 = lambda t: t.double()  # noqa: E731
    cases = [
        ("conv_stem", with_arg(stem, 0, stem[0][0]), "mel must be 3-D"),
        ("conv_stem", with_arg(stem, 1, stem[1][:, :4]), "conv1_weight must have shape"),
        ("conv_stem", with_arg(stem, 5, stem[5][:-1]), "incorrect audio shape"),
        ("conv_stem", with_arg(stem, 3, stem[3][:, :, :2]), "conv2_weight must have shape"),
        ("conv_stem", with_arg(stem, 0, stem[0][:, :, :0]), "no frames"),
        ("conv_stem", with_arg(stem, 0, stem[0].to(torch.int32)), "dtype"),
        ("layer_norm", with_arg(ln, 1, ln[1][:-1]), "weight must have shape"),
        ("layer_norm", with_arg(ln, 3, 0.0), "eps must be positive"),
        ("layer_norm", with_arg(ln, 0, ln[0].long()), "dtype"),
        ("linear", with_arg(lin, 1, lin[1][:, :-1]), "features"),
        ("linear", with_arg(lin, 1, lin[1][0]), "weight must be 2-D"),
        ("linear", with_arg(lin, 2, lin[2][:-1]), "bias must have shape"),
        ("linear", with_arg(lin, 3, lin[3][:, :-1]), "residual must have shape"),
        ("linear", with_arg(lin, 1, lin[1].half()), "dtype"),
        ("attention", with_arg(att, 3, 3), "not divisible by n_head"),
        ("attention", with_arg(att, 3, 0), "n_head must be positive"),
        ("attention", with_arg(att, 0, att[0][0]), "q must be 3-D"),
        ("attention", with_arg(att, 1, att[1][:1]), "k must have shape"),
        ("attention", with_arg(att, 2, att[2][:, :-1]), "v must have shape"),
    ]
    if device == CPU:
        cases += [
            ("layer_norm", [f64(ln[0])] + ln[1:], "float32 only"),
            ("linear", [f64(lin[0]), f64(lin[1]), f64(lin[2]), f64(lin[3]), True], "float32 only"),
            ("attention", [f64(t) for t in att[:3]] + [2], "float32 only"),
            ("conv_stem", [t.half() for t in stem], "float32 only"),
        ]
    return cases


@pytest.mark.parametrize("device", [CPU, pytest.param("cuda", marks=[requires_cuda, pytest.mark.cuda])])
def test_ops_reject_bad_input(device):
    for name, args, message in bad_cases(device):
        with pytest.raises(RuntimeError, match=message):
            getattr(ops, name)(*args)


@requires_cuda
@pytest.mark.cuda
def test_ops_reject_mixed_devices():
    ln = layer_norm_args((3, 32), "cuda")
    with pytest.raises(RuntimeError, match="one device"):
        ops.layer_norm(ln[0], ln[1].cpu(), ln[2], 1e-5)
    lin = linear_args((2, 5), 12, 7, True, False, False, "cuda")
    with pytest.raises(RuntimeError, match="expected x on cuda"):
        ops.linear(lin[0].cpu(), *lin[1:])
    stem = conv_stem_args(1, 8, 20, 16, "cuda")
    with pytest.raises(RuntimeError, match="one device"):
        ops.conv_stem(*stem[:5], stem[5].cpu())
    with pytest.raises(RuntimeError, match="float32, float16 and bfloat16"):
        ops.attention(*[t.double() for t in attention_args(1, 4, 4, 2, 8, "cuda")[:3]], 2)


def test_encoder_forward_rejects_bad_weights():
    args = encoder_sample(CPU, torch.float32)
    blocks = args[6]
    with pytest.raises(RuntimeError, match="15 tensors per layer"):
        ops.encoder_forward(*args[:6], blocks[:-1], *args[7:])
    bad = list(blocks)
    bad[15 + 2] = bad[15 + 2][:, :-1]  # layer 1's query weight
    with pytest.raises(RuntimeError, match=r"blocks\.1\.attn\.query\.weight must have shape"):
        ops.encoder_forward(*args[:6], bad, *args[7:])
    with pytest.raises(RuntimeError, match="not divisible by n_head"):
        ops.encoder_forward(*args[:9], 5)
    packed = ops.pack_qkv(blocks)
    with pytest.raises(RuntimeError, match="packed_qkv must be empty or hold 2 tensors per layer"):
        ops.encoder_forward(*args, packed_qkv=packed[:-1])
    with pytest.raises(RuntimeError, match=r"packed_qkv\[2\] \(blocks\.1 query\|key\|value weight\) must have shape"):
        ops.encoder_forward(*args, packed_qkv=packed[:2] + [packed[2][:-1]] + packed[3:])
    with pytest.raises(ValueError, match="15 tensors per layer"):
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
    if HAS_CUDA:
        with pytest.raises(RuntimeError, match="device"):
            enc(torch.randn(1, 80, 3000, device="cuda"))
