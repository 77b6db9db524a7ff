"""The progress bar of one call: a tqdm bar over the mel frames (1/100 s) of its audios."""

import os

import tqdm
from whisper.audio import HOP_LENGTH, SAMPLE_RATE


class Progress:
    """A tqdm bar over the mel frames (1/100 s) of every audio; sizes not known before loading are
    estimated (soundfile's header, an array's length) and corrected when the audio is loaded."""

    def __init__(self, audios: list, disable: bool):
        self.estimates = {i: _estimated_frames(a) for i, a in enumerate(audios)} if not disable else {}
        self.bar = tqdm.tqdm(total=sum(self.estimates.values()), unit="frames", disable=disable)
        self.streams, self.shown = {}, {}

    def close(self) -> None:
        self.bar.close()

    def _retotal(self, index: int, frames: int) -> None:
        if not self.bar.disable:
            self.bar.total += frames - self.estimates.pop(index, 0)
            self.bar.refresh()

    def drop(self, index: int) -> None:
        self._retotal(index, 0)

    def start(self, index: int, stream) -> None:
        self._retotal(index, stream.content_frames)
        self.streams[index], self.shown[index] = stream, 0

    def advance(self, index: int) -> None:
        done = self.streams[index].done_frames
        if done > self.shown[index]:
            self.bar.update(done - self.shown[index])
            self.shown[index] = done

    def finish(self, index: int) -> None:
        stream, shown = self.streams.pop(index), self.shown.pop(index)
        self.bar.update(stream.content_frames - shown)


def _estimated_frames(source) -> int:
    """Mel frames of an audio (samples // 160 at 16 kHz) from its length or its file header; 0 if unknown."""
    try:
        if isinstance(source, (str, os.PathLike)):
            import soundfile

            info = soundfile.info(os.fsdecode(source))
            samples = -(-info.frames * SAMPLE_RATE // info.samplerate)
        else:
            samples = max(source.shape) if source.ndim == 2 else source.shape[0]
        return int(samples) // HOP_LENGTH
    except Exception:  # an unreadable header: the size is learnt when (if) the audio loads
        return 0
