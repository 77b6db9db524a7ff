"""Decoding a batch of windows with whisper's temperature fallback: one decode call per temperature and
per set of identical options, retrying only the windows that fail.

whisper.transcribe's `decode_with_fallback` decodes one window at temperature 0, and again at each next
temperature while the result is too repetitive or too improbable. Here the windows of several audios go
through that together: at each temperature the windows still to decode are grouped by their
DecodingOptions (which differ per audio in the prompt, i.e. the previous text, and the language) and each
group is decoded in one call on its stacked audio features. Windows with different prompts are never
decoded together: whisper's decoder has no padding mask, and prompts of different lengths would put the
first sampled token at different positions.

Sampling (temperature > 0) draws from torch's default generator. To give each audio the samples that
`transcribe()` of that audio alone would draw, every audio has a generator state of its own, starting
from the default generator's state when the batch began; its sampling windows are decoded one at a time
with that state swapped in (the default generator is left as it was).
"""

from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import torch
from whisper.decoding import DecodingResult

from .options import TranscribeOptions, decoding_options, needs_fallback, options_key
from ..decoder import decode


class StreamGenerators:
    """A default-generator state per audio (CPU, plus the model's CUDA device if it has one)."""

    def __init__(self, device: torch.device):
        self.cuda = device if device.type == "cuda" else None
        self.initial = self._get()
        self.states: Dict[int, tuple] = {}

    def _get(self) -> tuple:
        return torch.get_rng_state(), (torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None)

    def _set(self, state: tuple) -> None:
        torch.set_rng_state(state[0])
        if self.cuda is not None:
            torch.cuda.set_rng_state(state[1], self.cuda)

    @contextmanager
    def of(self, key: int):
        """Within: the default generator(s) in audio `key`'s state; after: as before, `key`'s state kept."""
        saved = self._get()
        self._set(self.states.get(key, self.initial))
        try:
            yield
        finally:
            self.states[key] = self._get()
            self._set(saved)


def decode_with_fallback(model, features: torch.Tensor, window_options: Sequence[dict], keys: Sequence[int],
                         settings: TranscribeOptions, decoder: str, generators: StreamGenerators,
                         ahead: Optional[Sequence[bool]] = None) -> List[Optional[DecodingResult]]:
    """The DecodingResult of each window: features[i] (encoded) with DecodingOptions fields window_options[i],
    for audio keys[i], as decode_with_fallback would return it for that window alone. ahead[i]: window i is
    decoded ahead of its audio's turn (batch_stream.TranscriptionStream.speculates); it gets the first
    temperature only, and None where that result would need another (sampling draws from the audio's
    generator, which must see the windows in their order)."""
    results: List[Optional[DecodingResult]] = [None] * len(window_options)
    todo = list(range(len(window_options)))
    for temperature in settings.temperatures:
        if not todo:
            break
        options = {i: decoding_options(window_options[i], temperature) for i in todo}
        if temperature > 0:  # sampling: each window alone, with its audio's generator
            for i in todo:
                with generators.of(keys[i]):
                    results[i] = decode(model, features[i:i + 1], options[i], decoder=decoder)[0]
        else:
            groups = defaultdict(list)
            for i in todo:
                groups[options_key(options[i])].append(i)
            for members in groups.values():
                batch = features[members] if len(members) < len(features) else features
                for i, result in zip(members, decode(model, batch, options[members[0]], decoder=decoder)):
                    results[i] = result
        todo = [i for i in todo if needs_fallback(results[i], settings)]
        if ahead is not None:
            for i in todo:
                if ahead[i]:
                    results[i] = None
            todo = [i for i in todo if not ahead[i]]
    return results
