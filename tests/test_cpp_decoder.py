"""C++ decoding (DecoderSession, DecodeOptions, decode_cpp) against openai-whisper's TextDecoder and decode().

Random weights of Whisper tiny's real dims (normal(0, 0.05)); seeded random mel or audio features.
"""

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import whisper

import fastwhisper.decoder.cpp as cd
from conftest import LOGPROB_TOL, TINY_MULTI, assert_same_results, random_audio_features, random_model, requires_cuda
from fastwhisper.decoder.weights import decoder_weight_names

LOGIT_TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Many tiny ops per token: one intra-op thread is much faster (and steadier) on a shared CPU."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def features(model):
    return random_audio_features(model, batch=2)


def whisper_step(model, tokens, features, cache):
    with torch.no_grad():
        return model.decoder(tokens, features, kv_cache=cache)


# ---- DecoderSession ----------------------------------------------------------------------------


def test_step_matches_text_decoder_with_kv_cache(model, features):
    session = cd.decoder_session(model.decoder)
    session.set_audio(features, 1)
    cache, hooks = model.install_kv_cache_hooks()
    try:
        tokens = torch.tensor([[50257, 50362, 440, 257], [50257, 50362, 1002, 11]])
        for step in range(4):
            fed = tokens if step == 0 else tokens[:, -1:]
            expected = whisper_step(model, fed, features, cache)
            out = session.step(fed)
            assert out.shape == expected.shape and out.dtype == torch.float32
            assert (out - expected).abs().max().item() <= LOGIT_TOL, f"step {step}"
            assert session.offset() == tokens.shape[1]
            tokens = torch.cat([tokens, expected[:, -1].argmax(-1, keepdim=True)], dim=1)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("n_audio", [1, 2, 4, 5])
def test_one_token_steps_on_two_threads_give_whispers_bits(model, n_audio):
    """With two threads the CPU splits the Linears and the vocabulary projection of a one-token step of up to 4
    rows over them (decoder/cpu_linear.cpp); every logit must keep the exact bits of whisper's decoder, with up
    to 4 rows (split) and with 5 (not split: MKL's one-thread bits differ there from its two-thread bits)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    features = random_audio_features(model, batch=n_audio, seed=7)
    session = cd.decoder_session(model.decoder)
    session.set_audio(features, 1)
    cache, hooks = model.install_kv_cache_hooks()
    try:
        tokens = torch.tensor([[50257, 50362, 440, 257 + i] for i in range(n_audio)])
        for step in range(6):
            fed = tokens if step == 0 else tokens[:, -1:]
            expected = whisper_step(model, fed, features, cache)
            assert torch.equal(session.step(fed), expected), f"step {step}"
            tokens = torch.cat([tokens, expected[:, -1].argmax(-1, keepdim=True)], dim=1)
    finally:
        for h in hooks:
            h.remove()
        torch.set_num_threads(saved)


def test_several_tokens_after_cached_ones_are_causal(model, features):
    """Feeding 3 tokens at offset 2 equals the uncached forward over all 5 positions."""
    tokens = torch.tensor([[50257, 50362, 440, 257, 1002], [50257, 50362, 1002, 11, 13]])
    with torch.no_grad():
        expected = model.decoder(tokens, features)
    session = cd.decoder_session(model.decoder)
    session.set_audio(features, 1)
    first = session.step(tokens[:, :2])
    rest = session.step(tokens[:, 2:])
    assert (torch.cat([first, rest], 1) - expected).abs().max().item() <= LOGIT_TOL
    session.reset()
    assert (session.step_last(tokens) - expected[:, -1:]).abs().max().item() <= LOGIT_TOL


def test_group_rows_share_the_audio(model, features):
    """group=3: 6 rows, rows 3i..3i+2 attend to audio i, as whisper with repeat_interleave'd features."""
    tokens = torch.randint(0, 50000, (6, 3), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.decoder(tokens, features.repeat_interleave(3, dim=0))
    session = cd.decoder_session(model.decoder)
    session.set_audio(features, 3)
    assert session.n_rows() == 6
    assert (session.step(tokens) - expected).abs().max().item() <= LOGIT_TOL


def test_reorder_matches_index_select_of_the_cache(model, features):
    session = cd.decoder_session(model.decoder)
    session.set_audio(features, 2)  # 4 rows
    feats = features.repeat_interleave(2, dim=0)
    cache, hooks = model.install_kv_cache_hooks()
    kv_modules = [b.attn.key for b in model.decoder.blocks] + [b.attn.value for b in model.decoder.blocks]
    try:
        tokens = torch.tensor([[50257, 50362, 440], [50257, 50362, 441], [50257, 50362, 442], [50257, 50362, 443]])
        whisper_step(model, tokens, feats, cache)
        session.step(tokens)
        source = [1, 1, 3, 2]  # beams stay within their audio
        for module in kv_modules:
            cache[module] = cache[module][source]
        session.reorder(torch.tensor(source))
        nxt = torch.tensor([[7], [8], [9], [10]])
        expected = whisper_step(model, nxt, feats, cache)
        assert (session.step(nxt) - expected).abs().max().item() <= LOGIT_TOL
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("device,dtype", [
    ("cpu", torch.float32),
    pytest.param("cuda", torch.float32, marks=[requires_cuda, pytest.mark.gpu]),
    pytest.param("cuda", torch.float16, marks=[requires_cuda, pytest.mark.gpu]),
], ids=["cpu", "cuda-float32", "cuda-float16"])
def test_windows_of_fewer_rows_then_more_step_like_whisper(device, dtype):
    """A session keeps its caches for the most rows it has seen: a window of fewer rows uses their first rows (a
    beam reorder gathers only those), a window of more rows gets new ones. On CUDA it keeps one-token graphs per row
    count, so a row count seen before captures nothing new."""
    model = random_model(device=device)
    session = cd.decoder_session(model.decoder)
    tol = LOGIT_TOL if dtype == torch.float32 else 5e-2
    for n_audio, group in ((3, 1), (1, 2), (1, 1), (2, 1), (3, 1)):
        features = random_audio_features(model, batch=n_audio, seed=n_audio + group).to(dtype)
        feats = features.repeat_interleave(group, dim=0)
        rows = n_audio * group
        session.set_audio(features, group)
        assert session.n_rows() == rows
        cache, hooks = model.install_kv_cache_hooks()
        kv_modules = [b.attn.key for b in model.decoder.blocks] + [b.attn.value for b in model.decoder.blocks]
        try:
            tokens = torch.tensor([[50257, 50362, 440 + r] for r in range(rows)], device=device)
            for step in range(4):
                expected = whisper_step(model, tokens, feats, cache)
                out = session.step(tokens)
                assert (out - expected).abs().max().item() <= tol, f"{rows} rows, step {step}"
                if step == 1:  # every beam takes its audio's first beam; single rows swap
                    source = [r - r % group for r in range(rows)] if group > 1 else list(range(rows))[::-1]
                    for module in kv_modules:
                        cache[module] = cache[module][source]
                    session.reorder(torch.tensor(source, device=device))
                tokens = torch.tensor([[300 + 7 * r + step] for r in range(rows)], device=device)
        finally:
            for h in hooks:
                h.remove()
    if device == "cuda":  # since the last change of group: one graph for each of the row counts 1, 2 and 3
        assert session.cuda_graph_count() == 3


def test_session_holds_the_model_tensors(model):
    session = cd.decoder_session(model.decoder)
    held = session.weights()
    params = cd.decoder_weights(model.decoder)
    assert len(held) == len(decoder_weight_names(len(model.decoder.blocks)))
    assert [t.data_ptr() for t in held] == [p.data_ptr() for p in params]
    assert held[0].data_ptr() == model.decoder.token_embedding.weight.data_ptr()
    assert held[1].data_ptr() == model.decoder.positional_embedding.data_ptr()


# ---- decode_cpp against whisper.decode -----------------------------------------------------------


GREEDY_CASES = {
    "timestamps": dict(sample_len=40),
    "no-timestamps": dict(without_timestamps=True, sample_len=40),
    "prompt-and-prefix": dict(prompt=[440, 1002, 11, 257], prefix=" And so", sample_len=30),
    "text-prompt-no-timestamps": dict(prompt="hello there", without_timestamps=True, sample_len=30),
    "no-suppress-blank": dict(suppress_blank=False, sample_len=30),
    "no-suppress-tokens": dict(suppress_tokens="", sample_len=30),
    "own-suppress-tokens": dict(suppress_tokens=[13, 11, 262], suppress_blank=False, sample_len=30),
    "no-max-initial-timestamp": dict(max_initial_timestamp=None, sample_len=30),
    "short-sample-len": dict(sample_len=3),
    "default-sample-len": dict(without_timestamps=True),
}


@pytest.mark.parametrize("case", list(GREEDY_CASES))
def test_greedy_matches_whisper(model, features, case):
    options = whisper.DecodingOptions(language="en", fp16=False, **GREEDY_CASES[case])
    assert_same_results(whisper.decode(model, features, options), cd.decode_cpp(model, features, options))


def test_greedy_from_mel_runs_the_encoder(model):
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(5)) * 0.5
    options = whisper.DecodingOptions(language="en", fp16=False, sample_len=10)
    expected, out = whisper.decode(model, mel[0], options), cd.decode_cpp(model, mel[0], options)
    assert isinstance(out, whisper.DecodingResult)
    assert_same_results([expected], [out])


def test_sampling_matches_whisper_with_the_same_seed(model, features):
    options = whisper.DecodingOptions(language="en", fp16=False, temperature=0.8, sample_len=20)
    torch.manual_seed(123)
    expected = whisper.decode(model, features, options)
    torch.manual_seed(123)
    assert_same_results(expected, cd.decode_cpp(model, features, options))
    # a private seeded generator: reproducible, independent of the global one
    first = cd.decode_cpp(model, features, options, seed=7)
    torch.manual_seed(999)
    assert [r.tokens for r in cd.decode_cpp(model, features, options, seed=7)] == [r.tokens for r in first]


def test_best_of_matches_whisper(model, features):
    options = whisper.DecodingOptions(language="en", fp16=False, temperature=1.0, best_of=3, sample_len=15)
    torch.manual_seed(11)
    expected = whisper.decode(model, features[:1], options)  # whisper (20250625) needs one audio with groups
    torch.manual_seed(11)
    assert_same_results(expected, cd.decode_cpp(model, features[:1], options))


BEAM_CASES = {
    "beam5": dict(beam_size=5, sample_len=30),
    "beam5-no-timestamps": dict(beam_size=5, without_timestamps=True, sample_len=30),
    "beam3-patience2-length-penalty": dict(beam_size=3, patience=2.0, length_penalty=0.6, sample_len=30),
}


@pytest.mark.parametrize("case", list(BEAM_CASES))
def test_beam_search_matches_whisper(model, features, case):
    options = whisper.DecodingOptions(language="en", fp16=False, **BEAM_CASES[case])
    assert_same_results(whisper.decode(model, features[:1], options), cd.decode_cpp(model, features[:1], options))


def test_beam_search_batch_equals_one_audio_at_a_time(model, features):
    """whisper (20250625) cannot beam-search several audios at once; decode_cpp can, with the same result."""
    options = whisper.DecodingOptions(language="en", fp16=False, beam_size=4, sample_len=20)
    batch = cd.decode_cpp(model, features, options)
    singles = [cd.decode_cpp(model, features[i : i + 1], options)[0] for i in range(2)]
    assert [r.tokens for r in batch] == [r.tokens for r in singles]
    assert [r.avg_logprob for r in batch] == pytest.approx([r.avg_logprob for r in singles], abs=LOGPROB_TOL)


def test_finished_beams_stop_early(model, features):
    """A beam search that finishes (EOT favoured) stops before sample_len, like whisper."""
    biased = random_model(seed=0)
    eot = whisper.tokenizer.get_tokenizer(False).eot
    with torch.no_grad():  # make EOT likely: its embedding aligned with the final LN bias
        biased.decoder.token_embedding.weight[eot] = biased.decoder.ln.bias * 10
    options = whisper.DecodingOptions(language="en", fp16=False, beam_size=3, sample_len=40)
    expected = whisper.decode(biased, features[:1], options)
    assert len(expected[0].tokens) < 40
    assert_same_results(expected, cd.decode_cpp(biased, features[:1], options))
    options = whisper.DecodingOptions(language="en", fp16=False, without_timestamps=True, sample_len=40)
    assert_same_results(whisper.decode(biased, features, options), cd.decode_cpp(biased, features, options))


def test_multilingual_language_detection(features):
    multi = random_model(TINY_MULTI, seed=2)
    for options in [
        whisper.DecodingOptions(fp16=False, sample_len=12),
        whisper.DecodingOptions(fp16=False, task="translate", language="de", sample_len=12),
    ]:
        assert_same_results(whisper.decode(multi, features, options), cd.decode_cpp(multi, features, options))
    lang_id = whisper.DecodingOptions(fp16=False, task="lang_id")
    expected, out = whisper.decode(multi, features, lang_id), cd.decode_cpp(multi, features, lang_id)
    assert [r.language for r in out] == [r.language for r in expected]
    for o, e in zip(out, expected):  # the C++ step and a softmax over the language tokens alone
        assert o.language_probs.keys() == e.language_probs.keys()
        assert max(abs(o.language_probs[c] - p) for c, p in e.language_probs.items()) <= 1e-6
        assert abs(sum(o.language_probs.values()) - 1) <= 1e-4


def test_reusing_a_session(model, features):
    session = cd.decoder_session(model.decoder)
    options = whisper.DecodingOptions(language="en", fp16=False, sample_len=12)
    first = cd.decode_cpp(model, features, options, session=session)
    beam = whisper.DecodingOptions(language="en", fp16=False, beam_size=2, sample_len=12)
    cd.decode_cpp(model, features[:1], beam, session=session)
    assert [r.tokens for r in cd.decode_cpp(model, features, options, session=session)] == [r.tokens for r in first]


# ---- bad input ----------------------------------------------------------------------------------


def test_session_rejects_bad_weights(model):
    weights = cd.decoder_weights(model.decoder)
    make = torch.classes.fastwhisper.DecoderSession
    with pytest.raises(RuntimeError, match="24 tensors per block"):
        make(weights[:-1], 6, 448)
    bad = list(weights)
    query = decoder_weight_names(len(model.decoder.blocks)).index("blocks.1.cross_attn.query.weight")
    bad[query] = bad[query][:, :-1]
    with pytest.raises(RuntimeError, match=r"blocks\.1\.cross_attn\.query\.weight must have shape"):
        make(bad, 6, 448)
    with pytest.raises(RuntimeError, match="positional_embedding must have shape"):
        make(weights, 6, 447)
    with pytest.raises(RuntimeError, match="not divisible by n_head"):
        make(weights, 5, 448)
    bad = list(weights)
    bad[5] = bad[5].long()
    with pytest.raises(RuntimeError, match="floating-point"):
        make(bad, 6, 448)


def test_session_rejects_bad_input(model, features):
    session = cd.decoder_session(model.decoder)
    tokens = torch.tensor([[50257, 50362], [50257, 50362]])
    with pytest.raises(RuntimeError, match="set_audio"):
        session.step(tokens)
    with pytest.raises(RuntimeError, match="audio_features must have shape"):
        session.set_audio(features[0], 1)
    with pytest.raises(RuntimeError, match="audio_features must have shape"):
        session.set_audio(features[..., :-1], 1)
    with pytest.raises(RuntimeError, match="float32 only"):
        session.set_audio(features.double(), 1)
    with pytest.raises(RuntimeError, match="group"):
        session.set_audio(features, 0)
    session.set_audio(features, 1)
    with pytest.raises(RuntimeError, match=r"tokens must have shape \[2, t\]"):
        session.step(tokens[:1])
    with pytest.raises(RuntimeError, match="int64"):
        session.step(tokens.int())
    with pytest.raises(RuntimeError, match=r"token ids must be in \[0, 51864\)"):
        session.step(tokens + 2000)
    session.step(torch.zeros(2, 447, dtype=torch.long))
    with pytest.raises(RuntimeError, match="beyond n_text_ctx = 448"):
        session.step(torch.zeros(2, 2, dtype=torch.long))
    session.step(torch.zeros(2, 1, dtype=torch.long))  # position 447 is the last one
    with pytest.raises(RuntimeError, match="beyond n_text_ctx"):
        session.step(torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(RuntimeError, match="source_indices must be an int64 tensor of shape"):
        session.reorder(torch.tensor([0, 1, 1]))
    with pytest.raises(RuntimeError, match=r"source_indices must be in \[0, 2\)"):
        session.reorder(torch.tensor([0, 2]))


def test_decode_rejects_bad_options(model, features):
    session = cd.decoder_session(model.decoder)
    session.set_audio(features, 1)
    o = torch.classes.fastwhisper.DecodeOptions()
    o.sample_begin, o.eot = 2, 50256
    tokens = torch.tensor([[50257, 50362], [50257, 50362]])
    with pytest.raises(RuntimeError, match="initial_tokens must have shape"):
        session.decode(tokens[:, :1], o)
    o.beam_size = 3
    with pytest.raises(RuntimeError, match="must equal the group"):
        session.decode(tokens, o)
    o.beam_size = 0
    o.suppress_tokens = [99999]
    with pytest.raises(RuntimeError, match="suppress_tokens must be a token id"):
        session.decode(tokens, o)
    o.suppress_tokens = []
    o.eot = -1
    with pytest.raises(RuntimeError, match="eot must be a token id"):
        session.decode(tokens, o)


def test_decode_cpp_refuses_unknown_options(model, features):
    @dataclasses.dataclass(frozen=True)
    class FutureOptions(whisper.DecodingOptions):
        hotwords: str = ""

    with pytest.raises(NotImplementedError, match="hotwords"):
        cd.decode_cpp(model, features, FutureOptions(language="en", fp16=False, hotwords="fast"))
    # a future field at its default is fine
    out = cd.decode_cpp(model, features, FutureOptions(language="en", fp16=False, sample_len=2))
    assert len(out) == 2
    with pytest.raises(NotImplementedError, match="fp16=True on CPU"):
        cd.decode_cpp(model, features, whisper.DecodingOptions(language="en"))
    with pytest.raises(TypeError, match="TextDecoder"):
        cd.decoder_session(model.encoder)


# ---- CUDA --------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_step_matches_text_decoder_cuda(dtype, graphs):
    """150 one-token steps (three CUDA-graph buckets of 64 keys), then a second audio window in the
    same session (the graphs read the new cross-attention K/V from the same buffers)."""
    model = random_model(device="cuda")
    session = cd.decoder_session(model.decoder)
    session.set_cuda_graphs(graphs)
    assert session.cuda_graphs() == graphs
    tol = LOGIT_TOL if dtype == torch.float32 else 5e-2
    for window in range(2):
        features = random_audio_features(model, batch=2, seed=10 + window).to(dtype)
        session.set_audio(features, 1)
        cache, hooks = model.install_kv_cache_hooks()
        try:
            tokens = torch.tensor([[50257, 50362, 440, 257], [50257, 50362, 1002, 11]], device="cuda")
            kept = None
            for step in range(150):
                fed = tokens if step == 0 else tokens[:, -1:]
                expected = whisper_step(model, fed, features, cache)
                out = session.step(fed)
                assert out.dtype == torch.float32
                assert (out - expected).abs().max().item() <= tol, f"window {window} step {step}"
                if step == 1:
                    kept, kept_value = out, out.clone()
                tokens = torch.cat([tokens, expected[:, -1].argmax(-1, keepdim=True)], dim=1)
            assert torch.equal(kept, kept_value), "a step's logits must not change with later steps"
        finally:
            for h in hooks:
                h.remove()


@requires_cuda
@pytest.mark.gpu
def test_a_step_whose_graph_capture_fails_raises_and_cuda_stays_usable():
    """Without torch's caching allocator a CUDA graph cannot allocate while it captures, so capturing a one-token
    step fails. The step raises an error (the process does not abort, and its stream does not stay capturing): CUDA
    still allocates, and the same session then steps eagerly."""
    script = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        from conftest import random_audio_features, random_model
        import fastwhisper.decoder.cpp as cd
        model = random_model(device="cuda")
        session = cd.decoder_session(model.decoder)
        session.set_audio(random_audio_features(model).half(), 1)
        session.step(torch.tensor([[50257, 50362, 440]], device="cuda"))  # the prompt: a many-token step, eager
        token = torch.tensor([[257]], device="cuda")
        try:
            session.step(token)  # the first one-token step is captured
            print("captured")
        except RuntimeError as exc:
            print("raised")
        torch.empty(1 << 20, device="cuda").fill_(1.0)
        session.set_cuda_graphs(False)
        print("eager", bool(torch.isfinite(session.step(token)).all()))
    """)
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    done = subprocess.run([sys.executable, "-c", script, os.path.dirname(os.path.abspath(__file__))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["raised", "eager", "True"], done.stdout + done.stderr[-3000:]


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("opts", [dict(), dict(without_timestamps=True), dict(beam_size=5)], ids=str)
def test_decode_matches_whisper_cuda(opts):
    model = random_model(device="cuda")
    features = random_audio_features(model, batch=1 if "beam_size" in opts else 2)
    options = whisper.DecodingOptions(language="en", fp16=False, sample_len=40, **opts)
    assert_same_results(whisper.decode(model, features, options), cd.decode_cpp(model, features, options))


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("opts", [dict(), dict(beam_size=3), dict(temperature=0.7)], ids=str)
def test_graphs_and_eager_decode_alike_cuda(opts):
    """The CUDA-graph path and the eager path of the C++ loop give the same tokens, long runs included."""
    model = random_model(device="cuda")
    features = random_audio_features(model, batch=1 if "beam_size" in opts else 2)
    options = whisper.DecodingOptions(language="en", fp16=False, sample_len=200, **opts)
    results = []
    for graphs in (True, False):
        session = cd.decoder_session(model.decoder)
        session.set_cuda_graphs(graphs)
        results.append(cd.decode_cpp(model, features, options, session=session, seed=3))
    assert [r.tokens for r in results[0]] == [r.tokens for r in results[1]]
    assert [r.avg_logprob for r in results[0]] == pytest.approx([r.avg_logprob for r in results[1]], abs=1e-4)


@requires_cuda
@pytest.mark.gpu
def test_decode_fp16_cuda_runs_like_whisper():
    """fp16 activations with fp32 weights (openai-whisper's default on GPU): same first tokens."""
    model = random_model(device="cuda")
    features = random_audio_features(model, batch=2)
    options = whisper.DecodingOptions(language="en", fp16=True, sample_len=8)
    expected, out = whisper.decode(model, features, options), cd.decode_cpp(model, features, options)
    for e, o in zip(expected, out):
        assert o.audio_features.dtype == torch.float16
        assert o.tokens == e.tokens
        assert abs(o.avg_logprob - e.avg_logprob) <= 1e-2
