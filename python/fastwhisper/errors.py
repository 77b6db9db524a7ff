"""Exceptions fastwhisper raises for bad input, each naming the problem."""


class FastWhisperError(Exception):
    """Base class of fastwhisper's own errors."""


class AudioLoadError(FastWhisperError, ValueError):
    """Audio that is missing, empty, corrupt, in an unsupported format, or needs a missing ffmpeg."""


class ModelLoadError(FastWhisperError, ValueError):
    """A model name that is unknown, or a checkpoint that is missing, truncated or inconsistent."""
