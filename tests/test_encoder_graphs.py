"""FastAudioEncoder's CUDA graphs: the same bits as the eager call, refreshed inputs and fresh outputs,
re-capture when weights change, one graph per batch size and dtype, and every way they are turned off."""

import copy
import pickle

import pytest
import torch

import fastwhisper
from conftest import ENCODER_DIMS, rel_err, requires_cuda
from op_samples import random_encoder, random_mel

TINY = ENCODER_DIMS["tiny"]


def eager(fast, mel):
    """fast(mel) without graphs (what the encoder computed before graphs existed)."""
    fast.cuda_graphs = False
    try:
        with torch.no_grad():
            return fast(mel)
    finally:
        fast.cuda_graphs = True


def cuda_encoder(seed=0):
    return fastwhisper.FastAudioEncoder.from_audio_encoder(random_encoder(TINY, seed=seed).cuda())


def n_graphs(fast):
    return len(fast._graphs)


# ---- CPU: the bookkeeping the graphs rely on ------------------------------------------------------------


def test_raw_weights_fast_path_follows_parameters():
    fast = fastwhisper.FastAudioEncoder(*TINY)
    named = dict(fast.named_parameters()) | dict(fast.named_buffers())
    assert [id(t) for t in fast._raw_weights()] == [id(named[n]) for n in fast._weight_names()]
    replacement = torch.nn.Parameter(torch.zeros_like(fast.blocks[1].attn.query.weight))
    fast.blocks[1].attn.query.weight = replacement  # reassigned parameters are seen
    assert any(t is replacement for t in fast._raw_weights())


def test_copies_and_pickles_drop_runtime_state():
    fast = fastwhisper.FastAudioEncoder(*TINY).eval()
    mel = random_mel(1, 80)
    with torch.no_grad():
        expected = fast(mel)
        for twin in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
            assert n_graphs(twin) == 0 and twin._cast_cache == {}
            assert torch.equal(twin(mel), expected)


def test_no_graphs_on_cpu():
    fast = fastwhisper.FastAudioEncoder(*TINY).eval()
    with torch.no_grad():
        fast(random_mel(1, 80))
    assert n_graphs(fast) == 0


# ---- CUDA ------------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_graph_matches_eager_bit_for_bit(dtype):
    fast = cuda_encoder()
    mel = random_mel(2, 80, device="cuda").to(dtype)
    expected = eager(fast, mel)
    with torch.no_grad():
        first, second = fast(mel), fast(mel)  # capture + replay, then replay only
    assert n_graphs(fast) == 1
    assert first.dtype == dtype and torch.equal(first, expected) and torch.equal(second, expected)


@requires_cuda
@pytest.mark.gpu
def test_graph_reads_new_input_and_returns_fresh_output():
    fast = cuda_encoder()
    mel_a, mel_b = (random_mel(2, 80, seed=s, device="cuda").half() for s in (1, 2))
    with torch.no_grad():
        out_a = fast(mel_a)
        kept = out_a.clone()
        out_b = fast(mel_b)
    assert n_graphs(fast) == 1
    assert torch.equal(out_b, eager(fast, mel_b))  # the static input really was refreshed
    assert torch.equal(out_a, kept)  # the first result was not overwritten by the second replay
    assert out_a.data_ptr() != out_b.data_ptr() and rel_err(out_a, out_b) > 1e-2


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("half_weights", [False, True])
def test_graph_follows_weight_changes(half_weights):
    """fp32 weights with an fp16 mel (cast copies: re-capture) and fp16 weights (read in place)."""
    fast = cuda_encoder()
    if half_weights:
        fast.half()
    mel = random_mel(1, 80, device="cuda").half()
    with torch.no_grad():
        before = fast(mel)
        fast.blocks[1].mlp[0].weight.mul_(1.5)  # in place
        after = fast(mel)
        assert torch.equal(after, eager(fast, mel)) and rel_err(after, before) > 1e-3
        query = fast.blocks[0].attn.query
        query.weight = torch.nn.Parameter(query.weight * 0.5)  # reassigned
        reassigned = fast(mel)
        assert torch.equal(reassigned, eager(fast, mel)) and rel_err(reassigned, after) > 1e-3
    assert n_graphs(fast) == 1  # graphs of the old weights were dropped


@requires_cuda
@pytest.mark.gpu
def test_graph_per_batch_size_and_dtype():
    fast = cuda_encoder()
    graphs = {}
    with torch.no_grad():
        for batch, dtype in [(1, torch.float16), (3, torch.float16), (1, torch.bfloat16), (1, torch.float16),
                             (2, torch.float16), (3, torch.float16)]:
            mel = random_mel(batch, 80, seed=batch, device="cuda").to(dtype)
            assert torch.equal(fast(mel), eager(fast, mel)), (batch, dtype)
            graph = fast._graphs._graphs[fast._graphs._key(mel)].graph
            assert graphs.setdefault((batch, dtype), graph) is graph  # captured once, then replayed
    assert n_graphs(fast) == 4


@requires_cuda
@pytest.mark.gpu
def test_graph_count_is_bounded():
    fast = cuda_encoder()
    fast._graphs.max_graphs = 2
    with torch.no_grad():
        for batch in (1, 2, 3):
            fast(random_mel(batch, 80, device="cuda").half())
    assert n_graphs(fast) == 2


@requires_cuda
@pytest.mark.gpu
def test_graphs_off_by_attribute():
    fast = cuda_encoder()
    mel = random_mel(1, 80, device="cuda").half()
    fast.cuda_graphs = False
    with torch.no_grad():
        out = fast(mel)
    assert n_graphs(fast) == 0
    fast.cuda_graphs = True
    with torch.no_grad():
        assert torch.equal(fast(mel), out) and n_graphs(fast) == 1


@requires_cuda
@pytest.mark.gpu
def test_graphs_off_when_autograd_records():
    fast = cuda_encoder()
    mel = random_mel(1, 80, device="cuda").half()
    out = fast(mel)  # grad enabled, parameters require grad
    assert n_graphs(fast) == 0 and not out.requires_grad
    fast.requires_grad_(False)
    assert torch.equal(fast(mel), out) and n_graphs(fast) == 1  # grad enabled but nothing to record


@requires_cuda
@pytest.mark.gpu
def test_graphs_under_inference_mode():
    fast = cuda_encoder()
    mel = random_mel(1, 80, device="cuda").half()
    expected = eager(fast, mel)
    with torch.inference_mode():
        assert torch.equal(fast(mel), expected) and torch.equal(fast(mel.clone()), expected)
    assert n_graphs(fast) == 1
    with torch.inference_mode():  # inference-tensor weights to cast on every call: no graph
        built = fastwhisper.FastAudioEncoder.from_audio_encoder(random_encoder(TINY).cuda())
        out = built(mel)
    assert n_graphs(built) == 0 and torch.equal(out, expected)


@requires_cuda
@pytest.mark.gpu
def test_deepcopy_after_capture():
    fast = cuda_encoder()
    mel = random_mel(1, 80, device="cuda").half()
    with torch.no_grad():
        out = fast(mel)
        twin = copy.deepcopy(fast)
        assert torch.equal(twin(mel), out) and n_graphs(twin) == 1
