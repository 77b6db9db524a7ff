"""decoder_cross_attention, decoder_cross_query_attention and decoder_greedy_update: against float64 / whisper's own
ops, opcheck, bad input."""

import pytest
import torch
import torch.nn.functional as F

from fastwhisper import ops
from conftest import DEVICES, rel_err, requires_cuda, run_python_with_env

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}
DTYPES = [torch.float32, pytest.param(torch.float16, marks=requires_cuda), pytest.param(torch.bfloat16, marks=requires_cuda)]


def cross_case(windows, group, n_keys, d, seed=2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(windows * group, d, generator=g)
    k = torch.randn(windows, n_keys, d, generator=g)
    v = torch.randn(windows, n_keys, d, generator=g)
    return q, k, v


def cross_reference(q, k, v, n_head):
    """Each row against its own window's K/V, one row at a time, in float64."""
    windows, n_keys, d = k.shape
    group = q.shape[0] // windows
    heads = lambda t: t.reshape(t.shape[0], n_head, d // n_head).transpose(0, 1)  # noqa: E731  [L, d] -> [H, L, Dh]
    rows = []
    for r in range(q.shape[0]):
        w = r // group
        a = F.scaled_dot_product_attention(heads(q[r : r + 1].double()), heads(k[w].double()), heads(v[w].double()))
        rows.append(a.transpose(0, 1).reshape(d))
    return torch.stack(rows)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
# (2, 3, 5, 2): fewer keys than the CUDA kernel's 8 key chunks (FASTWHISPER_CROSS_ATTENTION=split); (2, 9, ..) and
# (1, 16, ..): more rows per window than the cluster kernel keeps (CUDA: SDPA)
@pytest.mark.parametrize("windows,group,n_keys,n_head",
                         [(1, 1, 1500, 4), (2, 5, 37, 2), (3, 2, 300, 1), (1, 8, 129, 4), (2, 3, 5, 2), (2, 9, 40, 2),
                          (1, 16, 300, 2)])
def test_decoder_cross_attention_matches_float64(windows, group, n_keys, n_head, device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("the CPU computes in float32")
    q, k, v = cross_case(windows, group, n_keys, 64 * n_head)
    expected = cross_reference(q, k, v, n_head)
    out = ops.decoder_cross_attention(q.to(device, dtype), k.to(device, dtype), v.to(device, dtype), n_head)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, expected) <= TOL[dtype]


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("choice", ["sdpa", "split", "auto"])
def test_cross_attention_choices_match_float64(choice):
    """FASTWHISPER_CROSS_ATTENTION (read once per process) picks ATen's SDPA, the cluster kernel, or (auto) SDPA
    for one row per window and the kernel for several; each must match the float64 reference for one and
    several rows per window, empty key chunks (3 and 5 keys) included."""
    code = """
        import torch
        from fastwhisper import ops
        from conftest import rel_err
        from test_decoder_attention_greedy_ops import cross_case, cross_reference
        # (.., 256): a head of 256, whose 8 rows x 256 outputs outnumber a block's threads in the kernel's combine
        for windows, group, n_keys, n_head, head_dim in [(1, 1, 1500, 20, 64), (3, 1, 3, 6, 64), (4, 1, 1500, 6, 64),
                                                         (2, 5, 37, 2, 64), (1, 8, 129, 4, 64), (2, 3, 5, 2, 64),
                                                         (1, 8, 300, 2, 256)]:
            q, k, v = cross_case(windows, group, n_keys, head_dim * n_head)
            out = ops.decoder_cross_attention(q.cuda().half(), k.cuda().half(), v.cuda().half(), n_head)
            print(rel_err(out, cross_reference(q, k, v, n_head)))
        """
    proc = run_python_with_env(code, timeout=300, FASTWHISPER_CROSS_ATTENTION=choice)
    assert proc.returncode == 0, proc.stderr
    errors = [float(line) for line in proc.stdout.split()]
    assert len(errors) == 7 and max(errors) <= TOL[torch.float16], errors


def cross_query_case(windows, group, n_keys, d, seed=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(windows * group, d, generator=g)
    ln_w, ln_b = 1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g)
    q_weight = torch.randn(d, d, generator=g) / d**0.5
    q_bias = torch.randn(d, generator=g)
    k = torch.randn(windows, n_keys, d, generator=g)
    v = torch.randn(windows, n_keys, d, generator=g)
    return x, ln_w, ln_b, q_weight, q_bias, k, v


def cross_query_reference(x, ln_w, ln_b, q_weight, q_bias, k, v, n_head):
    """whisper's cross_attn_ln, query projection and attention, in float64."""
    h = F.layer_norm(x.double(), (x.shape[1],), ln_w.double(), ln_b.double(), 1e-5)
    q = F.linear(h, q_weight.double(), None if q_bias is None else q_bias.double())
    return cross_reference(q, k, v, n_head)


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
        out = ops.decoder_cross_query_attention(cast(x), ln_w.to(device), ln_b.to(device), cast(q_weight),
                                                None if bias is None else cast(bias), cast(k), cast(v), n_head)
        assert out.shape == x.shape and out.dtype == dtype
        if bias is None:
            expected = cross_query_reference(x, ln_w, ln_b, q_weight, None, k, v, n_head)
        assert rel_err(out, expected) <= TOL[dtype], bias is None


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_decoder_cross_query_attention(device):
    x, ln_w, ln_b, q_weight, q_bias, k, v = cross_query_case(2, 2, 20, 128)
    args = [t.to(device) for t in (x, ln_w, ln_b, q_weight, q_bias, k, v)]
    torch.library.opcheck(torch.ops.fastwhisper.decoder_cross_query_attention, (*args, 2))


def test_decoder_cross_query_attention_rejects_bad_input():
    x, ln_w, ln_b, q_weight, q_bias, k, v = cross_query_case(1, 2, 20, 128)
    with pytest.raises(RuntimeError, match=r"q_weight must be \[128, 128\]"):
        ops.decoder_cross_query_attention(x, ln_w, ln_b, q_weight[:64], q_bias[:64], k, v, 2)
    with pytest.raises(RuntimeError, match="not divisible by n_head"):
        ops.decoder_cross_query_attention(x, ln_w, ln_b, q_weight, q_bias, k, v, 3)
    with pytest.raises(RuntimeError, match="k must be 3-D"):
        ops.decoder_cross_query_attention(x, ln_w, ln_b, q_weight, q_bias, k[0], v, 2)
    with pytest.raises(RuntimeError, match="ln_weight"):
        ops.decoder_cross_query_attention(x, ln_w[:64], ln_b, q_weight, q_bias, k, v, 2)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("setting", ["on", "off", "auto", "maybe"])
def test_cross_query_fused_switch(setting):
    """FASTWHISPER_CROSS_FUSED (read once per process): the C++ decoder's fp16 step kernels, with the cross query
    and attention as one op (on), two (off) or one for several rows per audio (auto), stay within fp16 rounding
    of its ATen steps over 40 steps of two windows of two rows; any other value is refused with a message naming
    the variable."""
    code = """
        import torch
        from test_decoder_step_ops import step_kernels_vs_aten_steps
        print(step_kernels_vs_aten_steps(torch.float16, 40))
        """
    proc = run_python_with_env(code, timeout=300, FASTWHISPER_CROSS_FUSED=setting)
    if setting == "maybe":
        assert proc.returncode != 0 and "FASTWHISPER_CROSS_FUSED must be on, off or auto" in proc.stderr, proc.stderr[-2000:]
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) <= 2e-2, proc.stdout


def greedy_case(rows, n_vocab, eot, length, finished_rows, seed=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, n_vocab, generator=g) * 3
    tokens = torch.randint(0, n_vocab, (rows, length + 4), generator=g)
    tokens[tokens == eot] = 0
    for r in finished_rows:
        tokens[r, length - 1] = eot
    sums = torch.randn(rows, generator=g)
    return logits, tokens, sums


def greedy_reference(logits, tokens, sums, length, eot):
    """whisper's GreedyDecoder.update at temperature 0, in float64 for the sum."""
    next_tokens = logits.argmax(-1)
    current = F.log_softmax(logits.double(), -1).gather(1, next_tokens[:, None])[:, 0]
    ended = tokens[:, length - 1] == eot
    new_sums = sums.double() + current * (~ended)
    next_tokens = torch.where(ended, torch.full_like(next_tokens, eot), next_tokens)
    out = tokens.clone()
    out[:, length] = next_tokens
    return out, new_sums, bool((next_tokens == eot).all())


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
@pytest.mark.cuda
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
        counters = workspace[: 2 + rows]  # csrc/greedy_workspace.h; the rest is scratch
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


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_cross_attention_and_greedy(device):
    q, k, v = cross_case(2, 3, 40, 128)
    torch.library.opcheck(torch.ops.fastwhisper.decoder_cross_attention, (q.to(device), k.to(device), v.to(device), 2))
    logits, tokens, sums = greedy_case(3, 500, 11, 4, [1])
    torch.library.opcheck(torch.ops.fastwhisper.decoder_greedy_update,
                          (logits.to(device), tokens.to(device), sums.to(device),
                           ops.decoder_greedy_workspace(3, device), 4, 11))
    suppress = torch.zeros(500, dtype=torch.bool, device=device)
    suppress[::7] = True
    torch.library.opcheck(torch.ops.fastwhisper.decoder_greedy_update,
                          (logits.to(device), tokens.to(device), sums.to(device),
                           ops.decoder_greedy_workspace(3, device), 4, 11, suppress))


@pytest.mark.parametrize("device", DEVICES)
def test_attention_greedy_ops_reject_bad_input(device):
    q, k, v = (t.to(device) for t in cross_case(2, 3, 40, 128))
    with pytest.raises(RuntimeError, match="multiple of the 2 audio windows"):
        ops.decoder_cross_attention(q[:5].contiguous(), k, v, 2)
    with pytest.raises(RuntimeError, match="k must be 3-D"):
        ops.decoder_cross_attention(q, k[0], v, 2)
    with pytest.raises(RuntimeError, match="not divisible by n_head"):
        ops.decoder_cross_attention(q, k, v, 3)
    with pytest.raises(RuntimeError, match="v must have shape"):
        ops.decoder_cross_attention(q, k, v[:, :10].contiguous(), 2)
    logits, tokens, sums = (t.to(device) for t in greedy_case(3, 500, 11, 4, []))
    with pytest.raises(RuntimeError, match=r"length must be in \[1, 8\)"):
        ops.decoder_greedy_update(logits, tokens, sums, 8, 11)
    with pytest.raises(RuntimeError, match="2-D float32"):
        ops.decoder_greedy_update(logits.double(), tokens, sums, 4, 11)
    with pytest.raises(RuntimeError, match="contiguous int64"):
        ops.decoder_greedy_update(logits, tokens.int(), sums, 4, 11)
    with pytest.raises(RuntimeError, match="sum_logprobs must be a contiguous float32"):
        ops.decoder_greedy_update(logits, tokens, sums[:2], 4, 11)
    with pytest.raises(RuntimeError, match=r"eot must be a token id in \[0, 500\)"):
        ops.decoder_greedy_update(logits, tokens, sums, 4, 500)
    with pytest.raises(RuntimeError, match="workspace must be a contiguous int32 tensor of at least 293 elements"):
        ops.decoder_greedy_update(logits, tokens, sums, 4, 11, workspace=ops.decoder_greedy_workspace(2, device))
    with pytest.raises(RuntimeError, match="workspace must be a contiguous int32"):
        ops.decoder_greedy_update(logits, tokens, sums, 4, 11, workspace=ops.decoder_greedy_workspace(3, device).long())
    mask = torch.zeros(500, dtype=torch.bool, device=device)
    with pytest.raises(RuntimeError, match=r"suppress must be a contiguous bool tensor \[500\]"):
        ops.decoder_greedy_update(logits, tokens, sums, 4, 11, suppress=mask[:499])
    with pytest.raises(RuntimeError, match=r"suppress must be a contiguous bool tensor \[500\]"):
        ops.decoder_greedy_update(logits, tokens, sums, 4, 11, suppress=mask.int())
    if device == "cuda":
        with pytest.raises(RuntimeError, match="all inputs must be on one device.*suppress"):
            ops.decoder_greedy_update(logits, tokens, sums, 4, 11, suppress=mask.cpu())


# ---- decoder_timestamp_rules: the CUDA kernel against the CPU op (whisper's rules as ATen ops) ----------

TB, EOT, NO_TS, V = 50364, 50257, 50363, 51865


def timestamp_case(sampled, seed):
    """3 rows of logits, and token rows of 3 initial tokens followed by `sampled` (one list per row)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, V, generator=g) * 2
    logits[1, TB:] += 4  # row 1: the timestamps' total probability beats every text token
    tokens = torch.tensor([[50258, 50259, 50359] + s for s in sampled])
    return logits, tokens


TIMESTAMP_CASES = {
    "first-token": [[], [], []],
    "text-then-lone-timestamp": [[TB + 3, 440, TB + 10], [TB, 100, TB + 2], [TB + 5, 200, 300]],
    "closed-pair": [[TB + 3, 440, TB + 10, TB + 10], [440, 441, TB + 1, TB + 1], [500, 501, TB + 7, TB + 7]],
    "lone-first-timestamp": [[TB + 50], [TB], [TB + 1499]],
}


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


@pytest.mark.parametrize("device", DEVICES)
def test_timestamp_rules_opcheck_and_bad_input(device):
    logits, tokens = timestamp_case(TIMESTAMP_CASES["closed-pair"], seed=0)
    logits, tokens = logits.to(device), tokens[:, :5].to(device)
    torch.library.opcheck(torch.ops.fastwhisper.decoder_timestamp_rules, (logits, tokens, 3, TB, EOT, NO_TS, -1))
    with pytest.raises(RuntimeError, match="eot < timestamp_begin"):
        ops.decoder_timestamp_rules(logits, tokens, 3, EOT, TB, NO_TS, -1)
    with pytest.raises(RuntimeError, match=r"sample_begin 6 must be in \[0, 5\]"):
        ops.decoder_timestamp_rules(logits, tokens, 6, TB, EOT, NO_TS, -1)
    with pytest.raises(RuntimeError, match="tokens must be an int64"):
        ops.decoder_timestamp_rules(logits, tokens[:2], 3, TB, EOT, NO_TS, -1)
    with pytest.raises(RuntimeError, match="2-D float32"):
        ops.decoder_timestamp_rules(logits.half(), tokens, 3, TB, EOT, NO_TS, -1)
