"""The audio encoder: FastAudioEncoder (whisper's AudioEncoder on fastwhisper's ops) and accelerate()."""

from .module import GRAPHS_ENV, PACKED_QKV_ENV, FastAudioEncoder, accelerate

__all__ = ["FastAudioEncoder", "accelerate", "GRAPHS_ENV", "PACKED_QKV_ENV"]
