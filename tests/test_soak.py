"""Memory under load: 1,000 transcriptions with flat memory (soak), and a GPU out-of-memory error in a batch.

The soak prints its figures (resident memory, and on CUDA allocated memory, at the start and at the end);
run it with `pytest -s -m slow tests/test_soak.py`.
"""

import os

import numpy as np
import pytest
import torch

import fastwhisper
from conftest import DEVICES, assert_same_result, random_audio_features, random_model, requires_cuda
from fastwhisper.audio import load_audio
from fastwhisper.engine.errors import BatchOutOfMemoryError, describe_failure
from real_models import SAMPLES_DIR, fast_model, require

CLIP = SAMPLES_DIR / "pocketsphinx_goforward.flac"  # 2.8 s: "Go forward ten meters."
RUNS = 1000
WARM_UP = 50           # allocator pools, caches and lazily built sessions settle first
SAMPLE_EVERY = 50
RSS_GROWTH_LIMIT = 48 * 2**20       # over the 950 runs after the warm-up
RSS_SECOND_HALF_LIMIT = 16 * 2**20  # over the last 475: no steady growth
CUDA_GROWTH_LIMIT = 2**20


def rss_bytes() -> int:
    """This process's resident memory now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.real_weights
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
@pytest.mark.parametrize("device", DEVICES)
def test_soak_1000_transcriptions_keep_memory_flat(device):
    """tiny.en on a short clip 1,000 times, the two decoders in turn: the same transcript every time, and
    resident memory (and CUDA allocated memory) flat after the warm-up."""
    require("tiny.en")
    model = fast_model("tiny.en", device)
    audio = load_audio(CLIP)
    options = dict(fp16=device == "cuda", language="en")
    expected = {decoder: fastwhisper.transcribe(model, audio, decoder=decoder, **options)["text"]
                for decoder in ("torch", "cpp")}
    rss, cuda = {}, {}
    for run in range(RUNS):
        decoder = ("torch", "cpp")[run % 2]
        text = fastwhisper.transcribe(model, audio, decoder=decoder, **options)["text"]
        assert text == expected[decoder], (run, decoder, text)
        if run + 1 == WARM_UP or (run + 1) % SAMPLE_EVERY == 0:
            rss[run + 1] = rss_bytes()
            if device == "cuda":
                torch.cuda.synchronize()
                cuda[run + 1] = torch.cuda.memory_allocated()
    mib = {k: round(v / 2**20, 1) for k, v in rss.items()}
    print(f"\nsoak on {device}: {RUNS} transcriptions; RSS MiB by run: {mib}")
    if cuda:
        print(f"CUDA allocated MiB by run: { {k: round(v / 2**20, 2) for k, v in cuda.items()} }")
    half = WARM_UP + (RUNS - WARM_UP) // 2
    middle = min(rss, key=lambda k: abs(k - half))
    assert rss[RUNS] - rss[WARM_UP] <= RSS_GROWTH_LIMIT, mib
    assert rss[RUNS] - rss[middle] <= RSS_SECOND_HALF_LIMIT, mib
    if cuda:
        assert cuda[RUNS] - cuda[WARM_UP] <= CUDA_GROWTH_LIMIT, cuda


@requires_cuda
@pytest.mark.gpu
@pytest.mark.real_weights
@pytest.mark.parametrize("decoder", ["torch", "cpp"])
def test_out_of_memory_in_a_batch_is_one_clear_error_and_the_model_stays_usable(decoder):
    """Memory capped just above the model's own: a batch of 32 windows runs out inside the round. The call
    raises one BatchOutOfMemoryError (still a torch.OutOfMemoryError) that suggests a smaller batch_size, and
    the next call on the same model gives the usual result."""
    require("tiny.en")
    model = fast_model("tiny.en", "cuda")
    audio = load_audio(CLIP)
    expected = fastwhisper.transcribe(model, audio, decoder=decoder)
    batch = [np.tile(audio, 10)] * 32  # 28 s each: 32 windows in one round
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 48 * 2**20) / total)
    try:
        with pytest.raises(BatchOutOfMemoryError, match=r"batch_size=32: try batch_size=16") as info:
            fastwhisper.transcribe_batch(model, batch, batch_size=32, decoder=decoder)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert isinstance(info.value, torch.OutOfMemoryError)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    again = fastwhisper.transcribe(model, audio, decoder=decoder)
    assert_same_result(again, expected)
    [first, *_] = fastwhisper.transcribe_batch(model, batch[:2], batch_size=2, decoder=decoder)
    assert isinstance(first, dict) and first["text"].strip()


@requires_cuda
@pytest.mark.gpu
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
def test_torch_decoder_calls_on_cuda_keep_resident_memory_flat():
    """60 torch-decoder decode calls on CUDA (random tiny.en weights): resident memory flat after the warm-up.
    The torch decoder's attention leaves per-thread state on CUDA that a thread's end does not give back, so
    this holds only while every call runs on the engine's one thread."""
    model = random_model(device="cuda")
    features = random_audio_features(model)
    for _ in range(10):
        fastwhisper.decode(model, features, decoder="torch", language="en", sample_len=8)
    before = rss_bytes()
    for _ in range(60):
        fastwhisper.decode(model, features, decoder="torch", language="en", sample_len=8)
    grown = (rss_bytes() - before) / 2**20
    assert grown <= 16, f"resident memory grew {grown:.0f} MiB over 60 calls"


def test_describe_failure_words_an_out_of_memory_error():
    """The wording the engine fails a job with (engine/errors.py), on the CPU: an out-of-memory error becomes
    one error naming the batch_size to try; any other error goes through unchanged."""
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nmore")
    error = describe_failure(oom, 8)
    assert isinstance(error, BatchOutOfMemoryError) and isinstance(error, torch.OutOfMemoryError)
    assert isinstance(error, fastwhisper.FastWhisperError) and error.__cause__ is oom
    assert "batch_size=8: try batch_size=4" in str(error) and "Tried to allocate 2.00 GiB" in str(error)
    assert "\n" not in str(error)
    assert "batch_size=1: try a GPU with more free memory" in str(describe_failure(oom, 1))
    assert describe_failure(error, 8) is error
    other = ValueError("bad option")
    assert describe_failure(other, 8) is other
