"""CUDA-graph replay of whole-encoder calls: one graph per (batch, n_frames, dtype, device).

A graph is captured on the first call of its shape and replayed afterwards: the input is copied into
the graph's static mel buffer, the graph replays every kernel of the encoder in one launch, and the
caller gets a clone of the static output (the next replay overwrites the static buffer, never the
tensor returned). Captures on one device share one memory pool, which is safe because replays run
one at a time on the caller's stream: not from several threads or streams at once.

The graph reads the weight tensors it was captured with; ``signature`` (the raw weights' pointers
and version counters) tells when they changed, and every graph captured with other weights is then
dropped and captured again.
"""

from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor


class _Captured:
    __slots__ = ("graph", "static_mel", "static_out", "signature", "weights")

    def __init__(self, graph, static_mel: Tensor, static_out: Tensor, signature: tuple, weights: List[Tensor]):
        self.graph = graph
        self.static_mel = static_mel  # [B, n_mels, n_frames]: the graph's input
        self.static_out = static_out  # [B, n_ctx, n_state]: the graph's output
        self.signature = signature
        self.weights = weights  # keeps the (cast) weights the graph reads alive


class EncoderGraphs:
    """The captured graphs of one encoder (at most ``max_graphs``; the oldest is dropped first)."""

    def __init__(self, max_graphs: int):
        self.max_graphs = max_graphs
        self._graphs: Dict[tuple, _Captured] = {}
        self._pools: Dict[torch.device, tuple] = {}
        self._streams: Dict[torch.device, torch.cuda.Stream] = {}
        self.capture_failed: Optional[str] = None  # set once a capture raised: the encoder then runs eagerly

    def clear(self) -> None:
        self._graphs = {}

    def __len__(self) -> int:
        return len(self._graphs)

    @staticmethod
    def _key(mel: Tensor) -> tuple:
        return (tuple(mel.shape), mel.dtype, mel.device)

    def has(self, mel: Tensor, signature: tuple) -> bool:
        """A graph for mel's shape, dtype and device, captured with the weights `signature` names."""
        captured = self._graphs.get(self._key(mel))
        return captured is not None and captured.signature == signature

    def capture(
        self, mel: Tensor, signature: tuple, weights: List[Tensor], encode: Callable[[Tensor, List[Tensor]], Tensor]
    ) -> bool:
        """Capture encode(mel-shaped input, weights) for mel's shape; False (and capture_failed set) when
        capturing raised. Graphs captured with other weights than `signature` are dropped first."""
        self._graphs = {k: c for k, c in self._graphs.items() if c.signature == signature}
        with torch.cuda.device(mel.device), torch.inference_mode(False), torch.no_grad():
            captured = self._capture(mel, signature, weights, encode)
        if captured is None:
            return False
        key = self._key(mel)
        self._graphs.pop(key, None)
        while len(self._graphs) >= self.max_graphs:
            del self._graphs[next(iter(self._graphs))]
        self._graphs[key] = captured
        return True

    def replay(self, mel: Tensor) -> Tensor:
        """The encoding of mel by the graph captured for its shape (has() must be True): a fresh tensor."""
        captured = self._graphs[self._key(mel)]
        with torch.cuda.device(mel.device), torch.inference_mode(False), torch.no_grad():
            captured.static_mel.copy_(mel)
            captured.graph.replay()
            return captured.static_out.clone()

    def _capture(
        self, mel: Tensor, signature: tuple, weights: List[Tensor], encode: Callable[[Tensor, List[Tensor]], Tensor]
    ) -> Optional[_Captured]:
        device = mel.device
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device)
        pool = self._pools.get(device)
        if pool is None:
            pool = self._pools[device] = torch.cuda.graph_pool_handle()
        static_mel = torch.empty(mel.shape, dtype=mel.dtype, device=device)
        static_mel.copy_(mel)
        # Warm-up outside the graph on the capture stream: lazy initialisation (cuBLASLt algorithm choice,
        # cuDNN plans, the cuBLAS workspace of that stream) happens here, not under capture. An error here
        # is the encoder's own (bad weights, ...): it propagates as from an eager call.
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            encode(static_mel, weights)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
                static_out = encode(static_mel, weights)
        except Exception as exc:  # noqa: BLE001 - any capture failure: fall back to eager calls for good
            self.capture_failed = f"{type(exc).__name__}: {exc}"
            self._graphs = {}
            return None
        return _Captured(graph, static_mel, static_out, signature, weights)
