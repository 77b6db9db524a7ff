"""The decoder step ops (decoder_linear, decoder_embedding, decoder_self_attention) against float64 references, opcheck,
bad input, and the DecoderSession running its one-token steps through them."""

import pytest
import torch
import torch.nn.functional as F
import whisper

import fastwhisper.decoder.cpp as cd
from fastwhisper import ops
from conftest import DEVICES, rel_err, requires_cuda, run_python_with_env
from test_cpp_decoder import assert_same_results, random_audio_features, random_model

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}
DTYPES = [torch.float32, pytest.param(torch.float16, marks=requires_cuda), pytest.param(torch.bfloat16, marks=requires_cuda)]


def linear_case(rows, k, outs, biases, ln, residual, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    weights = [torch.randn(n, k, generator=g) / k**0.5 for n in outs]
    bs = [torch.randn(n, generator=g) if b else None for n, b in zip(outs, biases)]
    ln_w = ln_b = None
    if ln:
        ln_w, ln_b = 1 + 0.1 * torch.randn(k, generator=g), 0.1 * torch.randn(k, generator=g)
    res = torch.randn(rows, sum(outs), generator=g) if residual else None
    return x, weights, bs, ln_w, ln_b, res


def linear_reference(x, weights, biases, ln_w, ln_b, residual, gelu):
    h = x.double()
    if ln_w is not None:
        h = F.layer_norm(h, (h.shape[1],), ln_w.double(), ln_b.double(), 1e-5)
    y = torch.cat([F.linear(h, w.double(), None if b is None else b.double()) for w, b in zip(weights, biases)], 1)
    if gelu:
        y = F.gelu(y)
    return y if residual is None else y + residual.double()


LINEAR_CASES = {
    "qkv-ln-1row": (1, 64, [64, 64, 64], [True, False, True], True, False, False),
    "out-residual-3rows": (3, 96, [40], [True], False, True, False),
    "mlp0-ln-gelu-5rows": (5, 64, [256], [True], True, False, True),
    "mlp2-residual-8rows": (8, 256, [64], [True], False, True, False),
    "logits-no-bias-2rows": (2, 64, [1001], [False], True, False, False),
    "two-segments-odd-n": (4, 32, [7, 9], [False, True], False, True, True),
    # long rows: split over several warps (fp16 above 2048 features, fp32 above 1024)
    "mlp2-split-k-2rows": (2, 5120, [48], [True], False, True, False),
    "split-k-ln-1row": (1, 2560, [24, 8], [True, False], True, False, False),
    # the vocabulary projection's kernel (several columns per warp from 16384 columns)
    "vocab-columns-3rows": (3, 64, [16500], [False], True, False, False),
    # one input row with several whole weight rows per slot, summed together: tiny's vocabulary projection (4 rows
    # per slot, a warp's last slot holding 1), bias + GELU + residual with 2 rows per slot and warps left with 1,
    # and slots that straddle two weights
    "tiny-vocab-1row": (1, 384, [51866], [False], True, False, False),
    "rows-together-gelu-residual-1row": (1, 96, [3001], [True], True, True, True),
    "rows-together-two-segments-1row": (1, 64, [2501, 1700], [True, False], False, False, False),
    # one input row with one whole weight row per slot and at least eight rows per warp (N >= 16896 on 132 SMs):
    # eight slots' rows reduced together -- large-v3's vocabulary projection (fp16/bf16; fp32 splits its rows),
    # small's (fp32; fp16/bf16 hold two rows per slot), and bias + GELU + residual across two weights with a
    # warp's last group short; eight rows of large-v3's vocabulary take the row-at-a-time loop
    "large-v3-vocab-1row": (1, 1280, [51866], [False], True, False, False),
    "small-vocab-1row": (1, 768, [51866], [False], True, False, False),
    "rows-grouped-gelu-residual-1row": (1, 1024, [12000, 8001], [True, False], True, True, True),
    "large-v3-vocab-8rows": (8, 1280, [51866], [False], True, False, False),
    # 8 rows of 3072 fp16 features fill the default 48 KiB of shared memory (small's MLP, batch 8)
    "rows8-k3072-smem-limit": (8, 3072, [96], [True], False, True, False),
    # the tensor-core kernel (4-16 fp16/bf16 rows): q, k and v; an octet of weight rows across two segments;
    # a last octet cut short by N; octets cut along K into items whose sums meet in shared memory
    "qkv-ln-gelu-8rows": (8, 128, [128, 128, 128], [True, False, True], True, False, True),
    "octet-across-segments-6rows": (6, 64, [20, 12], [True, False], False, True, False),
    "partial-octet-5rows": (5, 192, [1003], [False], True, False, False),
    "mlp2-k5120-pieces-8rows": (8, 5120, [1280], [True], False, True, False),
    # 9-16 rows (batched windows): the mma's rows 8-15, partly used; and 16 rows of 5120 features (fp16: cuBLASLt,
    # above the tensor-core kernel's 2048 features; fp32: too many for the CUDA-core kernel's shared memory, the
    # same GEMM path)
    "qkv-ln-gelu-16rows": (16, 128, [128, 128, 128], [True, False, True], True, False, True),
    "octets-11rows-two-segments": (11, 192, [40, 1003], [True, False], True, True, False),
    # K of 5 units of 32 features (not a multiple of 64): items of one unit, five partial sums per octet
    "odd-units-12rows": (12, 160, [200], [True], True, True, False),
    "mlp2-k5120-16rows": (16, 5120, [256], [True], False, True, False),
}


def linear_case_on(case, device, dtype):
    """LINEAR_CASES[case] on `device`: decoder_linear's positional arguments (x, weights, biases in dtype; the
    LayerNorm parameters stay fp32), the residual in dtype, the GELU flag, and the float64 reference."""
    rows, k, outs, biases, ln, residual, gelu = LINEAR_CASES[case]
    x, weights, bs, ln_w, ln_b, res = linear_case(rows, k, outs, biases, ln, residual)
    expected = linear_reference(x, weights, bs, ln_w, ln_b, res, gelu)
    cast = lambda t: None if t is None else t.to(device, dtype)  # noqa: E731
    args = (cast(x), [cast(w) for w in weights], [cast(b) for b in bs],
            *[None if t is None else t.to(device) for t in (ln_w, ln_b)])
    return args, cast(res), gelu, expected


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
        assert rel_err(out, expected) <= TOL[dtype], case


@requires_cuda
@pytest.mark.cuda
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
@pytest.mark.cuda
@pytest.mark.parametrize("variable,setting,words", [
    ("FASTWHISPER_LINEAR_PRELOAD", "on", "on or off"), ("FASTWHISPER_LINEAR_PRELOAD", "off", "on or off"),
    ("FASTWHISPER_LINEAR_PRELOAD", "maybe", "on or off"),
    ("FASTWHISPER_ROW_SUMS", "together", "together or apart"), ("FASTWHISPER_ROW_SUMS", "apart", "together or apart"),
    ("FASTWHISPER_ROW_SUMS", "mixed", "together or apart"),
    ("FASTWHISPER_MANY_ROWS", "auto", "auto, mma or gemm"), ("FASTWHISPER_MANY_ROWS", "mma", "auto, mma or gemm"),
    ("FASTWHISPER_MANY_ROWS", "gemm", "auto, mma or gemm"), ("FASTWHISPER_MANY_ROWS", "wmma", "auto, mma or gemm")])
def test_decoder_linear_switches(variable, setting, words):
    """Switches read once per process, each in a fresh one. FASTWHISPER_LINEAR_PRELOAD: the biases and LayerNorm
    parameters read before the producer wait ("on") or where they are used ("off"). FASTWHISPER_ROW_SUMS: one input
    row's weight rows reduced several together ("together") or row by row ("apart"). FASTWHISPER_MANY_ROWS: 4-16
    fp16/bf16 rows through the tensor-core kernel ("mma"), cuBLASLt ("gemm"), or the kernel up to 2048 features
    ("auto"), as the profiler's kernel names show. Either way every linear case, in fp32 and fp16, with and without
    float output, matches the float64 reference; any other value is refused with a message naming the variable."""
    code = """
        import torch
        from fastwhisper import ops
        from conftest import rel_err
        from test_decoder_step_ops import LINEAR_CASES, TOL, linear_case_on
        for case in LINEAR_CASES:
            for dtype in (torch.float32, torch.float16):
                args, res, gelu, expected = linear_case_on(case, "cuda", dtype)
                for float_output in (False, True):
                    out = ops.decoder_linear(*args, residual=res, gelu=gelu, float_output=float_output)
                    print(case, dtype, float_output, rel_err(out, expected) <= TOL[dtype])
        from torch.profiler import ProfilerActivity, profile
        def by_mma(rows, k):  # whether an fp16 call of `rows` rows of k features ran the tensor-core kernel
            x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
            w = torch.randn(64, k, device="cuda", dtype=torch.float16)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                ops.decoder_linear(x, [w], [None], None, None)
                torch.cuda.synchronize()
            return any("decoder_linear_stream_kernel" in e.name for e in prof.events())
        print("ROUTE", by_mma(8, 128), by_mma(8, 5120), by_mma(3, 128), by_mma(16, 128))
        """
    proc = run_python_with_env(code, timeout=300, **{variable: setting})
    if setting not in words.replace(",", " or").split(" or "):
        assert proc.returncode != 0 and f"{variable} must be {words}" in proc.stderr, proc.stderr[-2000:]
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    results = [line.rsplit(" ", 1) for line in lines if not line.startswith("ROUTE")]
    assert len(results) == 4 * len(LINEAR_CASES) and all(ok == "True" for _, ok in results), proc.stdout
    # which kernel 8 rows of 128 and of 5120 features, 3 rows and 16 rows went to (3 rows: the CUDA-core kernel
    # always)
    expected_route = {"mma": "True True False True", "gemm": "False False False False"}.get(setting,
                                                                                             "True False False True")
    assert f"ROUTE {expected_route}" in lines, proc.stdout[-500:]


def attention_case(rows, n_ctx, d, position, seed=1):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(rows, 3 * d, generator=g)
    k_cache = torch.randn(rows, n_ctx, d, generator=g)
    v_cache = torch.randn(rows, n_ctx, d, generator=g)
    return qkv, k_cache, v_cache, torch.tensor([position])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows,n_head,position,n_ctx", [(1, 2, 0, 64), (3, 4, 37, 64), (5, 1, 63, 64),
                                                        (2, 1, 127, 200), (1, 1, 128, 200), (3, 2, 199, 200)])
def test_decoder_self_attention_matches_float64(rows, n_head, position, n_ctx, device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("the CPU computes in float32")
    d = 64
    qkv, k_cache, v_cache, pos = attention_case(rows, n_ctx, d, position)
    kc, vc = k_cache.to(device, dtype), v_cache.to(device, dtype)
    untouched = [i for i in range(n_ctx) if i != position]
    before_k = kc[:, untouched].clone()
    out = ops.decoder_self_attention(qkv.to(device, dtype), kc, vc, pos.to(device), n_head)
    # the caches got this position's k and v, nothing else changed
    assert torch.equal(kc[:, position].cpu(), qkv[:, d : 2 * d].to(dtype))
    assert torch.equal(vc[:, position].cpu(), qkv[:, 2 * d :].to(dtype))
    assert torch.equal(kc[:, untouched], before_k)
    keys, values = k_cache.double().clone(), v_cache.double().clone()
    keys[:, position], values[:, position] = qkv[:, d : 2 * d].double(), qkv[:, 2 * d :].double()
    heads = lambda t: t.reshape(rows, t.shape[1], n_head, d // n_head).transpose(1, 2)  # noqa: E731
    q = qkv[:, :d].double().reshape(rows, 1, d)
    expected = F.scaled_dot_product_attention(heads(q), heads(keys[:, : position + 1]), heads(values[:, : position + 1]))
    expected = expected.transpose(1, 2).reshape(rows, d)
    assert out.shape == (rows, d) and out.dtype == dtype
    assert rel_err(out, expected) <= TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_decoder_step_ops(device):
    x, weights, bs, ln_w, ln_b, res = linear_case(3, 64, [64, 32], [True, False], True, True)
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    torch.library.opcheck(torch.ops.fastwhisper.decoder_linear,
                          (to(x), to(ln_w), to(ln_b), [to(w) for w in weights], [to(b) for b in bs], to(res), True, False))
    qkv, k_cache, v_cache, pos = attention_case(2, 16, 64, 5)
    torch.library.opcheck(torch.ops.fastwhisper.decoder_self_attention,
                          (to(qkv), to(k_cache), to(v_cache), to(pos), 4))


def test_decoder_step_ops_reject_bad_input():
    x, weights, bs, ln_w, ln_b, res = linear_case(2, 64, [32], [True], True, True)
    with pytest.raises(RuntimeError, match="1 to 16 rows"):
        ops.decoder_linear(torch.randn(17, 64), weights, bs)
    with pytest.raises(RuntimeError, match=r"weights\[0\] must be contiguous \[out_features, 64\]"):
        ops.decoder_linear(x, [torch.randn(32, 63)], bs)
    with pytest.raises(RuntimeError, match="one entry \\(or None\\) per weight"):
        ops.decoder_linear(x, weights, [])
    with pytest.raises(RuntimeError, match="both ln_weight and ln_bias"):
        ops.decoder_linear(x, weights, bs, ln_weight=ln_w)
    with pytest.raises(RuntimeError, match="must be contiguous float32"):
        ops.decoder_linear(x, weights, bs, ln_weight=ln_w.double(), ln_bias=ln_b)
    with pytest.raises(RuntimeError, match="residual must have shape"):
        ops.decoder_linear(x, weights, bs, residual=torch.randn(2, 33))
    with pytest.raises(RuntimeError, match="float32"):
        ops.decoder_linear(x.half(), [w.half() for w in weights], [None])
    qkv, k_cache, v_cache, pos = attention_case(2, 16, 64, 5)
    with pytest.raises(RuntimeError, match="one-element int64 tensor"):
        ops.decoder_self_attention(qkv, k_cache, v_cache, pos.int(), 4)
    with pytest.raises(RuntimeError, match=r"position must be in \[0, 16\)"):
        ops.decoder_self_attention(qkv, k_cache, v_cache, torch.tensor([16]), 4)
    with pytest.raises(RuntimeError, match="qkv must have shape"):
        ops.decoder_self_attention(qkv[:, :100].contiguous(), k_cache, v_cache, pos, 4)
    with pytest.raises(RuntimeError, match="not divisible by n_head"):
        ops.decoder_self_attention(qkv, k_cache, v_cache, pos, 5)


# ---- decoder_embedding: whisper's token + positional embedding, bit for bit ------------------------------


def embedding_case(rows=3, n_vocab=50, n_ctx=12, d=40, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(n_vocab, d, generator=g).to(dtype)
    positions = torch.randn(n_ctx, d, generator=g).to(dtype)
    tokens = torch.randint(0, n_vocab, (rows, 1), generator=g)
    return table, positions, tokens


def whisper_embedding(table, positions, tokens, p, dtype):
    """whisper's TextDecoder: token_embedding(x) + positional_embedding[offset : offset + 1], then .to(dtype)."""
    return (F.embedding(tokens, table) + positions[p:p + 1]).to(dtype).view(tokens.shape[0], -1)


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


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_decoder_embedding(device):
    table, positions, tokens = (t.to(device) for t in embedding_case())
    torch.library.opcheck(torch.ops.fastwhisper.decoder_embedding,
                          (table, positions, tokens, torch.tensor([3], device=device), torch.float32))


def test_decoder_embedding_rejects_bad_input_cpu():
    table, positions, tokens = embedding_case()
    p = torch.tensor([3])
    with pytest.raises(RuntimeError, match=r"tokens must be in \[0, 50\), got values in \[-1"):
        ops.decoder_embedding(table, positions, torch.cat([tokens, torch.tensor([[-1]])]), p, torch.float32)
    with pytest.raises(RuntimeError, match=r"position must be in \[0, 12\), got 12"):
        ops.decoder_embedding(table, positions, tokens, torch.tensor([12]), torch.float32)
    with pytest.raises(RuntimeError, match=r"tokens must be an int64 tensor of shape \[rows, 1\]"):
        ops.decoder_embedding(table, positions, tokens.view(-1), p, torch.float32)
    with pytest.raises(RuntimeError, match="positional_embedding must be 2-D \\[n_ctx, 40\\]"):
        ops.decoder_embedding(table, positions[:, :39], tokens, p, torch.float32)
    with pytest.raises(RuntimeError, match="dtype must be float32, float16 or bfloat16"):
        ops.decoder_embedding(table, positions, tokens, p, torch.float64)
    with pytest.raises(RuntimeError, match="one-element int64 tensor"):
        ops.decoder_embedding(table, positions, tokens, p.int(), torch.float32)


@requires_cuda
@pytest.mark.cuda
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
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_session_step_ops_cuda_match_aten_steps(dtype):
    """fp16/bf16 on CUDA use the step kernels by default (in CUDA graphs); their logits stay within
    low-precision rounding of the ATen step's, over 120 steps."""
    worst = step_kernels_vs_aten_steps(dtype, 120)
    assert worst <= (2e-2 if dtype == torch.float16 else 6e-2), worst


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("audios,group", [(16, 1), (3, 5), (1, 12)])
def test_session_step_ops_cuda_many_rows_match_aten_steps(audios, group):
    """Up to 16 rows on the step kernels: 16 windows (the tensor-core kernel's rows 8-15, SDPA over 16 audios), 3
    audios of 5 beams (the cluster cross-attention) and 12 rows of one audio (more than the cluster kernel keeps:
    SDPA); fp16 logits within rounding of the ATen step's over 40 steps."""
    assert step_kernels_vs_aten_steps(torch.float16, 40, audios, group) <= 2e-2
