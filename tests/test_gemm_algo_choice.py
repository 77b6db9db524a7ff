"""How the CUDA linear op picks cuBLASLt's algorithm for problems of many rows (the encoder's GEMMs from four
windows, 6000 rows, up):
FASTWHISPER_GEMM_ALGO=timed (the default) times the heuristic's candidates on the first eager call of a
problem and keeps the fastest; =heuristic keeps the heuristic's first choice. Either way the answer is the
float64 reference's within the dtype's error, the timing runs leave no trace in it (a residual is added
once), one problem always runs one algorithm (repeated, captured and eager calls agree bit for bit), and a
problem first met under CUDA graph capture, where nothing can be timed, is still computed correctly."""

import pytest
import torch

from conftest import requires_cuda
from fastwhisper import ops
from test_ops import LOW_PRECISION, check_linear_cuda, linear_args

# (rows, K, N, bias, residual): large-v3's attention output projection (with the residual) at batch 4, its
# second MLP layer at batch 1 (below the rows timed), tiny's fused QKV projection at batch 8; row counts no
# other test uses, so each problem meets the algorithm cache for the first time here.
MANY_ROWS = [(6007, 1280, 1280, True, True), (1499, 5120, 1280, True, True), (12007, 384, 1152, True, False)]


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("choice", ["timed", "heuristic"])
@pytest.mark.parametrize("dtype", [torch.float32] + LOW_PRECISION)
@pytest.mark.parametrize("problem", MANY_ROWS, ids=lambda p: f"{p[0]}x{p[1]}x{p[2]}")
def test_chosen_algorithm_matches_reference_and_stays(problem, dtype, choice, monkeypatch):
    monkeypatch.setenv("FASTWHISPER_GEMM_ALGO", choice)
    rows, k, n, bias, residual = problem
    gen = torch.Generator().manual_seed(rows + k + n)
    args = linear_args((rows,), k, n, bias, residual, False, "cuda", dtype, gen=gen)
    first = ops.linear(*args)  # the call that chooses (and, timed, runs every candidate several times)
    check_linear_cuda(args, dtype)  # the residual was added once, the result is the reference's
    assert torch.equal(ops.linear(*args), first)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_problem_first_met_under_capture(dtype, monkeypatch):
    monkeypatch.delenv("FASTWHISPER_GEMM_ALGO", raising=False)
    gen = torch.Generator().manual_seed(29)
    args = linear_args((6203,), 768, 768, True, True, False, "cuda", dtype, gen=gen)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # no eager warm-up: the choice is made while capturing
        captured = ops.linear(*args)
    graph.replay()
    torch.cuda.synchronize()
    check_linear_cuda(args, dtype)
    assert torch.equal(captured, ops.linear(*args))
