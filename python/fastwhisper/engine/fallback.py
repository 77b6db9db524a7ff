"""Decoding a round's windows with whisper's temperature fallback: one decode call per temperature and per set
of identical options, retrying only the windows that fail.

whisper.transcribe's `decode_with_fallback` decodes one window at temperature 0, and again at each next
temperature while the result is too repetitive or too improbable. Here the windows of every live stream go
through that together: at each attempt the windows still to decode are grouped by their decoder and their
DecodingOptions (which differ per stream in the prompt, i.e. the previous text, the language, the call's
options) and each group is decoded in one call on its stacked audio features. Windows with different prompts
are never decoded together: whisper's decoder has no padding mask, and prompts of different lengths would put
the first sampled token at different positions.

Sampling (temperature > 0) draws from torch's default generator. To give each stream the samples that
`transcribe()` of that audio alone would draw, every stream has a generator state of its own, starting from
the default generator's state when its call was submitted; its sampling windows are decoded one at a time
with that state swapped in (the default generator is left as it was).
"""

import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Hashable, List, Sequence

import torch
from whisper.decoding import DecodingResult

from ..decoder import decode
from .options import TranscribeOptions, decoding_options, needs_fallback, options_key

# Held while the default generators hold a stream's state (a sampled decode) and while a call captures the
# state it starts from, so that no caller captures a state that is another stream's.
RNG_LOCK = threading.Lock()


class StreamGenerators:
    """A default-generator state per stream of one call (CPU, plus the model's CUDA device if it has one)."""

    def __init__(self, device: torch.device):
        self.cuda = device if device.type == "cuda" else None
        with RNG_LOCK:
            self.initial = self._get()
        self.states: Dict[Hashable, tuple] = {}

    def _get(self) -> tuple:
        return torch.get_rng_state(), (torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None)

    def _set(self, state: tuple) -> None:
        torch.set_rng_state(state[0])
        if self.cuda is not None:
            torch.cuda.set_rng_state(state[1], self.cuda)

    @contextmanager
    def of(self, key: Hashable):
        """Within: the default generator(s) in stream `key`'s state; after: as before, `key`'s state kept."""
        with RNG_LOCK:
            saved = self._get()
            self._set(self.states.get(key, self.initial))
            try:
                yield
            finally:
                self.states[key] = self._get()
                self._set(saved)


@dataclass
class Row:
    """One window to decode: its encoded features' index, its DecodingOptions fields, and whose it is."""

    feature: int  # index into the round's features
    options: dict  # DecodingOptions fields without the temperature
    settings: TranscribeOptions  # the call's thresholds and temperatures
    decoder: str  # "torch" | "cpp"
    generators: StreamGenerators  # the call's generator states
    key: Hashable  # the stream within its call (for its generator state)
    ahead: bool = False  # decoded ahead of its stream's turn: first temperature only


class DecodeFailure:
    """A decode call failed: every window of the call gets this in place of a result."""

    def __init__(self, error: BaseException):
        self.error = error


def decode_with_fallback(model, features: torch.Tensor, rows: Sequence[Row], max_rows: int) -> List[object]:
    """For each row: the DecodingResult that whisper's decode_with_fallback returns for that window alone; None
    for a window ahead whose result would need another temperature (sampling draws from the stream's
    generator, which must see the windows in their order); or a DecodeFailure when its decode call raised
    (only the rows of that call fail). Calls hold at most `max_rows` windows."""
    results: List[object] = [None] * len(rows)
    todo = list(range(len(rows)))
    attempt = 0
    while todo:
        todo = [i for i in todo if attempt < len(rows[i].settings.temperatures)]
        options = {i: decoding_options(rows[i].options, rows[i].settings.temperatures[attempt]) for i in todo}
        groups = defaultdict(list)
        for i in todo:
            if options[i].temperature > 0:  # sampling: each window alone, with its stream's generator
                groups[("sample", i)].append(i)
            else:
                groups[(rows[i].decoder, options_key(options[i]))].append(i)
        for (kind, _), members in groups.items():
            for start in range(0, len(members), max_rows):
                chunk = members[start:start + max_rows]
                _decode_rows(model, features, rows, options[chunk[0]], chunk, results, kind == "sample")
        todo = [i for i in todo if isinstance(results[i], DecodingResult)
                and needs_fallback(results[i], rows[i].settings)]
        for i in todo:
            if rows[i].ahead:
                results[i] = None
        todo = [i for i in todo if not rows[i].ahead]
        attempt += 1
    return results


def _decode_rows(model, features, rows, options, members, results, sample: bool) -> None:
    """Decode rows `members` (identical options) in one call; their results, or a DecodeFailure each."""
    index = [rows[i].feature for i in members]
    batch = features[index] if len(index) < len(features) else features
    try:
        if sample:
            row = rows[members[0]]
            with row.generators.of(row.key):
                decoded = decode(model, batch, options, decoder=row.decoder)
        else:
            decoded = decode(model, batch, options, decoder=rows[members[0]].decoder)
    except Exception as exc:  # this call's windows fail; the other calls of the round go on
        failure = DecodeFailure(exc)
        for i in members:
            results[i] = failure
        return
    for i, result in zip(members, decoded):
        results[i] = result

