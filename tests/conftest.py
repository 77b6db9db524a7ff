import dataclasses
import io
import os
import re
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch
from whisper.model import ModelDimensions, Whisper

import fastwhisper  # noqa: F401  (registers torch.ops.fastwhisper)
from fastwhisper import cli

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

DEVICES = ["cpu", pytest.param("cuda", marks=[requires_cuda, pytest.mark.cuda])]


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_python_with_env(code: str, timeout: float = 600, **variables: str) -> subprocess.CompletedProcess:
    """`code` (dedented) in a fresh Python process with the tests' folder importable and `variables` set in its
    environment: for the switches fastwhisper reads once per process."""
    env = dict(os.environ, **variables)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [TESTS_DIR, env.get("PYTHONPATH", "")] if p)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|, computed in float64; NaN anywhere gives inf."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    return ((out64 - ref64).abs().max() / ref64.abs().max().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def _strict_fp32():
    """fp32 means fp32: no TF32 in cuBLAS or cuDNN while tests run."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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
        assert a.get("words") == b.get("words")


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
