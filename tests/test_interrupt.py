"""Cancelling a call stops the C++ decoding loop between token steps, not after its window.

A random-weights model never emits end-of-text, so one window's decode runs the whole sample_len (224 token
steps, several seconds on the CPU): a cancel that only took effect at the next round would wait for all of it.
"""

import threading
import time

import numpy as np
import pytest
import torch
import whisper

import fastwhisper
from fastwhisper.decoder import _session_for
from fastwhisper.decoder.cpp import decode_cpp
from fastwhisper.engine import submit
from fastwhisper.engine.scheduler import engine_for
from conftest import random_audio_features, random_model

OPTIONS = whisper.DecodingOptions(language="en", fp16=False, without_timestamps=True)


def _timed_decode(model, features, session, outcome):
    start = time.perf_counter()
    try:
        outcome["result"] = decode_cpp(model, features, OPTIONS, session=session)
    except RuntimeError as exc:
        outcome["error"] = exc
    outcome["seconds"] = time.perf_counter() - start


def test_session_interrupt_stops_decode_between_steps_and_clear_lets_the_next_run():
    torch.set_num_threads(1)
    model = random_model()
    features = random_audio_features(model, batch=2)
    session = _session_for(model)
    full = {}
    _timed_decode(model, features, session, full)
    assert len(full["result"][0].tokens) >= 200, "a random model decodes the whole sample_len"

    outcome = {}
    thread = threading.Thread(target=_timed_decode, args=(model, features, session, outcome))
    thread.start()
    time.sleep(full["seconds"] / 4)
    asked = time.perf_counter()
    session.interrupt()
    thread.join(timeout=60)
    stopped_after = time.perf_counter() - asked
    assert "interrupted" in str(outcome.get("error")), outcome
    assert stopped_after < full["seconds"] / 4, (stopped_after, full["seconds"])

    with pytest.raises(RuntimeError, match="interrupted"):  # the request stands until cleared
        decode_cpp(model, features, OPTIONS, session=session)
    session.clear_interrupt()
    again = decode_cpp(model, features, OPTIONS, session=session)
    assert [r.tokens for r in again] == [r.tokens for r in full["result"]]


def test_cancelling_a_call_stops_its_decode_in_flight_and_the_engine_goes_on():
    torch.set_num_threads(1)
    model = random_model(seed=3)
    audio = np.random.default_rng(0).standard_normal(16000 * 20).astype(np.float32) * 0.1
    options = dict(decoder="cpp", language="en", fp16=False, without_timestamps=True, temperature=0.0)
    engine = engine_for(model)

    start = time.perf_counter()
    reference = fastwhisper.transcribe(model, audio, **options)
    window_seconds = time.perf_counter() - start
    assert len(reference["segments"][0]["tokens"]) >= 200, "a random model decodes the whole sample_len"

    transcription = submit(model, [audio], **options)
    deadline = time.monotonic() + 60
    while engine.rounds == 0 and not engine._round_jobs and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(window_seconds / 4)  # inside the window's decode
    asked = time.perf_counter()
    transcription.cancel()
    while not transcription.done and time.perf_counter() - asked < 60:
        time.sleep(0.01)
    stopped_after = time.perf_counter() - asked
    assert transcription.done
    assert stopped_after < window_seconds / 4, (stopped_after, window_seconds)

    # the interrupt does not outlive its round: the next call decodes in full and gets the same text
    assert fastwhisper.transcribe(model, audio, **options)["text"] == reference["text"]


EXIT_WHILE_DECODING = r"""
import sys, time
sys.path.insert(0, {tests!r})
import numpy as np, torch
import fastwhisper
from fastwhisper.engine import submit
from fastwhisper.engine.scheduler import engine_for
from conftest import random_model
torch.set_num_threads(1)
model = random_model(seed=3)
audio = np.random.default_rng(0).standard_normal(16000 * 90).astype(np.float32) * 0.1
engine = engine_for(model)
submit(model, [audio], decoder="cpp", language="en", fp16=False, without_timestamps=True, temperature=0.0)
deadline = time.monotonic() + 60
while not engine._round_jobs and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.5)  # inside the first window's C++ decode, with the GIL released
print("exiting with a decode in flight", flush=True)
"""


def test_the_interpreter_exits_cleanly_with_a_decode_in_flight(tmp_path):
    # The scheduler is a daemon thread. Were it still inside C++ when the interpreter finalizes, it would be
    # killed as it takes back the GIL and the process would abort ("terminate called without an active
    # exception", status 134). At exit the engine cancels its work and its thread ends first.
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "exit_while_decoding.py"
    script.write_text(EXIT_WHILE_DECODING.format(tests=str(Path(__file__).parent)))
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert "exiting with a decode in flight" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "terminate called" not in done.stderr
    assert time.monotonic() - start < 120
