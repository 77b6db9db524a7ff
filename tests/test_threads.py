"""Several threads transcribing with one model at once each get what openai-whisper's transcribe() gives for
their audio alone (real tiny.en weights, fp32, both decoders, on the CPU and on the GPU).

Every call goes to the model's engine, whose one scheduler thread runs the model; the threads' windows are
encoded and decoded together. Before the engine, threads on one model broke whisper's kv-cache hooks, one
thread removed another's patched model.decode, and some got another thread's transcript."""

import gc
import threading
import time

import numpy as np
import pytest
from whisper.transcribe import transcribe as whisper_transcribe

import fastwhisper
from fastwhisper.engine import fallback, job, scheduler
from fastwhisper.engine.scheduler import engine_for
from conftest import DEVICES, assert_same_result, random_audio_features, random_model
from real_models import SAMPLES_DIR, fast_model, require, samples

ENGLISH = sorted((s for s in samples() if s.get("language", "en") == "en" and s["duration_s"] < 40),
                 key=lambda s: s["duration_s"])
PATHS = [str(SAMPLES_DIR / s["file"]) for s in ENGLISH[:4]]
THREADS = 4


def run_threads(calls):
    """Run each call in its own thread, all started together; their results (or exceptions) in order."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def worker(i):
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported by the test, not swallowed
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a transcription thread hung"
    return results


OPTIONS = dict(fp16=False, language="en")


def tiny_and_references(device="cpu"):
    """tiny.en on `device`, and openai-whisper's own transcribe() of each sample with it."""
    require("tiny.en")
    model = fast_model("tiny.en", device=device)
    return model, [whisper_transcribe(model, fastwhisper.load_audio(p), **OPTIONS) for p in PATHS]


@pytest.mark.real_weights
@pytest.mark.parametrize("device", DEVICES)
def test_four_threads_on_one_model_get_their_single_caller_transcripts(device):
    assert len(PATHS) == THREADS, "four short English samples are bundled"
    model, references = tiny_and_references(device)
    assert len({r["text"] for r in references}) == THREADS, "the samples differ, so a mix-up shows"
    for decoder in ("torch", "cpp"):
        results = run_threads([lambda p=p: model.transcribe(p, decoder=decoder, **OPTIONS) for p in PATHS])
        for path, ours, theirs in zip(PATHS, results, references):
            assert not isinstance(ours, Exception), f"{decoder}, {path}: {ours!r}"
            assert_same_result(ours, theirs)


@pytest.mark.real_weights
def test_threads_mixing_transcribe_batch_transcribe_and_decode():
    model, references = tiny_and_references()
    batch01, one2, one3, batch23 = run_threads([
        lambda: model.transcribe_batch(PATHS[:2], batch_size=2, decoder="cpp", **OPTIONS),
        lambda: fastwhisper.transcribe(model, PATHS[2], decoder="torch", **OPTIONS),
        lambda: model.transcribe(PATHS[3], decoder="cpp", **OPTIONS),
        lambda: model.transcribe_batch(PATHS[2:], batch_size=1, decoder="torch", **OPTIONS),
    ])
    for result in (batch01, one2, one3, batch23):
        assert not isinstance(result, Exception), repr(result)
    for ours, theirs in zip(batch01 + [one2, one3] + batch23, references[:2] + references[2:] + references[2:]):
        assert_same_result(ours, theirs)


@pytest.mark.real_weights
def test_a_call_whose_decode_fails_fails_alone_and_the_model_stays_usable(monkeypatch):
    model, references = tiny_and_references()
    decode = fallback.decode

    def failing_for_beams(model, features, options, decoder):  # a fault inside the engine's round
        if options.beam_size == 2:
            raise RuntimeError("injected decode failure")
        return decode(model, features, options, decoder=decoder)

    monkeypatch.setattr(fallback, "decode", failing_for_beams)
    good, bad = run_threads([lambda: model.transcribe(PATHS[0], decoder="cpp", **OPTIONS),
                             lambda: model.transcribe(PATHS[1], decoder="cpp", beam_size=2, **OPTIONS)])
    assert isinstance(bad, RuntimeError) and "injected" in str(bad)
    assert_same_result(good, references[0])
    assert_same_result(model.transcribe(PATHS[1], decoder="torch", **OPTIONS), references[1])


def test_the_engine_keeps_one_thread_across_calls_and_it_ends_with_the_model():
    """Calls one after another run on the same scheduler thread (a thread per call would leave per-thread
    state behind each time), and the thread ends once the model is collected."""
    model = random_model()
    engine = engine_for(model)
    first = engine.call(threading.current_thread)
    fastwhisper.decode(model, random_audio_features(model), fp16=False, language="en", sample_len=2)
    time.sleep(3 * scheduler.IDLE_CHECK_S)  # idle between calls
    assert engine.call(threading.current_thread) is first
    assert first.name == "fastwhisper-engine" and first is not threading.current_thread()
    del model, engine
    gc.collect()
    first.join(10 * scheduler.IDLE_CHECK_S)
    assert not first.is_alive()


@pytest.mark.real_weights
def test_jobs_waiting_for_the_engine_share_its_next_round():
    """Four calls submitted while the engine is busy are encoded and decoded in one round: their four windows
    take one round, and each still gets its single-caller transcript."""
    model, references = tiny_and_references()
    engine, busy, release = engine_for(model), threading.Event(), threading.Event()
    blocker = threading.Thread(target=engine.call, args=(lambda: (busy.set(), release.wait(60)),))
    blocker.start()
    assert busy.wait(60)
    before = fastwhisper.engine.stats(model)
    calls = [fastwhisper.engine.submit(model, [p], decoder="cpp", **OPTIONS) for p in PATHS]
    release.set()
    results = [next(iter(c.results()))[1] for c in calls]
    blocker.join(60)
    after = fastwhisper.engine.stats(model)
    assert after["windows"] - before["windows"] == THREADS
    assert after["rounds"] - before["rounds"] == 1
    for ours, theirs in zip(results, references):
        assert_same_result(ours, theirs)


def test_a_jobs_audios_are_loaded_on_loader_threads_before_their_round(monkeypatch):
    """The log-mel of a job's next audios is computed by the loader threads from the job's submission on (enough
    for its free places and LOOKAHEAD more), not by the scheduler thread between rounds."""
    loads = []
    real_load = job.load_audio

    def recording_load(source):
        loads.append(threading.current_thread().name)
        return real_load(source)

    monkeypatch.setattr(job, "load_audio", recording_load)
    model = random_model()
    engine, busy, release = engine_for(model), threading.Event(), threading.Event()
    blocker = threading.Thread(target=engine.call, args=(lambda: (busy.set(), release.wait(60)),))
    blocker.start()
    try:
        assert busy.wait(60)
        audios = [np.random.default_rng(i).normal(0, 0.1, 16000).astype(np.float32) for i in range(5)]
        call = fastwhisper.engine.submit(model, audios, batch_size=1, fp16=False, language="en", temperature=0.0,
                                         condition_on_previous_text=False, without_timestamps=True)
        deadline = time.monotonic() + 30
        while len(loads) < 1 + job.LOOKAHEAD and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(loads) == 1 + job.LOOKAHEAD  # while the engine is busy: one place, then LOOKAHEAD ahead
    finally:
        release.set()
        blocker.join(60)
    results = dict(call.results())
    assert sorted(results) == list(range(5)) and all(isinstance(r, dict) for r in results.values())
    assert len(loads) == 5 and all(name.startswith("fastwhisper-loader") for name in loads), loads
