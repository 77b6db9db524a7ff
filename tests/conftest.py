import dataclasses
import inspect
import io
import os
import re
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, settings
import torch
from whisper.model import ModelDimensions, Whisper

import fastwhisper  # noqa: F401  (registers torch.ops.fastwhisper)
import real_models
from fastwhisper import cli

# Hypothesis budgets of the fuzz tests: HYPOTHESIS_PROFILE=ci (the default, bounded for CI) or long.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("long", max_examples=600, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HAS_CUDA = torch.cuda.is_available() and fastwhisper.WITH_CUDA

# Whisper audio-encoder dims: n_mels, n_ctx, n_state, n_head, n_layer
ENCODER_DIMS = {
    "tiny": (80, 1500, 384, 6, 4),
    "base": (80, 1500, 512, 8, 6),
    "small": (80, 1500, 768, 12, 12),
    "medium": (80, 1500, 1024, 16, 24),
    "large-v3": (128, 1500, 1280, 20, 32),
    "turbo": (128, 1500, 1280, 20, 32),
}

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build of fastwhisper")

DEVICES = ["cpu", pytest.param("cuda", marks=[requires_cuda, pytest.mark.gpu])]


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|, computed in float64; NaN anywhere gives inf."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    return ((out64 - ref64).abs().max() / ref64.abs().max().clamp_min(1e-30)).item()


def poison_cuda_cache(shape, dtype, copies: int = 8) -> None:
    """Leave `copies` freed NaN-filled blocks of this size in the CUDA caching allocator, so that an op's next
    output of this size holds NaN wherever the op does not write it (rel_err then gives inf). A no-op on CPU."""
    if not HAS_CUDA:
        return
    blocks = [torch.full(shape, float("nan"), dtype=dtype, device="cuda") for _ in range(copies)]
    torch.cuda.synchronize()
    del blocks


@pytest.fixture(autouse=True)
def _strict_fp32():
    """fp32 means fp32: no TF32 in cuBLAS or cuDNN while tests run."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---- markers: `gpu` and `real_weights` select the GPU suite (scripts/gpu_run.sh) ----------------------
# gpu: a CUDA device parameter, a skip for want of CUDA, or a use of HAS_CUDA or torch.cuda.is_available (a
# test that takes another path with a GPU). real_weights: a call of
# real_models' helpers or a weights package's name, in the test, its fixtures or the test-folder functions
# they call. A test that escapes these rules and skips for want of a GPU or a weights package, or loads real
# weights, fails (pytest_runtest_makereport, real_models.check_marked), so none is silently left out.

WEIGHT_HELPERS = (real_models.require, real_models.fast_model, real_models.reference_model)
SKIP_WORDS = {"gpu": re.compile(r"\b(cuda|gpu)\b", re.IGNORECASE),
              "real_weights": re.compile(r"weights package", re.IGNORECASE)}


def _codes(code):
    yield code
    for const in code.co_consts:
        if inspect.iscode(const):
            yield from _codes(const)


def _uses(func, seen) -> set:
    """Which of "gpu" and "real_weights" the function's code shows, following the functions of the tests'
    folder that it names."""
    func = inspect.unwrap(getattr(func, "__func__", func))
    func = getattr(getattr(func, "hypothesis", None), "inner_test", func)  # the test that @given wraps
    code = getattr(func, "__code__", None)
    if code is None or code in seen:
        return set()
    seen.add(code)
    found = set()
    for c in _codes(code):
        if any(isinstance(k, str) and k in real_models.WEIGHT_MODULES for k in c.co_consts):
            found.add("real_weights")
        for name in c.co_names:
            value = func.__globals__.get(name)
            if inspect.isfunction(getattr(value, "__wrapped__", None)):  # functools.lru_cache and the like
                value = value.__wrapped__
            if name == "HAS_CUDA" or (name == "is_available" and "cuda" in c.co_names):
                found.add("gpu")
            if any(value is helper for helper in WEIGHT_HELPERS) or (
                    value is real_models and {h.__name__ for h in WEIGHT_HELPERS} & set(c.co_names)):
                found.add("real_weights")
            elif inspect.isfunction(value) and (inspect.getsourcefile(value) or "").startswith(TESTS_DIR):
                found |= _uses(value, seen)
    return found


def _is_cuda(value) -> bool:
    return (isinstance(value, str) and value.startswith("cuda")) or (isinstance(value, torch.device) and
                                                                      value.type == "cuda")


def markers_for(item) -> set:
    found = {name for name in ("gpu", "real_weights") if item.get_closest_marker(name)}
    for mark in item.iter_markers("skipif"):
        found |= {name for name, words in SKIP_WORDS.items() if words.search(str(mark.kwargs.get("reason", "")))}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(_is_cuda(v) for v in callspec.params.values()):
        found.add("gpu")
    seen = set()
    funcs = [getattr(item, "function", None)]
    funcs += [d.func for name in item.fixturenames for d in item._fixtureinfo.name2fixturedefs.get(name, ())]
    for func in funcs:
        found |= _uses(func, seen)
    return found


def pytest_configure(config):
    real_models.guard_bundled_loaders()


def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in markers_for(item) - {m.name for m in item.iter_markers()}:
            item.add_marker(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    real_models.running_test = item
    try:
        return (yield)
    finally:
        real_models.running_test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2]
        for name, words in SKIP_WORDS.items():
            if words.search(reason) and item.get_closest_marker(name) is None:
                report.outcome = "failed"
                report.longrepr = (f"{item.nodeid} skipped ({reason}) but is not marked {name}, so the GPU suite "
                                   f"would leave it out: add @pytest.mark.{name}")
    return report


# ---- random Whisper models and decode results (C++ decoder tests) -------------------------------------

TINY_EN = ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
TINY_MULTI = dataclasses.replace(TINY_EN, n_vocab=51865)
LOGPROB_TOL = 1e-4


def random_model(dims=TINY_EN, seed=0, device="cpu"):
    torch.manual_seed(seed)
    model = Whisper(dims).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.to(device)


def random_audio_features(model, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    dims = model.dims
    return torch.randn(batch, dims.n_audio_ctx, dims.n_audio_state, generator=g).to(model.device)


def assert_same_results(expected, out):
    assert len(expected) == len(out)
    for e, o in zip(expected, out):
        assert o.tokens == e.tokens
        assert o.text == e.text
        assert o.language == e.language
        assert o.temperature == e.temperature
        assert o.compression_ratio == e.compression_ratio
        assert abs(o.avg_logprob - e.avg_logprob) <= LOGPROB_TOL
        assert abs(o.no_speech_prob - e.no_speech_prob) <= LOGPROB_TOL
        assert torch.equal(o.audio_features, e.audio_features)


# ---- transcribe() results ---------------------------------------------------------------------------

EXACT_FIELDS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "compression_ratio")
CLOSE_FIELDS = ("avg_logprob", "no_speech_prob")


def assert_same_result(ours: dict, theirs: dict) -> None:
    assert isinstance(ours, dict), ours
    assert ours.keys() == theirs.keys()
    assert ours["text"] == theirs["text"] and ours["language"] == theirs["language"]
    assert len(ours["segments"]) == len(theirs["segments"])
    for a, b in zip(ours["segments"], theirs["segments"]):
        assert a.keys() == b.keys()
        for field in EXACT_FIELDS:
            assert a[field] == b[field], (field, a, b)
        for field in CLOSE_FIELDS:
            assert a[field] == pytest.approx(b[field], abs=1e-5), (field, a, b)
        # words and their times exactly; a word's probability, a float of the alignment pass over the encoder's
        # output (which equals openai-whisper's to float32 rounding), like avg_logprob
        assert (a.get("words") is None) == (b.get("words") is None)
        assert len(a.get("words") or []) == len(b.get("words") or [])
        for x, y in zip(a.get("words") or [], b.get("words") or []):
            assert (x["word"], x["start"], x["end"]) == (y["word"], y["start"], y["end"]), (x, y)
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-5), (x, y)


# ---- the command line -------------------------------------------------------------------------------

NO_CACHE = "/nonexistent-whisper-cache"  # --model_dir: never pick up a model downloaded to ~/.cache/whisper


def run_cli(*argv):
    """main(argv) in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def stderr_lines(err: str):
    """stderr split into lines, the progress bar's carriage-return redraws included."""
    return [line.strip() for line in re.split(r"[\r\n]", err) if line.strip()]


def error_lines(err: str):
    return [line for line in stderr_lines(err) if line.startswith("fastwhisper: error:")]


class FakeModel:
    is_multilingual = False
    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def transcribe(self, audio, **options):
        self.calls.append((audio, options))
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " Hello there.", "tokens": [],
                   "temperature": 0.0, "avg_logprob": -0.1, "compression_ratio": 1.0, "no_speech_prob": 0.01,
                   "words": [{"word": " Hello", "start": 0.0, "end": 0.7, "probability": 0.9},
                             {"word": " there.", "start": 0.7, "end": 1.5, "probability": 0.9}]}
        return {"text": " Hello there.", "segments": [segment], "language": "en"}
