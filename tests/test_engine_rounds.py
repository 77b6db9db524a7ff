"""How the engine splits a round's windows into encoder calls (fastwhisper.engine.scheduler.encoder_call_sizes)."""

import numpy as np
import pytest
import torch

import fastwhisper
from conftest import random_model, requires_cuda
from fastwhisper.engine.scheduler import encoder_call_sizes


@pytest.mark.parametrize("windows,max_rows,powers_of_two,expected", [
    (42, 64, True, [32, 8, 2]),
    (64, 64, True, [64]),
    (70, 64, True, [64, 4, 2]),
    (24, 24, True, [16, 8]),
    (7, 16, True, [4, 2, 1]),
    (1, 16, True, [1]),
    (0, 16, True, []),
    (42, 16, False, [16, 16, 10]),
    (5, 16, False, [5]),
])
def test_encoder_call_sizes(windows, max_rows, powers_of_two, expected):
    assert encoder_call_sizes(windows, max_rows, powers_of_two) == expected


@requires_cuda
@pytest.mark.gpu
def test_a_round_of_seven_windows_encodes_through_graphs_of_four_two_and_one():
    source = random_model(device="cuda")
    with torch.device("cuda"):
        model = fastwhisper.FastWhisper(source.dims)
    model.load_state_dict(source.state_dict())
    model.eval()
    audios = [np.random.default_rng(i).standard_normal(16000 * 5).astype(np.float32) * 0.1 for i in range(7)]
    results = fastwhisper.transcribe_batch(model, audios, batch_size=8, language="en", temperature=0.0,
                                           condition_on_previous_text=False, sample_len=8)
    assert len(results) == 7
    assert sorted(key[0][0] for key in model.encoder._graphs._graphs) == [1, 2, 4]
