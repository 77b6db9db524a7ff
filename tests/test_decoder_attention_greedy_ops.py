"""decoder_cross_attention, decoder_cross_query_attention, decoder_greedy_update and decoder_timestamp_rules on their
particular paths, against float64 or whisper's own ops (opcheck and bad input: test_ops.py, test_bad_input.py)."""

import pytest
import torch

from conftest import DEVICES, poison_cuda_cache, rel_err, requires_cuda
from fastwhisper import ops
from op_samples import (
    EOT,
    NO_TS,
    TB,
    TIMESTAMP_CASES,
    cross_case,
    cross_query_case,
    cross_query_reference,
    cross_reference,
    greedy_case,
    greedy_reference,
    timestamp_case,
    tolerance,
)

DTYPES = [torch.float32, pytest.param(torch.float16, marks=[requires_cuda, pytest.mark.gpu]),
          pytest.param(torch.bfloat16, marks=[requires_cuda, pytest.mark.gpu])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
# (2, 3, 5, 2): fewer keys than the CUDA kernel's 8 key chunks; (2, 9, ..) and (1, 16, ..): more rows per window
# than the cluster kernel keeps (CUDA: SDPA)
@pytest.mark.parametrize("windows,group,n_keys,n_head",
                         [(1, 1, 1500, 4), (2, 5, 37, 2), (3, 2, 300, 1), (1, 8, 129, 4), (2, 3, 5, 2), (2, 9, 40, 2),
                          (1, 16, 300, 2)])
def test_decoder_cross_attention_matches_float64(windows, group, n_keys, n_head, device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("the CPU computes in float32")
    q, k, v = cross_case(windows, group, n_keys, 64 * n_head)
    expected = cross_reference(q, k, v, n_head)
    poison_cuda_cache(q.shape, dtype)  # an output element the op leaves unwritten reads NaN
    out = ops.decoder_cross_attention(q.to(device, dtype), k.to(device, dtype), v.to(device, dtype), n_head)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, expected) <= tolerance("op", dtype)


# (windows, group, n_keys, n_head, head_dim): one row, beams, empty key chunks (5 keys over 8 blocks), a head of
# 256 (32 query features per block); then the two ops in its place on CUDA: large-v3 with 5 beams (a block would
# take more than half an SM's shared memory), (fp32 only) a head of 4, too narrow to split over the cluster, and
# 12 rows per window, more than the cluster kernel keeps
CROSS_QUERY_CASES = [(1, 1, 1500, 4, 64), (2, 4, 37, 2, 64), (1, 8, 129, 3, 64), (2, 3, 5, 2, 64), (1, 2, 300, 2, 256),
                     (1, 5, 1500, 20, 64), (2, 1, 40, 2, 4), (1, 12, 300, 2, 64)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("windows,group,n_keys,n_head,head_dim", CROSS_QUERY_CASES)
def test_decoder_cross_query_attention_matches_float64(windows, group, n_keys, n_head, head_dim, device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("the CPU computes in float32")
    if head_dim == 4 and dtype != torch.float32:
        pytest.skip("a head of 4 is one 16-byte slice only in float32")
    x, ln_w, ln_b, q_weight, q_bias, k, v = cross_query_case(windows, group, n_keys, head_dim * n_head)
    expected = cross_query_reference(x, ln_w, ln_b, q_weight, q_bias, k, v, n_head)
    cast = lambda t: t.to(device, dtype)  # noqa: E731
    for bias in (q_bias, None):
        poison_cuda_cache(x.shape, dtype)  # an output element the op leaves unwritten reads NaN
        out = ops.decoder_cross_query_attention(cast(x), ln_w.to(device), ln_b.to(device), cast(q_weight),
                                                None if bias is None else cast(bias), cast(k), cast(v), n_head)
        assert out.shape == x.shape and out.dtype == dtype
        if bias is None:
            expected = cross_query_reference(x, ln_w, ln_b, q_weight, None, k, v, n_head)
        assert rel_err(out, expected) <= tolerance("op", dtype), bias is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows,finished", [(1, []), (4, [1, 3]), (3, [0, 1, 2]), (6, [0])])
def test_decoder_greedy_update_matches_whisper(rows, finished, device):
    n_vocab, eot, length = 51865, 50256, 5
    logits, tokens, sums = greedy_case(rows, n_vocab, eot, length, finished)
    if rows >= 4:  # ties: the first index wins, as torch.argmax (within a chunk of the CUDA kernel, and across)
        top = logits[2].max()
        logits[2, 7], logits[2, 9] = top + 1, top + 1
        top = logits[3].max()
        logits[3, 40000], logits[3, 100], logits[3, 51864] = top + 1, top + 1, top + 1
    if rows >= 6:  # a row where eot itself is the argmax: it completes
        logits[5, eot] = logits[5].max() + 5
    exp_tokens, exp_sums, exp_done = greedy_reference(logits, tokens, sums, length, eot)
    t, s = tokens.to(device), sums.to(device)
    done = ops.decoder_greedy_update(logits.to(device), t, s, length, eot)
    assert done.dtype == torch.bool and done.dim() == 0 and done.device.type == device
    assert torch.equal(t.cpu(), exp_tokens)
    assert (s.cpu().double() - exp_sums).abs().max().item() <= 1e-5
    assert bool(done) == exp_done


@requires_cuda
@pytest.mark.gpu
def test_decoder_greedy_update_strided_logits_and_all_finished():
    """Logits given as a column of a [N, t, V] step output (a strided view), and every row ending."""
    n_vocab, eot, length = 1000, 7, 3
    g = torch.Generator().manual_seed(0)
    step_logits = torch.randn(2, 3, n_vocab, generator=g)
    logits = step_logits[:, -1]
    tokens = torch.full((2, 6), 1, dtype=torch.long)
    tokens[:, length - 1] = eot
    sums = torch.zeros(2)
    exp_tokens, exp_sums, exp_done = greedy_reference(logits, tokens, sums, length, eot)
    t, s = tokens.cuda(), sums.cuda()
    done = ops.decoder_greedy_update(step_logits.cuda()[:, -1], t, s, length, eot)
    assert torch.equal(t.cpu(), exp_tokens) and torch.equal(s.cpu(), exp_sums.float()) and bool(done) and exp_done


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_vocab", [10, 51865])
def test_decoder_greedy_update_reuses_its_workspace(device, n_vocab):
    """One workspace over a loop of calls (as the C++ decoder uses it): every call right, its counters reset.
    A vocabulary of 10 leaves most of the CUDA kernel's 32 chunks empty."""
    rows, eot, capacity = 3, 5, 8
    workspace = ops.decoder_greedy_workspace(rows, device)
    g = torch.Generator().manual_seed(1)
    tokens = torch.full((rows, capacity), 1, dtype=torch.long)
    sums = torch.zeros(rows)
    t, s = tokens.to(device), sums.to(device)
    for length in range(1, capacity):
        logits = torch.randn(rows, n_vocab, generator=g)
        logits[0, eot] = logits[0].max() + (1 if length == 3 else -1)  # row 0 reaches EOT at step 3
        exp_tokens, exp_sums, exp_done = greedy_reference(logits, t.cpu(), s.cpu(), length, eot)
        done = ops.decoder_greedy_update(logits.to(device), t, s, length, eot, workspace=workspace)
        assert torch.equal(t.cpu(), exp_tokens), length
        assert (s.cpu().double() - exp_sums).abs().max().item() <= 1e-5
        assert bool(done) == exp_done
        counters = workspace[: 2 + rows]  # csrc/ops/greedy_workspace.h; the rest is scratch
        assert int(counters.abs().sum()) == 0, f"counters not reset after call {length}: {counters.tolist()}"
    assert t[0, 3:].eq(eot).all() and not t[1:, 1:].eq(eot).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows", [1, 3])
def test_decoder_greedy_update_suppress_mask_matches_index_fill(rows, device):
    """The suppress mask acts as whisper's SuppressTokens / SuppressBlank (index_fill with -inf before the choice):
    each row's own argmax is suppressed, so the choice and its log-probability must move to the unsuppressed
    maximum; suppressed ties and a suppressed EOT included. The logits themselves stay as they were."""
    n_vocab, eot, length = 51865, 50256, 5
    logits, tokens, sums = greedy_case(rows, n_vocab, eot, length, [1] if rows > 1 else [])
    suppress = torch.zeros(n_vocab, dtype=torch.bool)
    suppress[logits.argmax(-1)] = True                 # every row's maximum
    suppress[torch.tensor([0, 220, eot, 51864])] = True  # whisper's blank (" ", EOT) and both ends of the row
    if rows > 1:  # row 2: a suppressed value above a tie of two unsuppressed maxima in different chunks
        top = logits[2].max()
        logits[2, 100], logits[2, 30000], logits[2, 40000] = top + 2, top + 1, top + 1
        suppress[100] = True
    expected = greedy_reference(logits.masked_fill(suppress, float("-inf")), tokens, sums, length, eot)
    if rows > 1:
        assert expected[0][2, length] == 30000
    unsuppressed = greedy_reference(logits, tokens, sums, length, eot)
    assert not torch.equal(expected[0], unsuppressed[0])  # the mask changes the choice, so the test can fail
    given = logits.to(device)
    t, s = tokens.to(device), sums.to(device)
    done = ops.decoder_greedy_update(given, t, s, length, eot, suppress=suppress.to(device))
    assert torch.equal(t.cpu(), expected[0])
    assert (s.cpu().double() - expected[1]).abs().max().item() <= 1e-5
    assert bool(done) == expected[2]
    assert torch.equal(given.cpu(), logits)


# ---- decoder_timestamp_rules: the CUDA kernel against the CPU op (whisper's rules as ATen ops) ----------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(TIMESTAMP_CASES))
@pytest.mark.parametrize("max_initial", [-1, 50])
def test_decoder_timestamp_rules(case, max_initial, device):
    logits, tokens = timestamp_case(TIMESTAMP_CASES[case], seed=len(case))
    expected = logits.clone()
    ops.decoder_timestamp_rules(expected, tokens, 3, TB, EOT, NO_TS, max_initial)  # the CPU op
    # the rules took effect (so that the comparison below can fail)
    assert torch.isinf(expected[:, NO_TS]).all()
    if case == "first-token":
        assert torch.isinf(expected[:, :TB]).all()
        assert torch.isinf(expected[:, TB + 51 :]).all() == (max_initial == 50)
    if case == "closed-pair":
        assert torch.isinf(expected[0, TB:]).all()
    if case == "text-then-lone-timestamp":
        assert torch.isinf(expected[0, :EOT]).all() and torch.isinf(expected[0, TB : TB + 10]).all()
    out = logits.to(device)
    ops.decoder_timestamp_rules(out, tokens.to(device), 3, TB, EOT, NO_TS, max_initial)
    assert torch.equal(torch.isinf(out.cpu()), torch.isinf(expected))
    assert torch.equal(out.cpu()[~torch.isinf(expected)], expected[~torch.isinf(expected)])
