"""Silero VAD's recurrent steps over a batch of audio streams, on the CPU or as CUDA graphs.

Silero's TorchScript wrapper (`model(x, 16000)`) prepends the last CONTEXT samples of the previous call to each
512-sample window and carries an LSTM state between calls. Driving the inner network (`model._model`) directly
with the same inputs gives the same probabilities, and lets the steps of one pass be replayed as CUDA graphs:
one step is some thirty tiny kernels, so on a GPU the launches, not the arithmetic, set its time.

    probs = run_steps(model, windows, starts, steps)   # [n_streams, steps]

windows [n_windows, 512] holds the padded audio; stream i reads windows starts[i], starts[i] + 1, ... for
`steps` steps, with a zero context before its first window, as the wrapper has after reset_states().
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict

import torch

__all__ = ["CONTEXT", "GRAPH_STEPS", "step_inputs", "run_steps"]

CONTEXT = 64  # samples of the previous window the wrapper prepends at 16 kHz (model._model.context_size_samples)
GRAPH_STEPS = 16  # steps per CUDA graph: a pass of S steps replays S // GRAPH_STEPS graphs, the rest run eagerly
GRAPH_CACHE = 9  # CUDA graphs kept, one per (device, stream bucket): buckets 1, 2, 4 ... 256 fit
_WARMUP_CALLS = 3  # eager calls before a capture: TorchScript's profiling executor settles its kernels in these


def step_inputs(windows: torch.Tensor, starts: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """The inner network's inputs for steps first .. first + count - 1 of every stream.

    windows: [n_windows, 512] float32; starts: [n_streams] int64, each stream's first window.
    Returns [count, n_streams, CONTEXT + 512]: the last CONTEXT samples of the window before (zeros at a
    stream's step 0) followed by the step's window.
    """
    steps = torch.arange(first, first + count, device=windows.device)
    index = starts[None, :] + steps[:, None]  # [count, n_streams]
    current = windows[index]  # [count, n_streams, 512]
    context = windows[(index - 1).clamp_min(0), -CONTEXT:]  # [count, n_streams, CONTEXT]
    context = context * (steps > 0).to(context.dtype)[:, None, None]
    return torch.cat([context, current], dim=2)


class _StepGraph:
    """GRAPH_STEPS recurrent steps of `net` for n_streams streams, captured as one CUDA graph."""

    def __init__(self, net, n_streams: int, device: torch.device):
        self.inputs = torch.zeros(GRAPH_STEPS, n_streams, CONTEXT + 512, device=device)  # [K, B, 576]
        self.state = torch.zeros(2, n_streams, 128, device=device)  # [2, B, 128]: LSTM h and c
        self.outputs = torch.zeros(GRAPH_STEPS, n_streams, device=device)  # [K, B]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_CALLS):
                self._steps(net)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (the engine's scheduler decoding other jobs) may allocate CUDA memory
        # while this thread captures; the default global mode would make their allocations fail.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self._steps(net)

    def _steps(self, net):
        state = self.state
        for k in range(GRAPH_STEPS):
            out, state = net(self.inputs[k], state)
            self.outputs[k].copy_(out[:, 0])
        self.state.copy_(state)

    def reset(self) -> None:
        """The wrapper's state after reset_states(): zeros, for a pass's first replay."""
        self.state.zero_()

    def replay(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [GRAPH_STEPS, B, 576] -> probabilities [GRAPH_STEPS, B] (the graph's own buffer: read it before
        the next replay); the state stays in the graph, carried to the next replay."""
        self.inputs.copy_(inputs)
        self.graph.replay()
        return self.outputs


_graphs: "OrderedDict[tuple, _StepGraph]" = OrderedDict()
_graphs_lock = threading.Lock()
_graph_failed = set()


def _bucket(n_streams: int) -> int:
    """The graph width for n_streams streams: the next power of two, so that audios of many lengths share a
    few graphs (the extra streams read the first windows and are dropped)."""
    return 1 << (n_streams - 1).bit_length()


def _graph_for(net, n_streams: int, device: torch.device):
    """The cached CUDA graph for n_streams streams on device, captured on first use; None when capture fails
    (a warning says why, and the pass runs eagerly)."""
    key = (str(device), n_streams, id(net))
    with _graphs_lock:
        if key in _graph_failed:
            return None
        if key in _graphs:
            _graphs.move_to_end(key)
            return _graphs[key]
        try:
            graph = _StepGraph(net, n_streams, device)
        except RuntimeError as exc:
            _graph_failed.add(key)
            warnings.warn(f"Silero VAD's CUDA graph could not be captured ({exc}); its steps run eagerly",
                          RuntimeWarning, stacklevel=3)
            return None
        _graphs[key] = graph
        while len(_graphs) > GRAPH_CACHE:
            _graphs.popitem(last=False)
        return graph


def run_steps(model, windows: torch.Tensor, starts: torch.Tensor, steps: int) -> torch.Tensor:
    """Silero's speech probability of `steps` consecutive windows of each stream, from a reset state.

    model: the Silero TorchScript wrapper (its inner 16 kHz network is used); windows: [n_windows, 512]
    float32 on the model's device; starts: [n_streams] int64 with starts[i] + steps <= n_windows.
    Returns [n_streams, steps] float32. Call it under torch.inference_mode() and one lock per model.
    """
    net = model._model
    n_streams = starts.numel()
    out = torch.empty(steps, n_streams, device=windows.device)
    state = torch.zeros(0, device=windows.device)  # the wrapper's state after reset_states()
    done = 0
    if windows.is_cuda and steps >= GRAPH_STEPS:
        width = _bucket(n_streams)
        graph = _graph_for(net, width, windows.device)
        if graph is not None:
            padded = torch.cat([starts, starts.new_zeros(width - n_streams)])  # [width]
            graph.reset()
            while done + GRAPH_STEPS <= steps:
                probs = graph.replay(step_inputs(windows, padded, done, GRAPH_STEPS))  # [GRAPH_STEPS, width]
                out[done:done + GRAPH_STEPS] = probs[:, :n_streams]
                done += GRAPH_STEPS
            state = graph.state[:, :n_streams].clone()  # [2, n_streams, 128], for the eager steps left
    while done < steps:  # eagerly, in slices of GRAPH_STEPS so that the inputs stay small
        count = min(GRAPH_STEPS, steps - done)
        inputs = step_inputs(windows, starts, done, count)
        for k in range(count):
            probs, state = net(inputs[k], state)
            out[done + k] = probs[:, 0]
        done += count
    return out.t()
