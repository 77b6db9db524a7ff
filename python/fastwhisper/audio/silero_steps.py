"""Silero VAD's recurrent model stepped in lock step over a batch of audio streams.

Silero's TorchScript wrapper (the model fastwhisper.audio.vad.load_vad_model returns) keeps, between calls, the
LSTM state and the last CONTEXT samples of the window it read, and runs its inner model on [those samples,
the new window]. Here the inner model is called directly: the inputs of every step are built ahead (each
stream's window with the CONTEXT samples before it; zeros at the first step, as after reset_states) and the
state is passed from step to step, so the same operations run on the same values as through the wrapper.

On CUDA the steps after the first run as CUDA graphs of GRAPH_STEPS steps: a step is a few dozen small
kernels, so launching them one by one, not the GPU, sets the pace of an eager pass (about 1 ms a step, and a
pass is a few hundred steps). A graph is captured once per (stream count, device) and kept for the next
calls (the last GRAPH_CACHE of them); if capturing fails, the pass runs eagerly with a warning.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Tuple

import torch

__all__ = ["step_inputs", "run_steps"]

CONTEXT = 64  # samples before each 512-sample window that Silero's model reads with it (at 16 kHz)
GRAPH_STEPS = 16  # steps per CUDA graph replay
GRAPH_CACHE = 4  # captured graphs kept, by (stream count, device)

_graphs: "OrderedDict[Tuple, object]" = OrderedDict()  # (id(inner), streams, device) -> _StepGraph or None


def step_inputs(windows: torch.Tensor, starts: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """The model's input at steps first .. first + count - 1 of every stream.
      windows: [W, WINDOW] float32, the audio cut into windows; every index starts + step must exist
      starts:  [B] int64, each stream's first window
    Returns [count, B, CONTEXT + WINDOW]: each stream's window at that step, after the CONTEXT samples that end
    the window before it (zeros at step 0)."""
    index = starts[None, :] + torch.arange(first, first + count, device=windows.device)[:, None]  # [count, B]
    before = windows[(index - 1).clamp(min=0), -CONTEXT:]  # [count, B, CONTEXT]
    if first == 0:
        before[0] = 0
    return torch.cat([before, windows[index]], dim=-1)


def run_steps(model, windows: torch.Tensor, starts: torch.Tensor, steps: int) -> torch.Tensor:
    """Speech probabilities [B, steps]: Silero's wrapper `model` stepped `steps` times over the B streams whose
    windows begin at windows[starts] (see step_inputs), from a reset state. The caller holds the model's lock."""
    inner = model._model  # the 16 kHz model: (input [B, CONTEXT + WINDOW], state) -> (prob [B, 1], state)
    out = torch.empty(len(starts), steps, device=windows.device)
    # step 0 as the wrapper runs it after reset_states: an empty state means zeros
    prob, state = inner(step_inputs(windows, starts, 0, 1)[0], torch.zeros(0))
    out[:, 0] = prob[:, 0]
    graph = _graph(inner, state) if windows.is_cuda and steps > 1 else None
    if graph is not None:
        graph.state.copy_(state)
        for first in range(1, steps, GRAPH_STEPS):
            count = min(GRAPH_STEPS, steps - first)
            graph.inputs[:count] = step_inputs(windows, starts, first, count)
            graph.graph.replay()
            out[:, first:first + count] = graph.probs[:count].t()
        return out
    for step in range(1, steps):
        prob, state = inner(step_inputs(windows, starts, step, 1)[0], state)
        out[:, step] = prob[:, 0]
    return out


class _StepGraph:
    """GRAPH_STEPS steps of `inner` captured as one CUDA graph over static inputs [GRAPH_STEPS, B, CONTEXT +
    WINDOW], state [2, B, hidden] (carried over by the graph itself) and probabilities [GRAPH_STEPS, B]."""

    def __init__(self, inner, state: torch.Tensor):
        self.inner = inner
        streams = state.shape[1]
        self.inputs = torch.zeros(GRAPH_STEPS, streams, CONTEXT + 512, device=state.device)
        self.state = torch.zeros_like(state)
        self.probs = torch.empty(GRAPH_STEPS, streams, device=state.device)
        side = torch.cuda.Stream(state.device)
        side.wait_stream(torch.cuda.current_stream(state.device))
        # TorchScript's optimizer off: it would re-plan (and compile fused kernels) on some later call, maybe
        # while the stream captures
        with torch.jit.optimized_execution(False):
            with torch.cuda.stream(side):  # warm-up runs off the capturing stream, as torch.cuda.graphs advises
                for _ in range(2):
                    self._block()
            torch.cuda.current_stream(state.device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._block()

    def _block(self) -> None:
        state = self.state
        for i in range(GRAPH_STEPS):
            prob, state = self.inner(self.inputs[i], state)
            self.probs[i] = prob[:, 0]
        self.state.copy_(state)


def _graph(inner, state: torch.Tensor):
    """The captured graph for this model, stream count and device, or None where capturing failed."""
    key = (id(inner), state.shape[1], str(state.device))
    if key in _graphs:
        _graphs.move_to_end(key)
        return _graphs[key]
    try:
        graph = _StepGraph(inner, state)
    except Exception as exc:  # capture refused (a driver or allocator limit): the eager steps give the same result
        warnings.warn(f"fastwhisper: capturing Silero VAD's steps as a CUDA graph failed ({exc}); "
                      "the VAD pass runs eagerly", RuntimeWarning)
        graph = None
    _graphs[key] = graph
    while len(_graphs) > GRAPH_CACHE:
        _graphs.popitem(last=False)
    return graph
