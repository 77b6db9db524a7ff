"""The engine's batch filling (scheduler.py, `set_batch_wait`): after a round in which a job ended, a round that
would start half full waits for that caller's next job, so callers that send one job after another share rounds
instead of taking turns."""

import threading
import time

import numpy as np
import pytest
import torch

from fastwhisper.engine import set_batch_wait, submit
from fastwhisper.engine.scheduler import engine_for
from conftest import random_model

OPTIONS = dict(decoder="cpp", language="en", fp16=False, without_timestamps=True, temperature=0.0, sample_len=96)


def _text(transcription):
    [(_, result)] = list(transcription.results())
    assert not isinstance(result, Exception), result
    return result["text"]


@pytest.mark.parametrize("wait_s", [0.0, 8.0])
def test_a_half_full_round_waits_for_the_caller_whose_job_just_ended(wait_s):
    torch.set_num_threads(1)
    model = random_model(seed=4)
    audio = np.random.default_rng(1).standard_normal(16000 * 10).astype(np.float32) * 0.1
    engine = engine_for(model)
    set_batch_wait(model, wait_s)
    first = submit(model, [audio], batch_size=2, **OPTIONS)
    deadline = time.monotonic() + 60
    while not engine._round_jobs and time.monotonic() < deadline:  # the first job's round has begun
        time.sleep(0.005)
    rounds_before = engine.rounds
    other = submit(model, [audio], batch_size=2, **OPTIONS)  # arrives while that round decodes
    results = {}
    waiter = threading.Thread(target=lambda: results.setdefault("other", _text(other)))
    waiter.start()
    first_text = _text(first)
    time.sleep(0.5)  # the caller takes a while to send its next job
    second = submit(model, [audio], batch_size=2, **OPTIONS)
    submitted = time.monotonic()
    while len(engine._round_jobs) < 2 and not second.done and time.monotonic() < submitted + 60:
        time.sleep(0.005)
    started_after = time.monotonic() - submitted  # when a round of both jobs began (never, without the wait)
    second_text = _text(second)
    waiter.join(60)
    assert first_text == second_text == results["other"]
    rounds = engine.rounds - rounds_before
    if wait_s:
        # the first job's result came at the end of its round, and the other job waited for the caller's next
        assert rounds == 2, rounds
        assert started_after < 2, started_after  # the wait ended when the job came, not at its limit
    else:
        assert rounds == 3, rounds  # taking turns: the other job's round, then the caller's next


def test_set_batch_wait_refuses_bad_values():
    model = random_model(seed=4)
    for bad in (-1, 11, "1", True, float("nan")):
        with pytest.raises(ValueError, match="batch wait"):
            set_batch_wait(model, bad)
