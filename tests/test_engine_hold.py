"""A round held for returning clients (fastwhisper.engine.set_batch_wait, the server's --batch_wait): clients
that send their next request when their answer comes are decoded in one round instead of taking turns."""

import threading
import time

import numpy as np
import pytest

import fastwhisper
from fastwhisper.engine.scheduler import engine_for
from conftest import random_model

OPTIONS = dict(fp16=False, language="en", temperature=0.0, condition_on_previous_text=False,
               without_timestamps=True, sample_len=3)
AUDIO = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)  # 1 s: one window
LATE_S = 0.2  # the second client comes back this long after its answer


def closed_loop_rounds(batch_wait: float) -> tuple:
    """Two clients whose first requests share a round; client 0 sends its next request as soon as its answer
    comes, client 1 LATE_S later. Returns (rounds, windows) of the engine over the two second requests."""
    model = random_model()
    fastwhisper.engine.set_batch_wait(model, batch_wait)
    engine, busy, release = engine_for(model), threading.Event(), threading.Event()
    blocker = threading.Thread(target=engine.call, args=(lambda: (busy.set(), release.wait(60)),))
    blocker.start()
    assert busy.wait(60)
    first = [fastwhisper.engine.submit(model, [AUDIO], batch_size=4, **OPTIONS) for _ in range(2)]
    before, seconds = {}, []

    def client(i):
        list(first[i].results())
        if i == 0:
            before.update(fastwhisper.engine.stats(model))  # the first round has ended its jobs
        time.sleep(LATE_S * i)
        start = time.monotonic()
        [(_, result)] = list(fastwhisper.engine.submit(model, [AUDIO], batch_size=4, **OPTIONS).results())
        seconds.append(time.monotonic() - start)
        assert isinstance(result, dict), result

    clients = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for c in clients:
        c.start()
    release.set()
    for c in clients:
        c.join(120)
    blocker.join(60)
    after = fastwhisper.engine.stats(model)
    return after["rounds"] - before["rounds"], after["windows"] - before["windows"], after["phase_seconds"]


def test_returning_clients_share_one_round_when_the_round_may_wait():
    rounds, windows, phases = closed_loop_rounds(batch_wait=10.0)
    assert (rounds, windows) == (1, 2)
    assert phases["hold"] >= LATE_S * 0.5  # the round waited for the late client


def test_returning_clients_take_turns_when_rounds_start_at_once():
    rounds, windows, phases = closed_loop_rounds(batch_wait=0.0)
    assert (rounds, windows) == (2, 2)
    assert phases["hold"] == 0.0
    assert phases["decode"] > 0 and phases["encode"] > 0 and phases["prepare"] > 0


@pytest.mark.parametrize("value", [-0.1, 11, float("nan"), True, "0.1"])
def test_batch_wait_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match="batch_wait"):
        fastwhisper.engine.set_batch_wait(random_model(), value)
