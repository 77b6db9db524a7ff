"""FastAudioEncoder against whisper.model.AudioEncoder (and a float64 reference), accelerate(), torch.compile."""

import copy

import pytest
import torch
import whisper
from whisper.model import AudioEncoder

import fastwhisper
from conftest import ENCODER_DIMS, random_model, rel_err, requires_cuda
from fastwhisper import ops
from op_samples import COMPILED, fast_copy, random_encoder, random_mel, tolerance, within_torch_error
from reference import encoder_reference

FP32 = tolerance("op", torch.float32)
FP16_AGAINST_WHISPER = tolerance("whisper", torch.float16)


def test_reference_agrees_with_whisper():
    enc = random_encoder(ENCODER_DIMS["tiny"])
    mel = random_mel(1, 80)
    with torch.no_grad():
        assert rel_err(encoder_reference(enc, mel), enc(mel)) <= FP32


def test_same_constructor_parameters_and_state_dict():
    dims = ENCODER_DIMS["tiny"]
    ref, fast = AudioEncoder(*dims), fastwhisper.FastAudioEncoder(*dims)
    assert isinstance(fast, AudioEncoder)
    assert list(ref.state_dict()) == list(fast.state_dict())
    assert [(n, p.shape) for n, p in ref.named_parameters()] == [(n, p.shape) for n, p in fast.named_parameters()]
    fast.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(fast.state_dict(), strict=True)


@pytest.mark.parametrize("size", ["tiny", "base", "small"])
def test_fp32_matches_whisper_cpu(size):
    enc = random_encoder(ENCODER_DIMS[size])
    fast = fast_copy(enc)
    mel = random_mel(2 if size == "tiny" else 1, enc.conv1.in_channels)
    with torch.no_grad():
        expected, out = enc(mel), fast(mel)
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert rel_err(out, expected) <= FP32


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_fp32_cpu_is_bitwise_whisper(size):
    """The CPU kernels run the ATen ops whisper/model.py runs, in its order: the same bits, not only close."""
    enc = random_encoder(ENCODER_DIMS[size], seed=5)
    fast = fast_copy(enc)
    mel = random_mel(2, enc.conv1.in_channels, seed=6)
    with torch.inference_mode():
        expected, out = enc(mel), fast(mel)
    assert torch.equal(out, expected), f"max abs difference {(out - expected).abs().max().item():.3g}"


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("size", list(ENCODER_DIMS))
def test_matches_whisper_cuda(size):
    """fp32: <= 1e-5 of whisper's AudioEncoder; fp16/bf16 input (fp32 weights, as openai-whisper runs):
    error against float64 no more than 2x whisper's own error in that dtype."""
    enc = random_encoder(ENCODER_DIMS[size]).cuda()
    fast = fastwhisper.FastAudioEncoder.from_audio_encoder(enc)
    mel = random_mel(3 if size in ("tiny", "base") else 1, enc.conv1.in_channels, device="cuda")
    with torch.no_grad():
        expected32 = enc(mel)
        assert rel_err(fast(mel), expected32) <= FP32
        expected64 = encoder_reference(enc, mel)
        for dtype in (torch.float16, torch.bfloat16):
            out = fast(mel.to(dtype))
            assert out.dtype == dtype
            assert within_torch_error(out, expected64, enc(mel.to(dtype))), (size, dtype)
        # fp16 weights too (model.half())
        half = fast_copy(enc).half()
        assert within_torch_error(half(mel.half()), expected64, enc(mel.half())), size


@requires_cuda
@pytest.mark.gpu
def test_cast_cache_follows_weight_updates():
    enc = random_encoder(ENCODER_DIMS["tiny"]).cuda()
    fast = fastwhisper.FastAudioEncoder.from_audio_encoder(enc)
    mel = random_mel(1, 80, device="cuda").half()
    with torch.no_grad():
        before = fast(mel)
        fast.blocks[1].mlp[0].weight.mul_(1.5)
        after, expected = fast(mel), enc(mel)
    assert rel_err(after, before) > 1e-3
    assert rel_err(after, expected) <= FP16_AGAINST_WHISPER


def test_packed_weights_layout_cpu():
    """The CUDA path's weight preparation, checked where CI runs: cast query/key/value tensors are slices
    of the packed ones, everything else is cast as before, and the packed encoder gives the same output."""
    fast = fastwhisper.FastAudioEncoder.from_audio_encoder(random_encoder(ENCODER_DIMS["tiny"]))
    raw = [t.detach() for t in fast._raw_weights()]
    weights, packed = fast._split(fast._packed_weights(raw, torch.float16))
    n_packed = len(ops.ENCODER_PACKED_QKV)
    assert len(packed) == n_packed * len(fast.blocks)
    layer1 = {name: packed[n_packed + i] for i, name in enumerate(ops.ENCODER_PACKED_QKV.names)}
    assert layer1["attn.qkv.weight"].shape == (3 * 384, 384)
    names = fast._weight_names()
    for name, t, cast in zip(names, raw, weights):
        assert cast.dtype == (t.dtype if name.endswith(("ln.weight", "ln.bias", "ln_post.weight", "ln_post.bias",
                                                         "positional_embedding")) else torch.float16), name
        assert torch.equal(cast, t.to(cast.dtype)), name
    layer1_key = weights[names.index("blocks.1.attn.key.weight")]
    assert layer1_key.untyped_storage().data_ptr() == layer1["attn.qkv.weight"].untyped_storage().data_ptr()
    assert not layer1["attn.qkv.bias"][384:768].any()  # the key has no bias
    weights32, packed32 = fast._split(fast._packed_weights(raw, torch.float32))
    mel = random_mel(1, 80)
    with torch.no_grad():
        expected = fast(mel)
        assert torch.allclose(fast._encode(mel, weights32 + packed32), expected, rtol=1e-5, atol=1e-5)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("half_weights", [False, True])
def test_packed_qkv_follows_weight_updates(half_weights):
    """On CUDA the query/key/value weights run as one packed GEMM: cast weights are views of the packed
    copy (no second copy), and an in-place change of the key weight reaches it."""
    reference = random_encoder(ENCODER_DIMS["tiny"]).cuda()  # fp32 weights, as openai-whisper runs
    enc = copy.deepcopy(reference).half() if half_weights else reference
    fast = fastwhisper.FastAudioEncoder.from_audio_encoder(enc)
    mel = random_mel(1, 80, device="cuda").half()
    with torch.no_grad():
        before = fast(mel)
        assert rel_err(before, reference(mel)) <= FP16_AGAINST_WHISPER
        weights, packed = fast._split(fast._weights_for(torch.float16)[0])
        layer0 = {name: packed[i] for i, name in enumerate(ops.ENCODER_PACKED_QKV.names)}
        assert len(packed) == len(ops.ENCODER_PACKED_QKV) * len(fast.blocks)
        assert layer0["attn.qkv.weight"].shape == (3 * 384, 384)
        query_weight = weights[fast._weight_names().index("blocks.0.attn.query.weight")]
        shares = query_weight.untyped_storage().data_ptr() == layer0["attn.qkv.weight"].untyped_storage().data_ptr()
        assert shares != half_weights  # cast weights are slices of the packed copy; fp16 ones are the parameters
        fast.blocks[0].attn.key.weight.mul_(1.5)
        if half_weights:
            reference.blocks[0].attn.key.weight.mul_(1.5)
        after = fast(mel)
        assert rel_err(after, before) > 1e-3 and rel_err(after, reference(mel)) <= FP16_AGAINST_WHISPER


@requires_cuda
@pytest.mark.gpu
def test_encoder_built_under_inference_mode_casts_weights():
    with torch.inference_mode():
        enc = random_encoder(ENCODER_DIMS["tiny"]).cuda()
        fast = fastwhisper.FastAudioEncoder.from_audio_encoder(enc)
        mel = random_mel(1, 80, device="cuda").half()
        assert rel_err(fast(mel), enc(mel)) <= FP16_AGAINST_WHISPER


def test_accelerate_swaps_encoder_in_place_and_decode_matches():
    model = random_model()
    reference = copy.deepcopy(model)
    params_before = {n: p for n, p in model.encoder.named_parameters()}
    assert fastwhisper.accelerate(model) is model
    assert isinstance(model.encoder, fastwhisper.FastAudioEncoder)
    assert all(p is params_before[n] for n, p in model.encoder.named_parameters())
    assert list(model.state_dict()) == list(reference.state_dict())
    mel = random_mel(2, 80)
    with torch.no_grad():
        assert rel_err(model.embed_audio(mel), reference.embed_audio(mel)) <= FP32
    options = whisper.DecodingOptions(language="en", fp16=False, sample_len=24, without_timestamps=True)
    ours, theirs = whisper.decode(model, mel, options), whisper.decode(reference, mel, options)
    assert [r.tokens for r in ours] == [r.tokens for r in theirs]
    assert len(ours[0].tokens) > 0
    assert fastwhisper.accelerate(model).encoder is model.encoder  # idempotent


def test_accelerate_then_transcribe_matches_openai_whisper():
    """model.transcribe() runs unchanged on an accelerated model (hybrid mode) and gives the same result."""
    model = random_model(seed=3)
    reference = copy.deepcopy(model)
    fastwhisper.accelerate(model)
    audio = (torch.randn(16000 * 4, generator=torch.Generator().manual_seed(5)) * 0.1).numpy()
    options = dict(language="en", temperature=0.0, fp16=False, condition_on_previous_text=False, verbose=None)
    ours, theirs = model.transcribe(audio, **options), reference.transcribe(audio, **options)
    assert [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]]
    assert ours["text"] == theirs["text"]
    assert sum(len(s["tokens"]) for s in ours["segments"]) > 0


def test_accelerate_rejects_non_whisper_model():
    with pytest.raises(TypeError, match="openai-whisper model"):
        fastwhisper.accelerate(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[requires_cuda, pytest.mark.gpu])])
def test_torch_compile_fullgraph(device):
    fast = fast_copy(random_encoder(ENCODER_DIMS["tiny"])).to(device)
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16]
    for dtype in dtypes:
        torch._dynamo.reset()
        mel = random_mel(2, 80, device=device).to(dtype)
        compiled = torch.compile(fast, fullgraph=True)
        with torch.no_grad():
            eager, traced = fast(mel), compiled(mel)
        assert traced.dtype == dtype
        assert rel_err(traced, eager) <= COMPILED[dtype]
