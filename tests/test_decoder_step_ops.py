"""The decoder step ops (decoder_linear, decoder_embedding, decoder_self_attention) on their particular paths, against
float64 references (opcheck and bad input: test_ops.py, test_bad_input.py), and the DecoderSession running its
one-token steps through them."""

import pytest
import torch
import whisper

import fastwhisper.decoder.cpp as cd
from conftest import DEVICES, assert_same_results, random_audio_features, random_model, rel_err, requires_cuda
from fastwhisper import ops
from op_samples import (
    LINEAR_CASES,
    embedding_case,
    linear_case_on,
    self_attention_case,
    self_attention_reference,
    tolerance,
    whisper_embedding,
)

DTYPES = [torch.float32, pytest.param(torch.float16, marks=[requires_cuda, pytest.mark.gpu]),
          pytest.param(torch.bfloat16, marks=[requires_cuda, pytest.mark.gpu])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_decoder_linear_matches_float64(case, device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("the CPU computes in float32")
    rows, _, outs = LINEAR_CASES[case][:3]
    args, res, gelu, expected = linear_case_on(case, device, dtype)
    for float_output in (False, True):
        out = ops.decoder_linear(*args, residual=res, gelu=gelu, float_output=float_output)
        assert out.shape == (rows, sum(outs))
        assert out.dtype == (torch.float32 if float_output else dtype)
        assert rel_err(out, expected) <= tolerance("op", dtype), case


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ["tiny-vocab-1row", "rows-together-gelu-residual-1row",
                                  "rows-together-two-segments-1row", "large-v3-vocab-1row", "small-vocab-1row",
                                  "rows-grouped-gelu-residual-1row"])
def test_rows_summed_together_equal_one_at_a_time(case, dtype):
    """One input row sums a slot's weight rows together (rows_dot_one_input), or eight one-row slots together
    (reduce_eight_rows); two input rows take the kernel's row-at-a-time loop, whose warp_sum adds the same pairs.
    Each output of the one-row call equals, bit for bit, the same row's output in a two-row call (the input row
    twice), in fp32 as logits and in the activation dtype."""
    (x, *rest), res, gelu, _ = linear_case_on(case, "cuda", dtype)
    for float_output in (False, True):
        one = ops.decoder_linear(x, *rest, residual=res, gelu=gelu, float_output=float_output)
        two = ops.decoder_linear(x.repeat(2, 1), *rest, residual=None if res is None else res.repeat(2, 1), gelu=gelu,
                                 float_output=float_output)
        assert torch.equal(one[0], two[0]) and torch.equal(one[0], two[1]), (case, dtype, float_output)


@requires_cuda
@pytest.mark.gpu
def test_many_rows_take_the_tensor_core_kernel_up_to_2048_features():
    """4-16 fp16 rows go to the tensor-core kernel up to 2048 features and to cuBLASLt above; 1-3 rows to the
    CUDA-core kernel (the profiler's kernel names show which ran)."""
    from torch.profiler import ProfilerActivity, profile

    def by_mma(rows, k):
        x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
        w = torch.randn(64, k, device="cuda", dtype=torch.float16)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            ops.decoder_linear(x, [w], [None], None, None)
            torch.cuda.synchronize()
        return any("decoder_linear_stream_kernel" in e.name for e in prof.events())

    assert [by_mma(8, 128), by_mma(8, 5120), by_mma(3, 128), by_mma(16, 128)] == [True, False, False, True]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows,n_head,position,n_ctx", [(1, 2, 0, 64), (3, 4, 37, 64), (5, 1, 63, 64),
                                                        (2, 1, 127, 200), (1, 1, 128, 200), (3, 2, 199, 200)])
def test_decoder_self_attention_matches_float64(rows, n_head, position, n_ctx, device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("the CPU computes in float32")
    d = 64
    qkv, k_cache, v_cache, pos = self_attention_case(rows, n_ctx, d, position)
    expected = self_attention_reference(qkv, k_cache, v_cache, pos, n_head)
    kc, vc = k_cache.to(device, dtype), v_cache.to(device, dtype)
    untouched = [i for i in range(n_ctx) if i != position]
    before_k = kc[:, untouched].clone()
    out = ops.decoder_self_attention(qkv.to(device, dtype), kc, vc, pos.to(device), n_head)
    # the caches got this position's k and v, nothing else changed
    assert torch.equal(kc[:, position].cpu(), qkv[:, d : 2 * d].to(dtype))
    assert torch.equal(vc[:, position].cpu(), qkv[:, 2 * d :].to(dtype))
    assert torch.equal(kc[:, untouched], before_k)
    assert out.shape == (rows, d) and out.dtype == dtype
    assert rel_err(out, expected) <= tolerance("op", dtype)


# ---- decoder_embedding: whisper's token + positional embedding, bit for bit ------------------------------


# (table dtype, output dtype): fp32 weights with an fp16/bf16 step (openai-whisper's default), low-precision
# tables (model.half()), and fp32 throughout
EMBEDDING_DTYPES = [(torch.float32, torch.float32), (torch.float32, torch.float16), (torch.float32, torch.bfloat16),
                    (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("table_dtype,dtype", EMBEDDING_DTYPES)
def test_decoder_embedding_is_whispers_bit_for_bit(device, table_dtype, dtype):
    for rows, d, p in [(1, 40, 0), (5, 384, 11), (8, 1280, 7)]:
        table, positions, tokens = (t.to(device) for t in embedding_case(rows, d=d, dtype=table_dtype, seed=rows))
        out = ops.decoder_embedding(table, positions, tokens, torch.tensor([p], device=device), dtype)
        expected = whisper_embedding(table, positions, tokens, p, dtype)
        assert out.dtype == dtype and out.shape == (rows, d) and torch.equal(out, expected), (rows, d, p)


@requires_cuda
@pytest.mark.gpu
def test_decoder_embedding_out_of_range_gives_nan_rows_cuda():
    """The CUDA kernel reads token and position on the device (no sync): a bad one shows as NaN, not as
    another row's embedding."""
    table, positions, tokens = (t.cuda() for t in embedding_case(rows=3))
    tokens[1, 0] = 50
    out = ops.decoder_embedding(table, positions, tokens, torch.tensor([2], device="cuda"), torch.float16)
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()
    out = ops.decoder_embedding(table, positions, tokens.clamp(max=49), torch.tensor([12], device="cuda"), torch.float16)
    assert out.isnan().all()


# ---- DecoderSession through the step ops ----------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return random_model()


def test_session_step_ops_match_text_decoder(model):
    """Forced onto the step ops (their CPU reference), one-token steps with groups and a reorder give
    whisper's logits."""
    features = random_audio_features(model, batch=2)
    session = cd.decoder_session(model.decoder)
    session.set_step_kernels(1)
    session.set_audio(features, 2)  # 4 rows
    assert session.uses_step_ops()
    feats = features.repeat_interleave(2, dim=0)
    cache, hooks = model.install_kv_cache_hooks()
    kv_modules = [b.attn.key for b in model.decoder.blocks] + [b.attn.value for b in model.decoder.blocks]
    try:
        tokens = torch.tensor([[50257, 50362, 440]] * 4)
        for step in range(6):
            fed = tokens if step == 0 else tokens[:, -1:]
            with torch.no_grad():
                expected = model.decoder(fed, feats, kv_cache=cache)
            out = session.step(fed)
            assert (out - expected).abs().max().item() <= 1e-5, step
            if step == 3:
                source = [1, 0, 3, 3]
                for module in kv_modules:
                    cache[module] = cache[module][source]
                session.reorder(torch.tensor(source))
                tokens = tokens[source]
            tokens = torch.cat([tokens, expected[:, -1].argmax(-1, keepdim=True)[[0, 1, 2, 3]]], dim=1)
    finally:
        for h in hooks:
            h.remove()
    with pytest.raises(RuntimeError, match="mode must be 0"):
        session.set_step_kernels(3)


@pytest.mark.parametrize("opts", [dict(), dict(beam_size=3), dict(without_timestamps=True)], ids=str)
def test_decode_through_step_ops_matches_whisper(model, opts):
    features = random_audio_features(model, batch=1 if "beam_size" in opts else 2)
    session = cd.decoder_session(model.decoder)
    session.set_step_kernels(1)
    options = whisper.DecodingOptions(language="en", fp16=False, sample_len=25, **opts)
    assert_same_results(whisper.decode(model, features, options),
                        cd.decode_cpp(model, features, options, session=session))


def step_kernels_vs_aten_steps(dtype, steps, audios=2, group=2):
    """The worst relative logit difference between a CUDA session on its step kernels (by default for fp16/bf16,
    in CUDA graphs) and one on the ATen step, over `steps` one-token steps of `audios` audios of `group` rows each."""
    model = random_model(device="cuda")
    features = random_audio_features(model, batch=audios).to(dtype)
    fast, aten = cd.decoder_session(model.decoder), cd.decoder_session(model.decoder)
    aten.set_step_kernels(2)
    for s in (fast, aten):
        s.set_audio(features, group)
    assert fast.uses_step_ops() and not aten.uses_step_ops()
    tokens = torch.tensor([[50257, 50362, 440]] * (audios * group), device="cuda")
    worst = 0.0
    for step in range(steps):
        fed = tokens if step == 0 else tokens[:, -1:]
        a, b = fast.step(fed), aten.step(fed)
        worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
        tokens = torch.cat([tokens, b[:, -1].argmax(-1, keepdim=True)], dim=1)
    return worst


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_session_step_ops_cuda_match_aten_steps(dtype):
    """fp16/bf16 on CUDA use the step kernels by default (in CUDA graphs); their logits stay within
    low-precision rounding of the ATen step's, over 120 steps."""
    worst = step_kernels_vs_aten_steps(dtype, 120)
    assert worst <= tolerance("steps", dtype), worst


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("audios,group", [(16, 1), (3, 5), (1, 12)])
def test_session_step_ops_cuda_many_rows_match_aten_steps(audios, group):
    """Up to 16 rows on the step kernels: 16 windows (the tensor-core kernel's rows 8-15, SDPA over 16 audios), 3
    audios of 5 beams (the cluster cross-attention) and 12 rows of one audio (more than the cluster kernel keeps:
    SDPA); fp16 logits within rounding of the ATen step's over 40 steps."""
    assert step_kernels_vs_aten_steps(torch.float16, 40, audios, group) <= tolerance("steps", torch.float16)
